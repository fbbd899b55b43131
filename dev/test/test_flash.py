#!/usr/bin/env python3
"""Flash attention (llmc/cuda_flash_attention.cuh) on the CPU emulation of the CUDA code (dev/cpucuda):
no GPU needed. Builds what it runs (make build/cpucuda/...), then:
  1. the kernel harness dev/cuda/flash_attention.cu: flash and the materialized attention against one
     fp64 reference (hs 16, 32, 64, 128; T 63, 64, 100, 256), once in the default fiber order and once
     with CPUCUDA_SCHED_SEED=1 (a random one); the harness's own worst err/tol is reported;
  2. train_gpt2cu -e tiny, a few steps with -attn flash and with -attn ref from the same seed, at an odd
     T (63: partial tiles): each step's loss must agree within 0.01 (a loss near 10 has a bf16 spacing
     of 0.0625; the two paths differ only by rounding, by ~1e-3 over 20 steps when measured), the loss
     must fall (by 0.2 in 5 steps; about 0.34 measured), and the two runs must not be the same run (the flag took effect);
  3. -attn with a bad value is refused with one line naming the flag;
  4. dev/bench/cost_model.py --check (its FLOPs against 6 x parameters x tokens, flash attention moving
     far fewer bytes than the materialized one at T=1024).

Cases (--list): built, harness_default_order, harness_random_order, attn_selects, flash_ref_agree,
flash_ref_differ, flash_trains, attn_refused, cost_model; the two training runs are a fixture, their
losses read from the trainer's key:value log (-log FILE).
"""
import os
import re

from harness import BUILD, PYTHON, REPO, Suite, ensure_tinyshakespeare, fixture, logged, run, tail

suite = Suite(__file__)
EMU = os.path.join(REPO, "build", "cpucuda")
HARNESS = os.path.join(EMU, "dev", "cuda", "flash_attention")
TRAINER = os.path.join(EMU, "train_gpt2cu")
STEPS = 5


@fixture
def built_programs():
    """make the emulated flash_attention harness and train_gpt2cu (up to date, or built now), with its check line."""
    rc, so, se = run(["make", os.path.relpath(HARNESS, REPO), os.path.relpath(TRAINER, REPO)], timeout=900)
    if not suite.check(rc == 0, "emulated flash_attention harness and train_gpt2cu built",
                       "make build/cpucuda/..." if rc == 0 else tail(se)):
        raise RuntimeError("make failed")


@suite.case
def built():
    """make build/cpucuda/dev/cuda/flash_attention build/cpucuda/train_gpt2cu."""
    built_programs()


def check_harness(label, env):
    built_programs()
    rc, so, se = run([HARNESS], env=env, timeout=300)
    ratios = [float(x) for x in re.findall(r"worst err/tol ([0-9.]+)", so)]
    flash = [float(m) for m in re.findall(r"flash (?:out|lse|dqkv)\s+ok\s+max\|err\| \S+ worst err/tol ([0-9.]+)", so)]
    ok = rc == 0 and "flash_attention: ALL OK" in so and " FAIL" not in so and len(flash) == 30
    suite.check(ok, f"flash_attention harness, {label}",
                f"{len(ratios)} validations, worst err/tol {max(ratios) if ratios else float('nan'):.3f} "
                f"(flash: {max(flash) if flash else float('nan'):.3f} over {len(flash)})" if ok else tail(so + se))


@suite.case
def harness_default_order():
    """dev/cuda/flash_attention.cu, every validation (30 of flash), default fiber order."""
    check_harness("default fiber order", None)


@suite.case
def harness_random_order():
    """dev/cuda/flash_attention.cu, every validation, random fiber order (CPUCUDA_SCHED_SEED=1)."""
    check_harness("random fiber order (CPUCUDA_SCHED_SEED=1)", {"CPUCUDA_SCHED_SEED": "1"})


@fixture
def training():
    """train_gpt2cu -e tiny, T=63, 5 steps with -attn flash and with -attn ref: each one's losses and 'attention:' line."""
    built_programs()
    ts = ensure_tinyshakespeare()
    common = ["-e", "tiny", "-i", os.path.join(ts, "tiny_shakespeare_train.bin"), "-j", "", "-tk", os.path.join(ts, "gpt2_tokenizer.bin"),
              "-b", "4", "-t", "63", "-x", str(STEPS), "-l", "2e-3", "-v", "0", "-s", "0"]
    losses, lines = {}, {}
    for attn in ("flash", "ref"):
        log = os.path.join(BUILD, f"flash_attn_{attn}.log")
        if os.path.exists(log):
            os.remove(log)
        rc, so, se = run([TRAINER] + common + ["-attn", attn, "-log", log], timeout=600)
        losses[attn] = logged(log, "trl") if rc == 0 else []
        lines[attn] = next((l for l in so.splitlines() if l.startswith("attention:")), "")
        if rc != 0:
            print(tail(so + se))
    lf, lr = losses["flash"], losses["ref"]
    print("step  loss(-attn flash)  loss(-attn ref)  |diff|")
    for i, (a, b) in enumerate(zip(lf, lr)):
        print(f"{i + 1:4d}  {a:17.6f}  {b:15.6f}  {abs(a - b):.6f}")
    return dict(flash=lf, ref=lr, lines=lines, both=len(lf) == STEPS and len(lr) == STEPS,
                diffs=[abs(a - b) for a, b in zip(lf, lr)])


@suite.case
def attn_selects():
    """train_gpt2cu -attn flash / ref each print the attention they run."""
    r = training()
    suite.check(r["both"] and r["lines"]["flash"].startswith("attention: flash") and r["lines"]["ref"].startswith("attention: materialized"),
                "train_gpt2cu -attn selects the attention", f"'{r['lines']['flash']}' / '{r['lines']['ref']}'")


@suite.case
def flash_ref_agree():
    """Each step's loss of -attn flash within 0.01 of -attn ref's (bf16 spacing near 10 is 0.0625; measured ~1e-3)."""
    r = training()
    diffs = r["diffs"]
    suite.check(r["both"] and max(diffs) <= 0.01, "flash and ref losses agree within 0.01 each step",
                f"max |diff| {max(diffs):.6f} over {len(diffs)} steps" if diffs else "no losses")


@suite.case
def flash_ref_differ():
    """The two runs are not the same run (the flag took effect): some step's losses differ."""
    r = training()
    diffs = r["diffs"]
    suite.check(r["both"] and any(d > 0 for d in diffs), "flash and ref are different runs (not the same kernels twice)",
                f"{sum(d > 0 for d in diffs)} of {len(diffs)} steps differ" if diffs else "no losses")


@suite.case
def flash_trains():
    """With flash attention the loss falls by more than 0.2 in 5 steps (about 0.34 measured)."""
    r = training()
    lf = r["flash"]
    suite.check(r["both"] and lf[-1] < lf[0] - 0.2, "flash attention trains", f"loss {lf[0]:.4f} -> {lf[-1]:.4f}" if lf else "no losses")


@suite.case
def attn_refused():
    """-attn with a bad value is refused with one line naming the flag."""
    built_programs()
    rc, so, se = run([TRAINER, "-attn", "fast"], timeout=60)
    err = (so + se).strip().splitlines()
    suite.check(rc == 1 and len(err) >= 1 and "-attn" in err[-1] and "auto, flash or ref" in err[-1],
                "-attn fast is refused with one line naming the flag", err[-1] if err else f"exit code {rc}")


@suite.case
def cost_model():
    """dev/bench/cost_model.py --check: FLOPs vs 6 x parameters x tokens, flash moving far fewer bytes at T=1024."""
    rc, so, se = run([PYTHON, "dev/bench/cost_model.py", "--check"], timeout=60)
    suite.check(rc == 0 and "FAIL" not in so and so.count("PASS") >= 10, "cost_model.py --check",
                f"{so.count('PASS')} self-checks passed" if rc == 0 else tail(so + se, 3))


if __name__ == "__main__":
    suite.main()
