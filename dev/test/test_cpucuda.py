#!/usr/bin/env python3
"""The CUDA programs executed on the CPU (dev/cpucuda): no GPU needed, so every run of make test
executes train_gpt2.cu, test_gpt2.cu, llmc/cuda_*.cuh and the dev/cuda harnesses.

Cases (--list; --only NAME runs one):
  1. self_checks: the emulation checks itself: a WMMA GEMM is exact; a deadlock, a lane missing from a shuffle,
     a divergent warp and (strict mode) a partial __syncthreads each stop with the kernel, block and
     thread named, never hang; inline PTX does not compile, and the error names it;
  2. harness_<name>: every dev/cuda harness, every validation, with the default fiber order;
     quick_harnesses: every harness at its smallest shape (CPUCUDA_QUICK=1, dev/cuda/common.h's
     quick_mode()), each still validated against its CPU reference: the five-minute check's part;
  3. asan_harness_<name>: the same harnesses built with AddressSanitizer and run with a random fiber order
     (CPUCUDA_SCHED_SEED) and CPUCUDA_STRICT=1: a second order and a memory check in one pass;
     ucontext_harness: one harness also with the portable ucontext fibers (the path non-x86-64
     machines take);
  4. test_gpt2cu: test_gpt2cu against the PyTorch debug state (its own checks: logits, every gradient tensor,
     the K-micro-step window, the loss trajectory, determinism, NCCL vs single-GPU, -z 0,
     -sync_each_microstep, -grad_bf16);
  5. grid_P<P>_K<K>: train_gpt2cu on masked, padded SFT data, P in {1,2,4} x K in {1,2,4} with P*K*B = 16 rows,
     under mpirun (NCCL over MPI): each window's gradient against train_gpt2's, the CUDA trainer's
     results across the grid against its own P=1 K=1 run, exactly one reduce-scatter, one scalar
     all-reduce and one all-gather per window (counted by the emulated NCCL, not by the trainer);
     the reference runs (train_gpt2 and train_gpt2cu at P=1 K=1) are fixtures, run once;
  6. resume: resume at P=2 is bit-identical to an uninterrupted run; asan_training: a short P=2 run
     under AddressSanitizer.
Losses and valid-target counts are read from the trainers' key:value log (-log FILE), not from the
printed step lines.

Tolerances.
  - CUDA vs train_gpt2 (fp32), per tensor ||dg||/||g||. First window, from the same parameters: 2.5e-2,
    the bound test_gpt2.cu derives for a bf16 trainer's window gradient against an fp32 one (each bf16
    rounding adds ~2.3e-3 RMS relative, ~6 roundings deep: ~6e-3 expected; measured 5.4e-3). Later
    windows: 5e-2. There the two trainers evaluate the gradient at different points: the CUDA
    trainer's weights are its fp32 masters rounded (stochastically) to bf16, up to 2^-8 relative per
    weight, which moves every activation by about that much again on top of the computation's own
    rounding, so the expected error roughly doubles (measured 1.6e-2, in ln1b, a small tensor whose
    gradient sums many cancelling terms). Losses 1e-2 absolute (test_gpt2.cu's trajectory bound).
  - CUDA across the grid: 1e-4 per tensor, 250x and more tighter. Only the grouping of fp32 sums
    differs between splits (rows per GEMM, micro-steps, ranks): measured ~1.4e-7 relative. After an
    AdamW step the fp32 masters differ at that level, and a master within 1e-7 of a bf16 stochastic
    rounding threshold can round the other way (one bf16 ulp for a handful of parameters), which can
    move the next window's gradients by ~1e-6..1e-5; 1e-4 leaves that margin while any normalization
    or accumulation error (1e-2 and more) fails it by far. Losses within 1e-4.
"""
import collections
import os
import re
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, PYTHON, REPO, Skip, Suite, ensure_synthetic, fixture, fresh_dir, logged, run, tail, worst_tensor_error  # noqa: E402

suite = Suite(__file__)
EMU = os.path.join(REPO, "build", "cpucuda")
# the dev/cuda harnesses, one case each; a directory listing, so --list stays instant
HARNESSES = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "dev", "cuda")) if f.endswith(".cu"))


def need(path):
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{os.path.relpath(path, REPO)} is not built: run `make cpucuda cpucuda-asan` (make test does)")
    return path


def have_mpi():
    return shutil.which("mpirun") is not None


# --- 1. the emulation checks itself ------------------------------------------------------------------
PROBE_DIAGNOSES = {
    "deadlock": ("deadlock in kernel barrier_vs_shuffle, block", "not there: thread (48,0,0)"),
    "lane": ("thread (5,0,0) (lane 5) returned while lanes", "kernel early_return_lane, block (0,0,0)"),
    "divergent": ("divergent warp: thread", "kernel divergent_warp"),
    "strict": ("wait in __syncthreads (CPUCUDA_STRICT=1); kernel divergent_syncthreads", "thread ("),
    "misaligned": ("load128: address", "is not 16-byte aligned (kernel misaligned_load128)"),
}


@suite.case
def self_checks():
    """The emulation's probes (exact WMMA, kernels that would hang a GPU stop with a diagnosis) and inline PTX refused."""
    probes = need(os.path.join(EMU, "probes"))
    rc, so, se = run([probes, "wmma"], timeout=60)
    suite.check(rc == 0, "WMMA emulation: a 32x48x64 bf16 GEMM through nvcuda::wmma is exact", so.strip() or tail(se))
    for case, words in PROBE_DIAGNOSES.items():
        # one OS thread: with two, both blocks of a two-block probe print their diagnosis at once, and
        # the lines interleave (the thread list of one split by the other's)
        env = dict(CPUCUDA_THREADS="1", **({"CPUCUDA_STRICT": "1"} if case == "strict" else {}))
        rc, so, se = run([probes, case], env=env, timeout=30)
        first = next((l for l in se.splitlines() if l.startswith("[cpucuda]")), "")
        suite.check(rc not in (0, 124) and all(w in se for w in words), f"emulation stops a {case} kernel with a diagnosis",
                    f"exit {rc}: {first}" if first else f"exit {rc}: {tail(so + se)}")
    check_inline_ptx_refused()


def check_inline_ptx_refused():
    """A GPU would run asm(...); the emulation cannot, so it must fail to compile, naming itself."""
    src = os.path.join(EMU, "src", "inline_ptx.cu")
    os.makedirs(os.path.dirname(src), exist_ok=True)
    rc, so, se = run(["perl", "dev/cpucuda/cu2cpp.pl", "dev/cpucuda/probes/inline_ptx.cu"])
    open(src, "w").write(so)
    rc, so, se = run(["g++", "-std=c++17", "-I/usr/local/cuda/include", "-include", "dev/cpucuda/cpucuda.h", "-c", "-x", "c++",
                      src, "-o", os.devnull])
    errors = [l for l in se.splitlines() if "error:" in l]
    suite.check(rc != 0 and bool(errors) and "inline_PTX" in errors[0], "inline PTX fails to compile, naming it",
                errors[0].split("error:")[1].strip() if errors else f"exit {rc}")


# --- 2, 3. the kernel harnesses ----------------------------------------------------------------------
# Out-of-bounds accesses and use after free are checked, leaks are not: a harness that returns without
# freeing its device buffers and handles leaks nothing on a GPU (the context releases them).
RANDOM_ORDER = {"CPUCUDA_SCHED_SEED": "7", "CPUCUDA_STRICT": "1", "ASAN_OPTIONS": "detect_leaks=0"}


def run_harness(binary, name, label, env=None):
    """One harness run: a check line that passes when it exits 0 with its closing 'ALL OK' line."""
    t = time.time()
    if not os.access(binary, os.X_OK):   # a check line, not an exception: quick_harnesses goes on to the next
        suite.check(False, f"{label} {name}", f"{os.path.relpath(binary, REPO)} is not built: run `make cpucuda cpucuda-asan`")
        return
    rc, so, se = run([binary], env=env, timeout=900)
    oks = sum(1 for l in so.splitlines() if re.search(r"\bok\b", l))
    closing = f"{name}: ALL OK" in so
    suite.check(rc == 0 and closing, f"{label} {name}",
                f"{oks} validations ok, {time.time() - t:.0f} s" if rc == 0 else f"exit {rc}: {tail(so + se, 4)}")


def harness_case(name, binary_dir, label, env, doc):
    def case():
        run_harness(os.path.join(binary_dir, name), name, label, env)
    case.__name__ = case.__qualname__ = f"{'asan_' if 'asan' in binary_dir else ''}harness_{name}"
    case.__doc__ = doc
    return case


for _h in HARNESSES:
    suite.case(harness_case(_h, os.path.join(EMU, "dev", "cuda"), "harness (default fiber order)", None,
                            f"dev/cuda/{_h}.cu: every validation, default fiber order."))


@suite.case
def quick_harnesses():
    """Every dev/cuda harness at its smallest shape (CPUCUDA_QUICK=1), still validated against its CPU reference."""
    for name in HARNESSES:
        run_harness(os.path.join(EMU, "dev", "cuda", name), name, "quick harness (CPUCUDA_QUICK=1)", {"CPUCUDA_QUICK": "1"})


for _h in HARNESSES:
    suite.case(harness_case(_h, os.path.join(EMU, "asan", "dev", "cuda"), "harness (AddressSanitizer, random fiber order, strict)",
                            RANDOM_ORDER, f"dev/cuda/{_h}.cu under AddressSanitizer, random fiber order, CPUCUDA_STRICT=1."))


@suite.case
def ucontext_harness():
    """layernorm_forward with the portable ucontext fibers (the path non-x86-64 machines take)."""
    run_harness(os.path.join(EMU, "ucontext", "dev", "cuda", "layernorm_forward"), "layernorm_forward", "harness (ucontext fibers)")


# --- 4. test_gpt2cu against PyTorch ------------------------------------------------------------------
@suite.case
def test_gpt2cu():
    """The emulated test_gpt2cu against the PyTorch debug state (its own PASS/FAIL lines count too)."""
    model, debug = os.path.join(BUILD, "model_tiny.bin"), os.path.join(BUILD, "debug_tiny.bin")
    if not (os.path.exists(model) and os.path.exists(debug)):
        raise RuntimeError("the PyTorch debug state is missing (dev/test/test_reference.py writes it)")
    rc, so, se = run([need(os.path.join(EMU, "test_gpt2cu")), model, debug], timeout=900)
    sys.stdout.write(so)   # its PASS/FAIL lines count in run_tests.py's totals
    fails = [l for l in so.splitlines() if l.startswith("FAIL")]
    suite.check(rc == 0 and not fails, "emulated test_gpt2cu exits 0 with no FAIL line",
                f"exit {rc}, {len(fails)} FAIL line(s)" + (f": {tail(se)}" if rc else ""))


# --- 5. the P x K grid against train_gpt2 ------------------------------------------------------------
STEPS, ROWS, T = 2, 16, 32
VS_FP32 = (2.5e-2, 5e-2)   # the first window, the later ones (see the docstring)
TRACE = re.compile(r"\[cpucuda nccl\] rank (\d+): (\S+) n=")
GRID = [(P, K) for P in (1, 2, 4) for K in (1, 2, 4)]
PER_WINDOW = {"reduce-scatter": 1, "all-reduce": 1, "all-gather": 1}


@fixture
def setup():
    """The grid's work folder, the initial model (train_gpt2.py, seed 5), its tensors and the common flags."""
    work = os.path.join(BUILD, "cpucuda")
    fresh_dir(work)
    shard = os.path.join(ensure_synthetic(), "synthetic_train_000000.bin")
    init = os.path.join(work, "init.bin")
    rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "5", "--write_checkpoint", init])
    if not suite.check(rc == 0, "initial model from train_gpt2.py", tail(se, 2)):
        raise RuntimeError("train_gpt2.py could not write the initial model")
    config, _ = formats.read_model(init)
    tensors = formats.parameter_tensors(config)
    common = ["-e", init, "-i", shard, "-j", "", "-pad", "1", "-t", str(T), "-x", str(STEPS), "-s", "0", "-l", "1e-3",
              "-c", "0.1", "-clip", "1.0"]
    return dict(work=work, tensors=tensors, num_params=sum(n for _, n in tensors), common=common)


def train(name, program, P, K, B):
    """One run of the grid: dict(losses, valid, grads (windows, params), comm)."""
    s = setup()
    dump, log = os.path.join(s["work"], name + ".grads"), os.path.join(s["work"], name + ".log")
    args = s["common"] + ["-b", str(B), "-k", str(K), "-dump_grads", dump, "-log", log]
    env = dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1", CPUCUDA_NCCL_TRACE="1")
    cmd = (["mpirun", "-np", str(P), "--oversubscribe"] if have_mpi() else []) + [need(program)] + args
    rc, so, se = run(cmd, env=env, timeout=900)
    if rc != 0:
        raise RuntimeError(f"{name} failed: {tail(se)}")
    grads = np.fromfile(dump, dtype=np.float32).reshape(-1, s["num_params"])
    return dict(losses=logged(log, "trl"), valid=logged(log, "valid"), grads=grads, comm=collectives(so))


def collectives(stdout):
    """The emulated NCCL's trace: rank 0's collectives of each window, and every rank's total.

    The setup's collectives (the ranks' agreement on flags and data) come before the 'steps:' line.
    After it, rank 0's trace is cut into windows at each all-gather: a window ends by gathering the
    updated parameter shards, so a window with a missing or an extra all-gather changes the number of
    windows (which must be the log's) and the counts of its neighbours. Collectives after the last
    all-gather belong to no window."""
    windows, current, totals = [], None, {}
    for line in stdout.splitlines():
        m = TRACE.match(line)
        if m:
            rank, op = int(m.group(1)), m.group(2)
            totals.setdefault(rank, collections.Counter())[op] += 1
            if rank == 0 and current is not None:
                current[op] += 1
                if op == "all-gather":
                    windows.append(dict(current))
                    current = collections.Counter()
        elif line.startswith("steps:"):
            current = collections.Counter()
    return dict(windows=windows, totals=totals)


@fixture
def cpu_ref():
    """train_gpt2 (fp32) at P=1 K=1 B=16: the reference of every grid point."""
    return train("cpu_P1_K1", "./train_gpt2", 1, 1, ROWS)


@fixture
def cu_ref():
    """train_gpt2cu at P=1 K=1 B=16: the CUDA trainer's own reference across the grid."""
    return train("cu_P1_K1", os.path.join(EMU, "train_gpt2cu"), 1, 1, ROWS)


def compare(name, a, ref, grad_tols, loss_tol):
    """grad_tols: the first window's tolerance, then the later windows'. Returns the worst tensor error."""
    tensors = setup()["tensors"]
    shape_ok = a["grads"].shape == ref["grads"].shape
    errs = [worst_tensor_error(x, y, tensors) for x, y in zip(a["grads"], ref["grads"])]
    tols = [grad_tols[min(w, 1)] for w in range(len(errs))]
    ok = shape_ok and all(e[0] <= t for e, t in zip(errs, tols))
    g = max(errs, default=(9.9, "?"))
    suite.check(ok, f"{name}: every window's gradient",
                "per window worst ||dg||/||g|| (tolerance): "
                + ", ".join(f"{e[0]:.1e} in {e[1]} ({t:.0e})" for e, t in zip(errs, tols)))
    l_err = max((abs(x - y) for x, y in zip(a["losses"], ref["losses"])), default=9.9)
    suite.check(len(a["losses"]) == len(ref["losses"]) == STEPS and l_err <= loss_tol, f"{name}: losses",
                f"max |dloss| = {l_err:.1e} (tolerance {loss_tol:.0e}): {a['losses']}")
    return g[0]


def check_collectives(P, K, r):
    windows, totals = r["comm"]["windows"], r["comm"]["totals"]
    same = len(totals) == P and all(t == totals[0] for t in totals.values())
    suite.check(len(windows) == len(r["losses"]) == STEPS and all(w == PER_WINDOW for w in windows) and same,
                f"CUDA P={P} K={K}: 1 reduce-scatter, 1 scalar all-reduce, 1 all-gather per window (emulated NCCL's count)",
                f"rank 0's windows: {windows} ({len(r['losses'])} in the log); every rank the same collectives in all: {same}")


def grid_point(P, K):
    B = ROWS // (P * K)
    if (P, K) == (1, 1):
        r = cu_ref()
        print(f"     valid targets per window of {ROWS} rows x T={T}: {[int(v) for v in r['valid']]}")
        compare("CUDA P=1 K=1 B=16 vs train_gpt2 (bf16 vs fp32)", r, cpu_ref(), VS_FP32, 1e-2)
        return
    if P > 1 and not have_mpi():
        raise Skip("P > 1 on the emulation: mpirun not found")
    r = train(f"cu_P{P}_K{K}", os.path.join(EMU, "train_gpt2cu"), P, K, B)
    e = compare(f"CUDA P={P} K={K} B={B} vs train_gpt2", r, cpu_ref(), VS_FP32, 1e-2)
    print(f"     worst tensor error of CUDA P={P} K={K} against train_gpt2: {e:.2e}")
    compare(f"CUDA P={P} K={K} B={B} vs CUDA P=1 K=1 B=16", r, cu_ref(), (1e-4, 1e-4), 1e-4)
    check_collectives(P, K, r)


def grid_case(P, K):
    def case():
        grid_point(P, K)
    case.__name__ = case.__qualname__ = f"grid_P{P}_K{K}"
    B = ROWS // (P * K)
    case.__doc__ = (f"train_gpt2cu P={P} K={K} B={B} vs train_gpt2" +
                    (" (its valid targets per window printed)." if (P, K) == (1, 1) else
                     ", vs CUDA P=1 K=1, and the collectives per window."))
    return case


for _P, _K in GRID:
    suite.case(grid_case(_P, _K))


# --- 6. resume, and AddressSanitizer on a short P=2 run ------------------------------------------------
def resume_run(out, steps, log, extra=()):
    common = setup()["common"]
    args = common[:common.index("-x")] + ["-x", str(steps), "-s", "0", "-l", "1e-3", "-b", "2", "-k", "2", "-n", "2",
                                         "-o", out, "-log", log] + list(extra)
    return run(["mpirun", "-np", "2", "--oversubscribe", need(os.path.join(EMU, "train_gpt2cu"))] + args,
               env=dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1"), timeout=600)


@suite.case
def resume():
    """CUDA P=2: 2 steps, then resumed (-y 1) to 4, is bit-identical to 4 steps uninterrupted (losses, model_4 bytes)."""
    if not have_mpi():
        raise Skip("mpirun not found")
    work = setup()["work"]
    full, part = os.path.join(work, "resume_full"), os.path.join(work, "resume_part")
    for d in (full, part):
        shutil.rmtree(d, ignore_errors=True)
    logs = [os.path.join(work, f"resume_{n}.log") for n in ("full", "first", "resumed")]
    r1, _, se1 = resume_run(full, 4, logs[0])
    r2, _, se2 = resume_run(part, 2, logs[1])
    r3, _, se3 = resume_run(part, 4, logs[2], ["-y", "1"])
    ok = r1 == r2 == r3 == 0
    losses = [logged(p, "trl") for p in logs]
    same_model = ok and open(os.path.join(full, "model_00000004.bin"), "rb").read() == \
        open(os.path.join(part, "model_00000004.bin"), "rb").read()
    same_losses = ok and len(losses[0]) == 4 and losses[0] == losses[1] + losses[2]
    suite.check(same_model and same_losses, "CUDA P=2 resume at step 2 is bit-identical (losses, model_4 bytes)",
                f"losses {losses[0]}" if ok else tail(se1 + se2 + se3))


@suite.case
def asan_training():
    """train_gpt2cu at P=2 (mpirun when found), 2 steps under AddressSanitizer: no error."""
    asan_cu = need(os.path.join(EMU, "asan", "train_gpt2cu"))
    s = setup()
    log = os.path.join(s["work"], "asan_training.log")
    args = s["common"][:s["common"].index("-x")] + ["-x", "2", "-s", "0", "-b", "2", "-k", "2", "-log", log]
    cmd = (["mpirun", "-np", "2", "--oversubscribe"] if have_mpi() else []) + [asan_cu] + args
    # leak checking is off here: OpenMPI's own allocations at exit are reported as leaks
    rc, so, se = run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1", ASAN_OPTIONS="detect_leaks=0"), timeout=900)
    asan = [l for l in se.splitlines() if "AddressSanitizer" in l]
    losses = logged(log, "trl")
    suite.check(rc == 0 and not asan and len(losses) == 2, "CUDA trainer P=2 under AddressSanitizer: no error",
                f"2 steps, losses {losses}" if rc == 0 and not asan else (asan[0] if asan else tail(se)))


if __name__ == "__main__":
    suite.main()
