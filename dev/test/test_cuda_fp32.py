#!/usr/bin/env python3
"""The fp32 build of the CUDA trainer (-DENABLE_FP32, floatX = float) against the CPU trainer.

train_gpt2.cu stores parameters and activations in bf16: its gradients sit ~5e-3 from the exact ones
(test_gpt2.cu's tolerance is 2.5e-2), so an error of 1e-4 .. 1e-2 in one tensor, say a LayerNorm bias
gradient, hides in that noise. Built with -DENABLE_FP32, the same program keeps everything in fp32,
and then it must agree with train_gpt2 (fp32, another implementation of every op) to fp32 precision.
Here both run on the CPU: train_gpt2, and build/cpucuda/fp32/train_gpt2cu, the CUDA code executed by
the project's emulation (dev/cpucuda: kernels, the cuBLASLt stand-in with fp32 operands, NCCL over
MPI). Both binaries are built by make (`make test` depends on them).

Setup: the tiny preset from the same seed (both trainers initialize it with llmc/gpt2.h), padded
SFT rows (prompts masked: valid-target counts differ per micro-step and per rank), T=64, B=2, K=2,
3 AdamW steps with weight decay and clipping, at P=1 and at P=2 under mpirun (the CUDA trainer through
its NCCL back end, emulated over MPI; the CPU trainer through its MPI back end).

Checks, at each P:
  - every window's dumped gradient (-dump_grads, doc/formats.md), per tensor and per layer (ln1b of
    layer 0 is its own tensor): ||a - b|| / ||b|| <= 1e-5; the worst tensor is printed;
  - the loss of every step: relative difference <= 1e-5;
  - at P=1, the checkpoint written after the last step is the fp32 format (version 3) and its
    parameters match train_gpt2's: ||dp|| / ||p|| <= 1e-6.
And that the 1e-5 comparison has teeth:
  - the bf16 build (build/cpucuda/train_gpt2cu) on the same first window is NOT within 1e-5 in any
    tensor (measured 2.2e-3 .. 7.1e-3, bf16 rounding), yet within test_gpt2.cu's bf16 tolerance 2.5e-2;
  - a 1e-4 relative error put into one tensor of train_gpt2's gradient (layer 0's ln1b) is caught by
    the fp32 comparison, while in the bf16 build's figure for that tensor it is invisible;
  - -grad_bf16 1 is refused by the fp32 build with one line.
And the kernels' scalar paths. The presets' sizes (C, 3C, 4C, Vp, T, hs multiples of 8, every tensor
and shard 16-byte aligned) send every bandwidth-bound kernel down its 128-bit path. A model written
here with L=2, NH=2, C=38 (hs=19, so -attn auto takes the materialized attention), V=1000, Vp=1001,
trained at T=13, leaves no multiple of 4 in C, 3C, Vp, T or hs, and its tensors start at misaligned
offsets: LayerNorm, the encoder, the classifier, the causal softmax, the head split/merge, the qkv bias
gradient and AdamW all take their one-element paths (the dev/cuda harnesses, bf16 only, cover both
paths in that build). At P=1 and P=2 the fp32 build must match train_gpt2 within the same 1e-5 per
tensor (measured 5e-7 .. 7e-7), and the bf16 build's first window must be within BF16_TOL.

Tolerances. Two fp32 programs that sum in different orders differ by a few ulps per sum (2^-24 =
6e-8 each), growing like sqrt(terms): measured 2.1e-6 .. 3.1e-6 for the worst tensor of each window
(P=1 and P=2), so 1e-5 leaves a factor ~3 while a wrong term anywhere (a missing 1/N, a bias, a transposed
operand, a kernel reading 8 floats where 4 are packed) is orders of magnitude larger. One setting
serves that bound: AdamW's eps is 1e-5, not 1e-8. AdamW's first step moves a parameter by
lr * g / (|g| + eps): for the few elements whose gradient is a cancellation of order eps (an fcproj
weight with |g| ~ 1e-8 after clipping, whose last digits are rounding noise), eps = 1e-8 turns a
20% difference of two roundings into a 4e-5 difference of the weight, and the next windows'
gradients then differ by 5e-5 (measured) from a parameter difference, not from a gradient error.
With eps = 1e-5 the update is a smooth function of g for those elements (|d update / dg| <= lr/eps)
and unchanged (~lr * sign(g)) for every gradient much larger than 1e-5. The parameters after 3 steps
agree to ~1e-7 relative; 1e-6 is the bound of dev/test/test_mpi.py for the same reason.

Cases (--list): built, p1_gradients, p1_checkpoint, p2_gradients, bf16_has_not_fp32_precision,
injected_error_caught, odd_shapes_P1, odd_shapes_P2, grad_bf16_refused; the runs they share are
fixtures, each run once (its "<run> runs" line printed by the first case that needs it). Losses are read
from the trainers' key:value log (-log FILE).
"""
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, REPO, Skip, Suite, ensure_synthetic, fixture, fresh_dir, logged, run, tail  # noqa: E402

GRAD_TOL = 1e-5           # per tensor, fp32 vs fp32
LOSS_TOL = 1e-5           # relative, per step
PARAM_TOL = 1e-6          # whole parameter vector after the last step
BF16_TOL = 2.5e-2         # test_gpt2.cu's per-tensor tolerance of the bf16 build
INJECTED = 1e-4           # the error put into one tensor to show the comparison sees it
STEPS = 3

suite = Suite(__file__)
FP32 = os.path.join(REPO, "build", "cpucuda", "fp32", "train_gpt2cu")
BF16 = os.path.join(REPO, "build", "cpucuda", "train_gpt2cu")
BINARIES = ((FP32, "make build/cpucuda/fp32/train_gpt2cu (make cpucuda-fp32)"), (BF16, "make build/cpucuda/train_gpt2cu"))
ODD_CONFIG = dict(max_seq_len=64, vocab_size=1000, num_layers=2, num_heads=2, channels=38, padded_vocab_size=1001)


def have_mpi():
    return shutil.which("mpirun") is not None


@fixture
def work():
    """A fresh build/test/cuda_fp32, and the common flags (the SFT shard made if missing)."""
    for path, what in BINARIES:
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{os.path.relpath(path, REPO)} is not built: {what}")
    d = os.path.join(BUILD, "cuda_fp32")
    fresh_dir(d)
    train = os.path.join(ensure_synthetic(), "synthetic_train_000000.bin")
    common = ["-e", "tiny", "-seed", "1337", "-i", train, "-j", "", "-pad", "1", "-t", "64", "-b", "2", "-k", "2",
              "-s", "0", "-v", "0", "-l", "1e-3", "-c", "0.1", "-clip", "1.0", "-eps", "1e-5"]
    return dict(dir=d, common=common)


def tensors(config):
    """(name, offset, count) of every tensor, the per-layer ones split by layer: ln1b[0], ln1b[1], ..."""
    out, off, L = [], 0, config["num_layers"]
    for name, n in formats.parameter_tensors(config):
        per_layer = name not in ("wte", "wpe", "lnfw", "lnfb")
        parts = L if per_layer else 1
        for l in range(parts):
            out.append((f"{name}[{l}]" if per_layer else name, off + l * (n // parts), n // parts))
        off += n
    return out


def train_run(name, binary, P, steps=STEPS, extra=()):
    """Runs one trainer at P ranks, with its "<name> runs" check; dict(losses, grads (windows, params), stdout)."""
    w = work()
    stem = os.path.join(w["dir"], name.replace(" ", "_").replace("=", "").replace(",", ""))
    dump, log = stem + ".grads", stem + ".log"
    cmd = [binary] + w["common"] + ["-x", str(steps), "-dump_grads", dump, "-log", log] + list(extra)
    env = None
    if P > 1:
        if not have_mpi():
            raise Skip("mpirun not found (Debian: apt install openmpi-bin libopenmpi-dev)")
        cmd = ["mpirun", "-np", str(P), "--oversubscribe"] + cmd
        env = dict(MPI_ENV, OMP_NUM_THREADS="1")
    t0 = time.time()
    rc, so, se = run(cmd, env=env, timeout=600)
    if not suite.check(rc == 0, f"{name} runs", f"{time.time() - t0:.0f} s" if rc == 0 else tail(se)):
        raise RuntimeError(f"{name} failed")
    return dict(losses=logged(log, "trl"), grads=np.fromfile(dump, dtype=np.float32), stdout=so)


def tensor_errors(a, b, layout):
    """[(||a - b|| / ||b||, name)] per tensor, computed in float64."""
    out = []
    for name, off, n in layout:
        x, y = a[off:off + n].astype(np.float64), b[off:off + n].astype(np.float64)
        ref = np.linalg.norm(y)
        out.append((np.linalg.norm(x - y) / (ref if ref > 0 else 1.0), name))
    return out


@fixture
def cpu1():
    return train_run("train_gpt2 P=1", "./train_gpt2", 1, extra=["-o", os.path.join(work()["dir"], "cpu1"), "-n", str(STEPS)])


@fixture
def fp1():
    return train_run("fp32 train_gpt2cu P=1", FP32, 1, extra=["-o", os.path.join(work()["dir"], "fp1"), "-n", str(STEPS)])


@fixture
def model():
    """The tiny preset's config, per-layer tensor layout and parameter count, from train_gpt2's checkpoint."""
    cpu1()
    config, _ = formats.read_model(os.path.join(work()["dir"], "cpu1", f"model_{STEPS:08d}.bin"))
    return dict(config=config, layout=tensors(config), num_params=sum(n for _, n in formats.parameter_tensors(config)))


def window_errors(got, ref):
    """Per window, the tensor errors of got against ref; None when the dumps' sizes differ."""
    m = model()
    if not got["grads"].size == ref["grads"].size == STEPS * m["num_params"]:
        return None
    return [tensor_errors(a, b, m["layout"]) for a, b in
            zip(got["grads"].reshape(-1, m["num_params"]), ref["grads"].reshape(-1, m["num_params"]))]


def compare(label, got, ref):
    """Every window's every tensor and every step's loss."""
    windows = window_errors(got, ref)
    worst = [max(w) for w in windows or []]
    overall = max(worst) if worst else (float("nan"), "?")
    suite.check(windows is not None and overall[0] <= GRAD_TOL, f"{label}: every tensor of every window's gradient",
                f"worst ||dg||/||g|| = {overall[0]:.2e} in {overall[1]} (tolerance {GRAD_TOL:.0e}); per window: "
                + ", ".join(f"{e:.2e} ({n})" for e, n in worst) + f"; {len(model()['layout'])} tensors x {len(worst)} windows")
    la, lb = got["losses"], ref["losses"]
    l_err = max((abs(a - b) / abs(b) for a, b in zip(la, lb)), default=float("nan"))
    suite.check(len(la) == len(lb) == STEPS and l_err <= LOSS_TOL, f"{label}: loss trajectory",
                f"max relative |dloss| = {l_err:.1e} (tolerance {LOSS_TOL:.0e}): {la} vs train_gpt2 {lb}")


@suite.case
def built():
    """build/cpucuda/fp32/train_gpt2cu and build/cpucuda/train_gpt2cu exist (make test builds them)."""
    for path, what in BINARIES:
        suite.check(os.access(path, os.X_OK), f"{os.path.relpath(path, REPO)} built", what)


@suite.case
def p1_gradients():
    """P=1: the fp32 build's every window's gradient (per tensor) and loss vs train_gpt2, within 1e-5."""
    compare("fp32 train_gpt2cu vs train_gpt2, P=1", fp1(), cpu1())


@suite.case
def p1_checkpoint():
    """P=1: the fp32 build's checkpoint after the last step is version 3 and its parameters are train_gpt2's within 1e-6."""
    cpu1(), fp1()   # their checkpoints
    ckpt = f"model_{STEPS:08d}.bin"
    _, p_cpu = formats.read_model(os.path.join(work()["dir"], "cpu1", ckpt))
    with open(os.path.join(work()["dir"], "fp1", ckpt), "rb") as f:
        version = int(np.frombuffer(f.read(8), dtype=np.int32)[1])
    _, p_fp = formats.read_model(os.path.join(work()["dir"], "fp1", ckpt))
    p_err = np.linalg.norm(p_fp.astype(np.float64) - p_cpu) / np.linalg.norm(p_cpu.astype(np.float64)) \
        if p_fp.size == p_cpu.size else float("nan")
    suite.check(version == formats.MODEL_VERSION_FP32 and p_err <= PARAM_TOL,
                f"fp32 train_gpt2cu checkpoint after {STEPS} steps",
                f"version {version} (fp32 is {formats.MODEL_VERSION_FP32}); ||dp||/||p|| = {p_err:.2e} vs train_gpt2's "
                f"(tolerance {PARAM_TOL:.0e})")


@suite.case
def p2_gradients():
    """P=2 (mpirun): NCCL over MPI for the CUDA trainer, the MPI back end for the CPU trainer; the same checks as P=1."""
    cpu2 = train_run("train_gpt2 P=2", "./train_gpt2", 2)
    fp2 = train_run("fp32 train_gpt2cu P=2", FP32, 2)
    compare("fp32 train_gpt2cu vs train_gpt2, P=2", fp2, cpu2)


@fixture
def bf16_first_window():
    """The bf16 build's first window only (later windows also differ by its stochastic rounding), and its tensor errors."""
    bf = train_run("bf16 train_gpt2cu P=1, 1 step", BF16, 1, steps=1)
    m = model()
    g_cpu = cpu1()["grads"].reshape(-1, m["num_params"])[0]
    return dict(grads=bf["grads"][:m["num_params"]], errors=tensor_errors(bf["grads"][:m["num_params"]], g_cpu, m["layout"]))


@suite.case
def bf16_has_not_fp32_precision():
    """The bf16 build is NOT within 1e-5 in any tensor, yet within its own 2.5e-2: the comparison has teeth."""
    bf = bf16_first_window()
    fp_windows = window_errors(fp1(), cpu1())
    bf_worst, bf_best = max(bf["errors"]), min(bf["errors"])
    fp_worst = max(fp_windows[0])[0] if fp_windows else float("nan")
    suite.check(bf_best[0] > GRAD_TOL and bf_worst[0] <= BF16_TOL,
                "bf16 train_gpt2cu is NOT within the fp32 tolerance (the comparison has teeth)",
                f"window 1, every tensor > {GRAD_TOL:.0e}: best {bf_best[0]:.2e} ({bf_best[1]}), worst {bf_worst[0]:.2e} "
                f"({bf_worst[1]}), within the bf16 tolerance {BF16_TOL:.1e}; the fp32 build's worst {fp_worst:.2e}")


@suite.case
def injected_error_caught():
    """A 1e-4 error put into ln1b[0]'s reference gradient: seen against the fp32 build, lost in the bf16 build's noise."""
    m = model()
    layout, num_params = m["layout"], m["num_params"]
    bf = bf16_first_window()
    g_cpu = cpu1()["grads"].reshape(-1, num_params)[0]
    name, off, n = next(t for t in layout if t[0] == "ln1b[0]")
    g_bad = g_cpu.astype(np.float64)
    g_bad[off:off + n] *= 1.0 + INJECTED
    g_fp = fp1()["grads"].reshape(-1, num_params)[0]
    fp_vs_bad = tensor_errors(g_fp, g_bad, layout)
    seen = dict((k, e) for e, k in fp_vs_bad)[name]
    bf_clean = dict((k, e) for e, k in bf["errors"])[name]
    bf_seen = dict((k, e) for e, k in tensor_errors(bf["grads"], g_bad, layout))[name]
    suite.check(seen > GRAD_TOL and max(e for e, k in fp_vs_bad if k != name) <= GRAD_TOL,
                f"a {INJECTED:.0e} error in {name}'s gradient is caught by the fp32 comparison",
                f"fp32 build vs the altered reference: {name} {seen:.2e} > {GRAD_TOL:.0e}, every other tensor within; "
                f"the bf16 build reads {bf_seen:.2e} for it with or without the error ({bf_clean:.2e})")


@fixture
def odd_model():
    """A model and a shard of odd shapes (C=38 hs=19 Vp=1001, tensors at misaligned offsets): the one-element paths."""
    rng = np.random.default_rng(3)
    params = (rng.standard_normal(sum(n for _, n in formats.parameter_tensors(ODD_CONFIG))) * 0.05).astype(np.float32)
    off = 0
    for name, n in formats.parameter_tensors(ODD_CONFIG):
        if name in ("ln1w", "ln2w", "lnfw"):
            params[off:off + n] = 1.0 + 0.1 * rng.standard_normal(n)
        off += n
    path, train = os.path.join(work()["dir"], "odd_model.bin"), os.path.join(work()["dir"], "odd_train.bin")
    formats.write_model(path, params, ODD_CONFIG["max_seq_len"], ODD_CONFIG["vocab_size"], ODD_CONFIG["num_layers"],
                        ODD_CONFIG["num_heads"], ODD_CONFIG["channels"], ODD_CONFIG["padded_vocab_size"])
    formats.write_shard(train, rng.integers(0, ODD_CONFIG["vocab_size"] - 1, size=20000))
    # later flags override the common ones
    return dict(flags=["-e", path, "-i", train, "-pad", "0", "-t", "13"], layout=tensors(ODD_CONFIG), n=len(params))


def odd_shapes(P):
    odd = odd_model()
    cpu_odd = train_run(f"train_gpt2 odd shapes P={P}", "./train_gpt2", P, extra=odd["flags"])
    fp_odd = train_run(f"fp32 train_gpt2cu odd shapes P={P}", FP32, P, extra=odd["flags"])
    n_odd = odd["n"]
    ok_shape = cpu_odd["grads"].size == fp_odd["grads"].size == STEPS * n_odd
    worst = max(max(tensor_errors(a, b, odd["layout"])) for a, b in
                zip(fp_odd["grads"].reshape(-1, n_odd), cpu_odd["grads"].reshape(-1, n_odd))) if ok_shape else (float("nan"), "?")
    suite.check(ok_shape and worst[0] <= GRAD_TOL and "materialized" in fp_odd["stdout"],
                f"odd shapes (C=38 hs=19 Vp=1001 T=13), P={P}: fp32 train_gpt2cu's one-element paths vs train_gpt2",
                f"worst ||dg||/||g|| over {STEPS} windows = {worst[0]:.2e} in {worst[1]} (tolerance {GRAD_TOL:.0e})")
    return cpu_odd


@suite.case
def odd_shapes_P1():
    """Odd shapes at P=1: the fp32 build within 1e-5 of train_gpt2, the bf16 build's first window within 2.5e-2."""
    cpu_odd = odd_shapes(1)
    odd = odd_model()
    bf_odd = train_run("bf16 train_gpt2cu odd shapes P=1, 1 step", BF16, 1, steps=1, extra=odd["flags"])
    if bf_odd["grads"].size != odd["n"]:
        raise RuntimeError(f"the bf16 build dumped {bf_odd['grads'].size} values, not {odd['n']}")
    e = max(tensor_errors(bf_odd["grads"], cpu_odd["grads"][:odd["n"]], odd["layout"]))
    suite.check(e[0] <= BF16_TOL, "odd shapes, P=1: bf16 train_gpt2cu's one-element paths, first window",
                f"worst ||dg||/||g|| = {e[0]:.2e} in {e[1]} (tolerance {BF16_TOL:.1e})")


@suite.case
def odd_shapes_P2():
    """Odd shapes at P=2 (mpirun): the fp32 build within 1e-5 of train_gpt2."""
    odd_shapes(2)


@suite.case
def grad_bf16_refused():
    """The fp32 build refuses -grad_bf16 1 with one line."""
    rc, so, se = run([FP32] + work()["common"] + ["-x", "1", "-grad_bf16", "1"])
    lines = [l for l in se.strip().splitlines() if l]
    suite.check(rc != 0 and len(lines) == 1 and "fp32 build" in lines[0], "fp32 train_gpt2cu refuses -grad_bf16 1",
                f"exit {rc}: {lines}")


if __name__ == "__main__":
    suite.main()
