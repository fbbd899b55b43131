#!/usr/bin/env python3
"""The distributed window under mpirun (issue: exact at any P x K).

On padded SFT data (prompts masked, one variable-length example per row), valid-token counts differ
across ranks and micro-steps. For every split P x K x B of the same 8 rows per window:
  - each window's normalized gradient (dumped with -dump_grads) matches the P=1, K=1 run within
    ||dg||/||g|| <= 1e-5 in every tensor, and matches train_gpt2.py on the full batch within 1e-4;
  - the logged losses and the parameters after 3 steps match;
the same with -sync_each_microstep 1, -z 0 and a K schedule; exactly one reduce-scatter, one scalar
all-reduce and one all-gather per window (K reduce-scatters with -sync_each_microstep); resume with
the same P is bit-identical; bad setups fail with a message on every rank, never a hang.

Tolerances. fp32 sums in a different order differ by a few ulps relative (2^-24 = 6e-8 each); a
reduction over n terms drifts like sqrt(n) ulps, so the gradient's tensors agree to ~1e-6, and 1e-5
leaves a margin while still catching any normalization error (a wrong N is off by >1e-2). Losses
are compared to 2e-6 absolute (loss ~10, fp32 resolution 1e-6). After 3 AdamW steps the whole
parameter vector agrees to ||dp||/||p|| <= 1e-6. Not per tensor: the key bias's exact gradient is
zero (softmax ignores a shift shared by a row's scores), so its computed gradient is rounding noise
that AdamW, dividing by sqrt(v), turns into lr-sized steps of either sign; for that zero-initialized
tensor any two summation orders differ by ~1e-4 of its own tiny norm (printed for information).
Against PyTorch (another implementation of every op), 1e-4, as in test_gpt2.c.
"""
import os
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, PYTHON, Skip, Suite, ensure_synthetic, fixture, fresh_dir, logged, run, tail, worst_tensor_error  # noqa: E402

suite = Suite(__file__)
WORK = os.path.join(BUILD, "mpi")
STEPS, ROWS, T = 3, 8, 32
# The grid: P in {1,2,4}, K in {1,2,4}, P*K*B = 8 rows; P=1 K=1 is the reference itself.
GRID = [(P, K) for P in (1, 2, 4) for K in (1, 2, 4) if ROWS % (P * K) == 0 and (P, K) != (1, 1)]


@fixture
def setup():
    """The work directory, the synthetic shard and the initial model; Skip without mpirun."""
    if shutil.which("mpirun") is None:
        raise Skip("mpirun not found (Debian: apt install openmpi-bin libopenmpi-dev)")
    fresh_dir(WORK)
    train = os.path.join(ensure_synthetic(), "synthetic_train_000000.bin")
    init = os.path.join(WORK, "init.bin")
    rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "5", "--write_checkpoint", init])
    if rc != 0:
        raise RuntimeError(f"initial model from train_gpt2.py: {tail(se, 2)}")
    tensors = formats.parameter_tensors(formats.read_model(init)[0])
    common = ["-e", init, "-i", train, "-j", "", "-pad", "1", "-t", str(T), "-x", str(STEPS), "-s", "0",
              "-l", "1e-3", "-c", "0.1", "-clip", "1.0"]
    return dict(train=train, init=init, tensors=tensors, num_params=sum(n for _, n in tensors), common=common)


def work(name):
    return os.path.join(WORK, name)


def mpirun(P, args, timeout=300):
    cmd = ["mpirun", "-np", str(P), "--oversubscribe", "./train_gpt2"] + args
    return run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1"), timeout=timeout)


def mpmd(args_rank0, args_rank1, timeout=120):
    """Two ranks with their own arguments (`mpirun -np 1 a : -np 1 b`)."""
    cmd = ["mpirun", "--oversubscribe", "-np", "1", "./train_gpt2"] + args_rank0 + [":", "-np", "1", "./train_gpt2"] + args_rank1
    return run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1"), timeout=timeout)


def train_run(name, P, K, B, extra=()):
    """Runs one configuration: dict(losses, counts, grads (windows, params), params, stdout); raises if it fails."""
    s = setup()
    out, dump, log = work(name), work(name + ".grads"), work(name + ".log")
    rc, so, se = mpirun(P, s["common"] + ["-b", str(B), "-o", out, "-n", str(STEPS), "-dump_grads", dump, "-log", log]
                        + (["-k", str(K)] if K else []) + list(extra))
    if rc != 0:
        raise RuntimeError(f"{name} runs: {tail(se)}")
    grads = np.fromfile(dump, dtype=np.float32).reshape(-1, s["num_params"])
    _, params = formats.read_model(os.path.join(out, f"model_{STEPS:08d}.bin"))
    return dict(losses=logged(log, "trl"), counts=logged(log, "valid"), grads=grads, params=params, stdout=so, log=log)


def run_fixture(name, P, K, B, extra=()):
    """A train_run computed once however many cases compare against it."""
    get = fixture(lambda: train_run(name, P, K, B, extra))
    get.__name__ = name
    return get


def grid_name(P, K):
    return f"P{P}_K{K}_B{ROWS // (P * K)}"


reference = run_fixture("P1_K1_B8", 1, 1, 8)
GRID_RUNS = {(P, K): run_fixture(grid_name(P, K), P, K, ROWS // (P * K)) for P, K in GRID}


def pytorch_losses(path):
    """The losses of train_gpt2.py --log_losses ('step loss N' lines)."""
    return [float(line.split()[1]) for line in open(path) if line.strip()]


@fixture
def pytorch():
    """train_gpt2.py on the full batch of 8 rows: dict(grads, losses)."""
    s = setup()
    dump, losses = work("pytorch.grads"), work("pytorch.losses")
    rc, so, se = run([PYTHON, "train_gpt2.py", "--init_checkpoint", s["init"], "--input_bin", s["train"], "--pad", "1",
                      "--T", str(T), "--B", str(ROWS), "--K", "1", "--num_iterations", str(STEPS), "--learning_rate", "1e-3",
                      "--weight_decay", "0.1", "--grad_clip", "1.0", "--dump_grads", dump, "--log_losses", losses])
    if rc != 0:
        raise RuntimeError(f"train_gpt2.py on the full batch: {tail(se, 2)}")
    return dict(grads=np.fromfile(dump, dtype=np.float32).reshape(-1, s["num_params"]), losses=pytorch_losses(losses))


def compare(name, run_a, ref, grad_tol=1e-5, loss_tol=2e-6, param_tol=1e-6):
    tensors = setup()["tensors"]
    g_ok = run_a["grads"].shape == ref["grads"].shape
    g_err = max((worst_tensor_error(a, b, tensors) for a, b in zip(run_a["grads"], ref["grads"])), default=(9.9, "?"))
    suite.check(g_ok and g_err[0] <= grad_tol, f"{name}: gradient of every window",
                f"worst ||dg||/||g|| = {g_err[0]:.2e} in {g_err[1]} (tolerance {grad_tol:.0e}), {len(run_a['grads'])} windows")
    l_err = max(abs(a - b) for a, b in zip(run_a["losses"], ref["losses"])) if run_a["losses"] else 9.9
    suite.check(len(run_a["losses"]) == len(ref["losses"]) == STEPS and l_err <= loss_tol, f"{name}: losses",
                f"max |dloss| = {l_err:.1e} (tolerance {loss_tol:.0e}): {run_a['losses']}")
    a, b = run_a["params"].astype(np.float64), ref["params"].astype(np.float64)
    p_err = np.linalg.norm(a - b) / np.linalg.norm(b)
    worst = worst_tensor_error(run_a["params"], ref["params"], tensors)
    suite.check(p_err <= param_tol, f"{name}: parameters after {STEPS} steps",
                f"||dp||/||p|| = {p_err:.2e} (tolerance {param_tol:.0e}); largest per tensor {worst[0]:.1e} in {worst[1]}")


def compare_pytorch(name, run_a):
    """run_a's gradients and losses against train_gpt2.py's on the full batch, to 1e-4."""
    py = pytorch()
    err = max(worst_tensor_error(a, b, setup()["tensors"])[0] for a, b in zip(run_a["grads"], py["grads"]))
    suite.check(len(run_a["grads"]) == len(py["grads"]) and err <= 1e-4, f"{name} gradient vs PyTorch",
                f"worst ||dg||/||g|| = {err:.2e} (tolerance 1e-4)")
    l_err = max(abs(a - b) for a, b in zip(run_a["losses"], py["losses"])) if py["losses"] else 9.9
    suite.check(len(py["losses"]) == STEPS and l_err <= 1e-4, f"{name} losses vs PyTorch",
                f"max |dloss| = {l_err:.1e} (tolerance 1e-4): {py['losses']}")


def communication_line(r):
    lines = [l for l in r["stdout"].splitlines() if l.startswith("communication in")]
    return lines[0] if len(lines) == 1 else ""


@suite.case
def initial_model():
    """train_gpt2.py writes the initial model (tiny, seed 5) that every run starts from."""
    suite.check(True, "initial model from train_gpt2.py", f"{setup()['num_params']} parameters")


@suite.case
def reference_vs_pytorch():
    """The P=1 K=1 reference against train_gpt2.py on the same full batch (1e-4)."""
    ref = reference()
    print(f"     valid targets per window of {ROWS} rows x T={T}: {[int(n) for n in ref['counts']]}")
    pytorch()
    suite.check(True, "train_gpt2.py on the full batch", "ran")
    compare_pytorch("P=1 K=1", ref)


def grid_case(P, K):
    B = ROWS // (P * K)

    def case():
        r = GRID_RUNS[(P, K)]()
        compare(f"P={P} K={K} B={B}", r, reference())
        if (P, K) == (2, 2):
            compare_pytorch(f"P={P} K={K} B={B}", r)
    case.__name__ = f"grid_P{P}_K{K}"
    case.__doc__ = f"P={P} ranks x K={K} micro-steps x B={B} rows against P=1 K=1" + (" and PyTorch" if (P, K) == (2, 2) else "")
    return suite.case(case)


for P, K in GRID:
    grid_case(P, K)


@suite.case
def collectives():
    """One reduce-scatter, one scalar all-reduce and one all-gather per window (P=2 K=2, and K=4 at P=1, 2)."""
    for P, K in [(2, 2), (1, 4), (2, 4)]:
        line = communication_line(GRID_RUNS[(P, K)]())
        ok = f"reduce-scatter {STEPS} call(s)" in line and f"all-gather {STEPS} call(s)" in line \
            and f"scalar all-reduce {STEPS} call(s)" in line and "all-reduce " not in line.replace("scalar all-reduce", "")
        suite.check(ok, f"P={P} K={K}: one reduce-scatter, one scalar all-reduce, one all-gather per window",
                    line or "no (or more than one) communication line")


def variant_line(name, extra, title):
    """A P=2 K=2 B=2 run with `extra` flags, compared with the reference; its communication line."""
    r = train_run(name, 2, 2, 2, extra)
    compare(title, r, reference())
    return communication_line(r)


@suite.case
def sync_each_microstep():
    """-sync_each_microstep 1 at P=2 K=2: the same window, K reduce-scatters per window."""
    line = variant_line("P2_K2_B2_sync", ["-sync_each_microstep", "1"], "P=2 K=2 -sync_each_microstep 1")
    suite.check(f"reduce-scatter {2 * STEPS} call(s)" in line, "-sync_each_microstep: K reduce-scatters per window",
                line or "no line")


@suite.case
def z0_all_reduce():
    """-z 0 at P=2 K=2 (all-reduce, replicated AdamW): the same window, no reduce-scatter."""
    line = variant_line("P2_K2_B2_z0", ["-z", "0"], "P=2 K=2 -z 0 (all-reduce, replicated AdamW)")
    suite.check(f"all-reduce {STEPS} call(s)" in line and "reduce-scatter" not in line,
                "-z 0: one gradient all-reduce per window, no reduce-scatter", line or "no line")


@suite.case
def shuffle():
    """-shuffle 1 at P=2 K=2 against P=1 K=1 with -shuffle 1, and the order changes the run."""
    # Every rank draws the same row order, so the split still does not matter; and the order does
    # change the run (else this comparison would prove nothing about shuffling).
    shuf_ref = train_run("P1_K1_B8_shuffle", 1, 1, 8, ["-shuffle", "1"])
    shuf = train_run("P2_K2_B2_shuffle", 2, 2, 2, ["-shuffle", "1"])
    compare("P=2 K=2 -shuffle 1 vs P=1 K=1 -shuffle 1", shuf, shuf_ref)
    ref = reference()
    suite.check(shuf_ref["losses"] != ref["losses"], "-shuffle 1 changes the rows trained on",
                f"losses {shuf_ref['losses']} vs {ref['losses']} in file order")


@suite.case
def k_schedule():
    """A K schedule of windows of 8, 4 and 2 rows at P=2 against P=1 with the same schedule."""
    # One rank taking each window in one micro-step would need B to change, so the reference is P=1
    # with the same schedule of rows (K=4,2,1 at B=2).
    sched_ref = train_run("P1_sched", 1, None, 2, ["-k_schedule", "0:4,1:2,2:1"])
    sched = train_run("P2_sched", 2, None, 1, ["-k_schedule", "0:4,1:2,2:1"])
    compare("P=2 K schedule 4,2,1 vs P=1", sched, sched_ref)
    check_summary_rate("P=1 B=2", sched_ref, 1, 2)
    check_summary_rate("P=2 B=1", sched, 2, 1)


def check_summary_rate(name, r, P, B):
    """The summary's tok_per_s is the tokens of the timed windows (all but the first, from the log's k:
    and P*B*T) over their time (mean_ms, which the log's ms: values agree with), whatever K each had."""
    m = re.search(r"summary: mean_ms=([0-9.]+) tok_per_s=([0-9]+)", r["stdout"])
    ks, ms = logged(r["log"], "k"), logged(r["log"], "ms")
    if m is None or len(ks) != STEPS or len(ms) != STEPS:
        suite.check(False, f"{name}: the summary's tokens/s under -k_schedule", f"summary {m and m.group(0)}, k {ks}, ms {ms}")
        return
    mean_ms, tok_per_s = float(m.group(1)), float(m.group(2))
    tokens = sum(P * k * B * T for k in ks[1:])
    expected = tokens / (mean_ms * (STEPS - 1) / 1e3)
    log_mean = sum(ms[1:]) / (STEPS - 1)
    suite.check(ks == [4, 2, 1] and abs(tok_per_s - expected) <= 1e-2 * expected and abs(mean_ms - log_mean) <= 0.06,
                f"{name}: the summary's tokens/s under -k_schedule is the tokens trained over the time",
                f"k {ks}: {tokens} tokens in {STEPS - 1} timed windows of mean {mean_ms} ms (log: {log_mean:.3f} ms): "
                f"expected {expected:.0f} tok/s, summary says {tok_per_s:.0f}")


def resume_args(out, steps, log, extra=()):
    common = setup()["common"]
    return common[:common.index("-x")] + ["-x", str(steps), "-s", "0", "-l", "1e-3", "-b", "2", "-k", "2",
                                          "-n", "2", "-o", out, "-log", log] + list(extra)


@fixture
def resume_runs():
    """P=2 runs: 4 steps straight, and 2 steps then resumed to 4 (its checkpoints: a P=2 run's)."""
    full, part = work("resume_full"), work("resume_part")
    logs = [work(n) for n in ("resume_full.log", "resume_a.log", "resume_b.log")]
    results = [mpirun(2, resume_args(full, 4, logs[0])), mpirun(2, resume_args(part, 2, logs[1])),
               mpirun(2, resume_args(part, 4, logs[2], ["-y", "1"]))]
    if any(rc != 0 for rc, _, _ in results):
        raise RuntimeError(tail("".join(se for _, _, se in results)))
    return dict(full=full, part=part, losses=[logged(p, "trl") for p in logs])


@suite.case
def resume():
    """P=2: stop at step 2, resume, compare with the run that never stopped, bit for bit."""
    r = resume_runs()
    full, a, b = r["losses"]
    same_model = open(os.path.join(r["full"], "model_00000004.bin"), "rb").read() == \
        open(os.path.join(r["part"], "model_00000004.bin"), "rb").read()
    suite.check(len(full) == 4 and full == a + b and same_model, "P=2 resume at step 2 is bit-identical",
                f"losses {full} vs {a} + {b}; final model files {'identical' if same_model else 'differ'}")


# --- bad setups: a message on every rank, the job aborts, no hang ---------------------------------------
@suite.case
def bad_resume_other_P():
    """Resuming a P=2 run's checkpoint with P=4 fails with a message, never a hang."""
    r = resume_runs()
    common = setup()["common"]
    rc, so, se = mpirun(4, common[:common.index("-x")] + ["-x", "4", "-s", "0", "-b", "2", "-k", "2", "-n", "2",
                                                          "-o", r["part"], "-y", "1"], timeout=120)
    msgs = [l for l in se.splitlines() if "written by a run with P=2" in l or "fewer ranks" in l]
    suite.check(rc != 0 and rc != 124 and len(msgs) >= 1, "resume with another P than the checkpoint's",
                f"exit {rc}, {len(msgs)} rank message(s): {msgs[0] if msgs else tail(se)}")


def two_step_args():
    common = setup()["common"]
    return common[:common.index("-x")] + ["-x", "2", "-s", "0", "-k", "1"]


@suite.case
def bad_ranks_disagree():
    """Ranks started with different -b fail naming the rank that differs."""
    base = two_step_args()
    rc, so, se = mpmd(base + ["-b", "2"], base + ["-b", "4"])
    suite.check(rc != 0 and rc != 124 and "differs from rank 0 in -b" in se, "ranks that disagree on the config",
                f"exit {rc}: {[l for l in se.splitlines() if 'error' in l][:1]}")
    # The line also names what was being agreed on: the flags, not the data or a resumed state.
    suite.check("(while checking that every rank has the same configuration)" in se,
                "a disagreement names what disagreed", f"{[l for l in se.splitlines() if 'error' in l][:1]}")


@suite.case
def bad_rank_data():
    """A rank that cannot open its data shard fails the job with a message."""
    base = two_step_args()
    bad = list(base)
    bad[bad.index("-i") + 1] = work("missing_shard.bin")
    rc, so, se = mpmd(base + ["-b", "2"], bad + ["-b", "2"])
    suite.check(rc != 0 and rc != 124 and "no data shard matches" in se, "a rank that cannot open its data",
                f"exit {rc}: {[l for l in se.splitlines() if 'error' in l][:2]}")
    suite.check("(while opening the training data (-i))" in se, "a failure names the phase it failed in",
                f"{[l for l in se.splitlines() if 'error' in l][:2]}")


if __name__ == "__main__":
    suite.main()
