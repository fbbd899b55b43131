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
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, PYTHON, Checks, ensure_synthetic, run, step_losses, tail, worst_tensor_error  # noqa: E402

checks = Checks()
if shutil.which("mpirun") is None:
    checks.skip("distributed window", "mpirun not found (Debian: apt install openmpi-bin libopenmpi-dev)")
    checks.exit()
rc, so, se = run(["./train_gpt2", "-h"])
work = os.path.join(BUILD, "mpi")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
data = ensure_synthetic()
train = os.path.join(data, "synthetic_train_000000.bin")
init = os.path.join(work, "init.bin")
rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "5", "--write_checkpoint", init])
if not checks.check(rc == 0, "initial model from train_gpt2.py", tail(se, 2)):
    checks.exit()
config, _ = formats.read_model(init)
TENSORS = formats.parameter_tensors(config)
NUM_PARAMS = sum(n for _, n in TENSORS)
STEPS, ROWS, T = 3, 8, 32
COMMON = ["-e", init, "-i", train, "-j", "", "-pad", "1", "-t", str(T), "-x", str(STEPS), "-s", "0",
          "-l", "1e-3", "-c", "0.1", "-clip", "1.0"]


def mpirun(P, args, timeout=300):
    cmd = ["mpirun", "-np", str(P), "--oversubscribe", "./train_gpt2"] + args
    return run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1"), timeout=timeout)


def train_run(name, P, K, B, extra=()):
    """Runs one configuration; returns dict(losses, grads (windows, params), params, stdout) or None."""
    out = os.path.join(work, name)
    dump = os.path.join(work, name + ".grads")
    rc, so, se = mpirun(P, COMMON + ["-b", str(B), "-o", out, "-n", str(STEPS), "-dump_grads", dump]
                        + (["-k", str(K)] if K else []) + list(extra))
    if rc != 0:
        checks.check(False, f"{name} runs", tail(se))
        return None
    grads = np.fromfile(dump, dtype=np.float32)
    _, params = formats.read_model(os.path.join(out, f"model_{STEPS:08d}.bin"))
    return dict(losses=step_losses(so), grads=grads.reshape(-1, NUM_PARAMS), params=params, stdout=so)


def compare(name, run_a, ref, grad_tol=1e-5, loss_tol=2e-6, param_tol=1e-6):
    if run_a is None or ref is None:
        return
    g_ok = run_a["grads"].shape == ref["grads"].shape
    g_err = max((worst_tensor_error(a, b, TENSORS) for a, b in zip(run_a["grads"], ref["grads"])), default=(9.9, "?"))
    checks.check(g_ok and g_err[0] <= grad_tol, f"{name}: gradient of every window",
                 f"worst ||dg||/||g|| = {g_err[0]:.2e} in {g_err[1]} (tolerance {grad_tol:.0e}), {len(run_a['grads'])} windows")
    l_err = max(abs(a - b) for a, b in zip(run_a["losses"], ref["losses"])) if run_a["losses"] else 9.9
    checks.check(len(run_a["losses"]) == len(ref["losses"]) == STEPS and l_err <= loss_tol, f"{name}: losses",
                 f"max |dloss| = {l_err:.1e} (tolerance {loss_tol:.0e}): {run_a['losses']}")
    a, b = run_a["params"].astype(np.float64), ref["params"].astype(np.float64)
    p_err = np.linalg.norm(a - b) / np.linalg.norm(b)
    worst = worst_tensor_error(run_a["params"], ref["params"], TENSORS)
    checks.check(p_err <= param_tol, f"{name}: parameters after {STEPS} steps",
                 f"||dp||/||p|| = {p_err:.2e} (tolerance {param_tol:.0e}); largest per tensor {worst[0]:.1e} in {worst[1]}")


# --- the reference: one rank, one micro-step of all 8 rows -----------------------------------------
ref = train_run("P1_K1_B8", 1, 1, 8)
if ref is None:
    checks.exit()
counts = [l.split("| N ")[1].split()[0] for l in ref["stdout"].splitlines() if "| N " in l]
print(f"     valid targets per window of {ROWS} rows x T={T}: {counts}")

# ... and PyTorch on the same full batch.
py_dump = os.path.join(work, "pytorch.grads")
rc, so, se = run([PYTHON, "train_gpt2.py", "--init_checkpoint", init, "--input_bin", train, "--pad", "1", "--T", str(T),
                  "--B", str(ROWS), "--K", "1", "--num_iterations", str(STEPS), "--learning_rate", "1e-3",
                  "--weight_decay", "0.1", "--grad_clip", "1.0", "--dump_grads", py_dump])
if checks.check(rc == 0, "train_gpt2.py on the full batch", tail(se, 2) if rc else "ran"):
    py_grads = np.fromfile(py_dump, dtype=np.float32).reshape(-1, NUM_PARAMS)
    err = max(worst_tensor_error(a, b, TENSORS)[0] for a, b in zip(ref["grads"], py_grads))
    checks.check(err <= 1e-4, "P=1 K=1 gradient vs PyTorch", f"worst ||dg||/||g|| = {err:.2e} (tolerance 1e-4)")
    py_losses = step_losses(so)
    l_err = max(abs(a - b) for a, b in zip(ref["losses"], py_losses)) if py_losses else 9.9
    checks.check(len(py_losses) == STEPS and l_err <= 1e-4, "P=1 K=1 losses vs PyTorch",
                 f"max |dloss| = {l_err:.1e} (tolerance 1e-4): {py_losses}")

# --- the grid: P in {1,2,4}, K in {1,2,4}, P*K*B = 8 rows ------------------------------------------
for P in (1, 2, 4):
    for K in (1, 2, 4):
        if ROWS % (P * K) or (P, K) == (1, 1):
            continue
        B = ROWS // (P * K)
        r = train_run(f"P{P}_K{K}_B{B}", P, K, B)
        compare(f"P={P} K={K} B={B}", r, ref)
        if r is not None and K == 4:
            windows = [l for l in r["stdout"].splitlines() if l.startswith("communication in")]
            want = f"reduce-scatter {STEPS} call(s)"
            ok = len(windows) == 1 and want in windows[0] and f"all-gather {STEPS} call(s)" in windows[0] \
                and f"scalar all-reduce {STEPS} call(s)" in windows[0] and "all-reduce " not in windows[0].replace("scalar all-reduce", "")
            checks.check(ok, f"P={P} K=4: one reduce-scatter, one scalar all-reduce, one all-gather per window",
                         windows[0] if windows else "no communication line")

# --- the variants ---------------------------------------------------------------------------------
r = train_run("P2_K2_B2_sync", 2, 2, 2, ["-sync_each_microstep", "1"])
compare("P=2 K=2 -sync_each_microstep 1", r, ref)
if r is not None:
    line = [l for l in r["stdout"].splitlines() if l.startswith("communication in")]
    checks.check(bool(line) and f"reduce-scatter {2 * STEPS} call(s)" in line[0],
                 "-sync_each_microstep: K reduce-scatters per window", line[0] if line else "no line")
r = train_run("P2_K2_B2_z0", 2, 2, 2, ["-z", "0"])
compare("P=2 K=2 -z 0 (all-reduce, replicated AdamW)", r, ref)
if r is not None:
    line = [l for l in r["stdout"].splitlines() if l.startswith("communication in")]
    checks.check(bool(line) and f"all-reduce {STEPS} call(s)" in line[0] and "reduce-scatter" not in line[0],
                 "-z 0: one gradient all-reduce per window, no reduce-scatter", line[0] if line else "no line")

# -shuffle 1: every rank draws the same row order, so the split still does not matter; and the
# order does change the run (else this comparison would prove nothing about shuffling).
shuf_ref = train_run("P1_K1_B8_shuffle", 1, 1, 8, ["-shuffle", "1"])
shuf = train_run("P2_K2_B2_shuffle", 2, 2, 2, ["-shuffle", "1"])
compare("P=2 K=2 -shuffle 1 vs P=1 K=1 -shuffle 1", shuf, shuf_ref)
if shuf_ref is not None and ref is not None:
    checks.check(shuf_ref["losses"] != ref["losses"], "-shuffle 1 changes the rows trained on",
                 f"losses {shuf_ref['losses']} vs {ref['losses']} in file order")

# A K schedule: windows of 8, 4 and 2 rows. Reference: one rank taking each window in one micro-step
# needs B to change, so compare against P=1 with the same schedule of rows (K=4,2,1 at B=2).
sched_ref = train_run("P1_sched", 1, None, 2, ["-k_schedule", "0:4,1:2,2:1"])
sched = train_run("P2_sched", 2, None, 1, ["-k_schedule", "0:4,1:2,2:1"])
compare("P=2 K schedule 4,2,1 vs P=1", sched, sched_ref)

# --- resume with P=2: stop at step 2, resume, compare bit for bit -----------------------------------
def resume_run(out, steps, extra=()):
    return mpirun(2, COMMON[:COMMON.index("-x")] + ["-x", str(steps), "-s", "0", "-l", "1e-3", "-b", "2", "-k", "2",
                  "-n", "2", "-o", out] + list(extra))

full, part = os.path.join(work, "resume_full"), os.path.join(work, "resume_part")
r1, so_full, se1 = resume_run(full, 4)
r2, so_a, se2 = resume_run(part, 2)
r3, so_b, se3 = resume_run(part, 4, ["-y", "1"])
ok = r1 == r2 == r3 == 0
same = ok and step_losses(so_full) == step_losses(so_a) + step_losses(so_b) and \
    open(os.path.join(full, "model_00000004.bin"), "rb").read() == open(os.path.join(part, "model_00000004.bin"), "rb").read()
checks.check(same, "P=2 resume at step 2 is bit-identical", f"losses {step_losses(so_full)}" if ok else tail(se1 + se2 + se3))

# --- bad setups: a message on every rank, the job aborts, no hang ------------------------------------
rc, so, se = mpirun(4, COMMON[:COMMON.index("-x")] + ["-x", "4", "-s", "0", "-b", "2", "-k", "2", "-n", "2",
                    "-o", part, "-y", "1"], timeout=120)
msgs = [l for l in se.splitlines() if "written by a run with P=2" in l or "fewer ranks" in l]
checks.check(rc != 0 and rc != 124 and len(msgs) >= 1, "resume with another P than the checkpoint's",
             f"exit {rc}, {len(msgs)} rank message(s): {msgs[0] if msgs else tail(se)}")

base = COMMON[:COMMON.index("-x")] + ["-x", "2", "-s", "0", "-k", "1"]
cmd = ["mpirun", "--oversubscribe", "-np", "1", "./train_gpt2"] + base + ["-b", "2", ":", "-np", "1", "./train_gpt2"] + base + ["-b", "4"]
rc, so, se = run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1"), timeout=120)
checks.check(rc != 0 and rc != 124 and "differs from rank 0" in se, "ranks that disagree on the config",
             f"exit {rc}: {[l for l in se.splitlines() if 'error' in l][:1]}")

bad = list(base)
bad[bad.index("-i") + 1] = os.path.join(work, "missing_shard.bin")
cmd = ["mpirun", "--oversubscribe", "-np", "1", "./train_gpt2"] + base + ["-b", "2", ":", "-np", "1", "./train_gpt2"] + bad + ["-b", "2"]
rc, so, se = run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1"), timeout=120)
checks.check(rc != 0 and rc != 124 and "no data shard matches" in se, "a rank that cannot open its data",
             f"exit {rc}: {[l for l in se.splitlines() if 'error' in l][:2]}")
checks.exit()
