#!/usr/bin/env python3
"""The CUDA trainer's memory plan and window on the CPU emulation (dev/cpucuda), so they run without a GPU.

  - `train_gpt2cu -plan 1` prints the memory per GPU of a configuration and exits: its total must be
    what the emulated trainer reports it allocated for the same configuration (P=1, P=2 under mpirun
    and -plan_world 2, -sync_each_microstep, -grad_bf16, -z 0), and its parameter, gradient and AdamW
    lines must be the sizes GPT-2's parameter count gives (computed here from the printed config);
  - the nvcc build's `-plan 1` runs on a machine without a GPU (so it makes no CUDA call);
  - bad -plan input stops with one line;
  - the fused GELU matmul: when cuBLASLt has no algorithm for the epilogue (the stand-in's
    CPUCUDA_LT_REFUSE_EPILOGUE=1) the trainer falls back to the plain matmul and the GELU kernel with
    one warning, and trains with the losses of the fused path (within bf16 noise) and exactly those of
    -fuse_gelu 0;
  - the in-place reduce-scatter: P=2 (mpirun) gives the gradients of P=1 at the same P*K*B, also with
    -sync_each_microstep 1 and -z 0.

Cases (--list): built, plan_<config> (one per configuration), nvcc_plan_without_gpu, bad_plan_input,
gelu_fallback, reduce_scatter_<variant>; the losses come from the trainer's key:value log (-log FILE).
"""
import array
import os
import re
import shutil
import subprocess

from harness import BUILD, MPI_ENV, REPO, Skip, Suite, ensure_tinyshakespeare, fixture, logged, run, tail

suite = Suite(__file__)
EMU = os.path.join(REPO, "build", "cpucuda", "train_gpt2cu")
MPIRUN = ["mpirun", "--oversubscribe", "-np", "2"]


@fixture
def emu():
    """make build/cpucuda/train_gpt2cu (up to date, or built now), with its "make" check line."""
    rc, so, se = run(["make", "build/cpucuda/train_gpt2cu"], timeout=900)
    if not suite.check(rc == 0 and os.path.exists(EMU), "make build/cpucuda/train_gpt2cu", tail(se) if rc else "built"):
        raise RuntimeError("build/cpucuda/train_gpt2cu could not be built")
    return EMU


@fixture
def quiet():
    """The flags of a run that writes no checkpoint and evaluates nothing, on tinyshakespeare."""
    return ["-s", "0", "-v", "0", "-i", os.path.join(ensure_tinyshakespeare(), "tiny_shakespeare_train.bin")]


def plan(args, cmd=None, mpi=False):
    """(exit code, {line name: bytes}, total bytes or None, config dict or None, output)"""
    rc, so, se = run((MPIRUN if mpi else []) + (cmd or [emu()]) + ["-plan", "1"] + args, env=MPI_ENV if mpi else None)
    lines = {}
    for m in re.finditer(r"^plan: (.+?)\s+[0-9.]+ MiB\s+(\d+) bytes", so, re.M):
        lines[m.group(1).strip()] = int(m.group(2))
    total = re.search(r"^plan: .*total [0-9.]+ MiB \((\d+) bytes\)", so, re.M)
    return rc, lines, int(total.group(1)) if total else None, model_config(so), so + se


def reported(args, mpi=False):
    """The total bytes of the trainer's memory report for a run of no step (-x 0), or None."""
    rc, so, se = run((MPIRUN if mpi else []) + [emu()] + args + quiet() + ["-x", "0"], env=MPI_ENV if mpi else None)
    m = re.search(r"^memory per GPU: .*total [0-9.]+ MiB \((\d+) bytes\)", so, re.M)
    return (int(m.group(1)) if m and rc == 0 else None), tail(se)


def model_config(text):
    m = re.search(r"^model: L=(\d+) NH=(\d+) C=(\d+) maxT=(\d+) V=(\d+) Vp=(\d+)", text, re.M)
    return dict(zip(["L", "NH", "C", "maxT", "V", "Vp"], map(int, m.groups()))) if m else None


def gpt2_parameters(c):
    """GPT-2's parameter count: wte, wpe, per layer 12C^2 + 13C (qkv, proj, fc, fcproj, 2 LayerNorms), lnf."""
    C, L = c["C"], c["L"]
    return c["Vp"] * C + c["maxT"] * C + L * (12 * C * C + 13 * C) + 2 * C


@suite.case
def built():
    """make build/cpucuda/train_gpt2cu."""
    emu()


# 1. The plan's total equals the emulated trainer's allocation, for the same configuration. The trainer
#    runs under mpirun for P=2; the plan takes P from -plan_world, or from mpirun's world (plan_mpi).
PLAN_CONFIGS = [
    ("plan_P1", "P=1", ["-e", "tiny", "-b", "2", "-t", "64"], False, False),
    ("plan_P2_plan_world", "P=2 (-plan_world 2)", ["-e", "tiny", "-b", "2", "-t", "32"], True, False),
    ("plan_sync_each_microstep_grad_bf16", "-sync_each_microstep 1 -grad_bf16 1",
     ["-e", "tiny", "-b", "1", "-t", "64", "-sync_each_microstep", "1", "-grad_bf16", "1"], False, False),
    ("plan_z0_P2_mpirun", "-z 0, P=2 (plan under mpirun)", ["-e", "tiny", "-b", "2", "-t", "64", "-z", "0"], True, True),
]


def check_plan(name, args, mpi, plan_mpi):
    prc, lines, total, cfg, out = plan(args + (["-plan_world", "2"] if mpi and not plan_mpi else []), mpi=plan_mpi)
    got, err = reported(args, mpi)
    suite.check(prc == 0 and total is not None and got == total, f"-plan total = allocated bytes, {name}",
                f"plan {total}, trainer {got}" if prc == 0 else tail(out))
    if cfg is None:
        suite.check(False, f"-plan sizes from GPT-2's parameter count, {name}", "no model line: " + tail(out))
        return
    P = 2 if mpi else 1
    S = -(-gpt2_parameters(cfg) // P)
    gsize = 2 if "-grad_bf16" in args else 4
    opt = S if "-z" not in args else S * P
    expect = {"parameters": 2 * S * P, "gradients": gsize * S * P, "AdamW m": 4 * opt, "AdamW v": 4 * opt,
              "AdamW master weights": 4 * opt}
    if "-sync_each_microstep" in args:
        expect["gradient shard acc."] = gsize * S
    wrong = {k: (lines.get(k), v) for k, v in expect.items() if lines.get(k) != v}
    suite.check(not wrong, f"-plan sizes from GPT-2's parameter count, {name}",
                f"N={gpt2_parameters(cfg)}, S={S}" if not wrong else f"(plan, expected): {wrong}")


def plan_case(case_name, name, args, mpi, plan_mpi):
    def case():
        check_plan(name, args, mpi, plan_mpi)
    case.__name__ = case.__qualname__ = case_name
    case.__doc__ = f"{name}: the -plan total is the trainer's allocation; its lines are GPT-2's parameter count's sizes."
    return case


for _config in PLAN_CONFIGS:
    suite.case(plan_case(*_config))


def has_gpu():
    return shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@suite.case
def nvcc_plan_without_gpu():
    """The nvcc build's -plan 1 runs on a machine without a GPU (it makes no CUDA call), with the emulated build's total."""
    nvcc_binary = os.path.join(REPO, "train_gpt2cu")
    if not os.path.exists(nvcc_binary):
        raise Skip("./train_gpt2cu is not built (make train_gpt2cu)")
    if has_gpu():
        raise Skip("this machine has a GPU")
    prc, lines, total, cfg, out = plan(["-e", "tiny", "-b", "2", "-t", "64"], [nvcc_binary])
    emu_rc, emu_lines, emu_total, _, _ = plan(["-e", "tiny", "-b", "2", "-t", "64"])
    suite.check(prc == 0 and total is not None and total == emu_total, "the nvcc build's -plan 1 runs without a GPU",
                f"total {total} bytes (emulated build: {emu_total})" if prc == 0 else tail(out))


@suite.case
def bad_plan_input():
    """Bad -plan input: one line naming the flag, exit 1."""
    for name, args, flag in [("-plan_world -1", ["-plan_world", "-1"], "-plan_world"),
                             ("-plan 2", ["-plan", "2"], "-plan"),
                             ("-plan_world 2 without -plan 1", ["-plan_world", "2"], "-plan_world"),
                             ("-e of no file", ["-plan", "1", "-e", os.path.join(BUILD, "no_such_model.bin")], "-e")]:
        rc, so, se = run([emu()] + args)
        lines = [l for l in se.strip().splitlines() if l]
        suite.check(rc == 1 and len(lines) == 1 and flag in lines[0], f"bad input {name} stops with one line", tail(se, 2))


def gelu_run(name, extra, env):
    """3 steps: (exit code, losses from the log, warnings of the refused epilogue, stderr's tail)."""
    log = os.path.join(BUILD, f"emu_gelu_{name}.log")
    if os.path.exists(log):
        os.remove(log)
    rc, so, se = run([emu(), "-e", "tiny", "-b", "2", "-t", "64", "-x", "3", "-log", log] + quiet() + extra, env=env)
    return rc, logged(log, "trl"), se.count("no algorithm for the fused GELU epilogue"), tail(se)


@suite.case
def gelu_fallback():
    """No algorithm for the fused GELU epilogue: one warning, then the losses of the fused path (bf16 noise) and exactly -fuse_gelu 0's."""
    runs = {name: gelu_run(name, extra, env) for name, extra, env in
            [("fused", [], None), ("refused", [], {"CPUCUDA_LT_REFUSE_EPILOGUE": "1"}), ("off", ["-fuse_gelu", "0"], None)]}
    ok = all(r[0] == 0 and len(r[1]) == 3 for r in runs.values())
    suite.check(ok and runs["refused"][2] == 1 and runs["fused"][2] == 0,
                "no algorithm for the GELU epilogue: one warning, and training goes on",
                f"warnings: fused {runs['fused'][2]}, refused {runs['refused'][2]}" if ok else str({k: v[3] for k, v in runs.items()}))
    if not ok:
        return
    diff = max(abs(a - b) for a, b in zip(runs["fused"][1], runs["refused"][1]))
    # bf16 activations: the epilogue and the GELU kernel round the GELU differently (last-bit changes);
    # a missing GELU or bias would move the loss by far more than 1e-3.
    suite.check(diff < 1e-3, "the fallback's losses = the fused path's within bf16 noise (1e-3)",
                f"max |diff| {diff:.2e}: {runs['fused'][1]} vs {runs['refused'][1]}")
    suite.check(runs["off"][1] == runs["refused"][1], "the fallback's losses = -fuse_gelu 0's exactly",
                f"{runs['off'][1]} vs {runs['refused'][1]}")


# 5. In-place reduce-scatter: P=2 gives P=1's gradients (P*K*B fixed), also with -sync_each_microstep and -z 0.
def gradients(path):
    a = array.array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def window():
    return ["-e", "tiny", "-b", "2", "-t", "64", "-x", "1"] + quiet()


@fixture
def p1_gradients():
    """P=1 K=2's gradient dump, the reference of the P=2 K=1 runs, with its check line."""
    ref_path = os.path.join(BUILD, "emu_grads_p1.bin")
    rc, so, se = run([emu()] + window() + ["-k", "2", "-dump_grads", ref_path])
    if not suite.check(rc == 0 and os.path.exists(ref_path), "P=1 K=2 gradient dump", tail(se) if rc else "written"):
        raise RuntimeError("P=1 K=2 run failed")
    return gradients(ref_path)


def check_reduce_scatter(name, extra):
    ref = p1_gradients()
    scale = max(abs(x) for x in ref)
    path = os.path.join(BUILD, "emu_grads_p2.bin")
    if os.path.exists(path):
        os.remove(path)
    rc, so, se = run(MPIRUN + [emu()] + window() + ["-k", "1", "-dump_grads", path] + extra, env=MPI_ENV)
    if rc != 0 or not os.path.exists(path):
        suite.check(False, f"{name} gradients = P=1 K=2's", tail(se))
        return
    got = gradients(path)
    diff = max(abs(a - b) for a, b in zip(ref, got)) if len(got) == len(ref) else float("inf")
    # fp32 sums of the same terms in another order: a few ulps of the largest element
    suite.check(diff <= 1e-6 * scale, f"{name} gradients = P=1 K=2's",
                f"max |diff| {diff:.2e} over {len(ref)} values (largest {scale:.3f})")


def reduce_scatter_case(case_name, name, extra):
    def case():
        check_reduce_scatter(name, extra)
    case.__name__ = case.__qualname__ = case_name
    case.__doc__ = f"In-place reduce-scatter: {name}'s gradients are P=1 K=2's (P*K*B fixed), within 1e-6 of the largest."
    return case


for _args in [("reduce_scatter_P2", "P=2 K=1", []),
              ("reduce_scatter_P2_sync_each_microstep", "P=2 K=1 -sync_each_microstep 1", ["-sync_each_microstep", "1"]),
              ("reduce_scatter_P2_z0", "P=2 K=1 -z 0", ["-z", "0"])]:
    suite.case(reduce_scatter_case(*_args))


if __name__ == "__main__":
    suite.main()
