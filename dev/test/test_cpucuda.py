#!/usr/bin/env python3
"""The CUDA programs executed on the CPU (dev/cpucuda): no GPU needed, so every run of make test
executes train_gpt2.cu, test_gpt2.cu, llmc/cuda_*.cuh and the dev/cuda harnesses.

Parts (each prints its time):
  1. the emulation checks itself: a WMMA GEMM is exact; a deadlock, a lane missing from a shuffle,
     a divergent warp and (strict mode) a partial __syncthreads each stop with the kernel, block and
     thread named, never hang; inline PTX does not compile, and the error names it;
  2. every dev/cuda harness, every validation, with the default fiber order;
  3. the same harnesses built with AddressSanitizer and run with a random fiber order
     (CPUCUDA_SCHED_SEED) and CPUCUDA_STRICT=1: a second order and a memory check in one pass;
     one harness also with the portable ucontext fibers (the path non-x86-64 machines take);
  4. test_gpt2cu against the PyTorch debug state (its own checks: logits, every gradient tensor,
     the K-micro-step window, the loss trajectory, determinism, NCCL vs single-GPU, -z 0,
     -sync_each_microstep, -grad_bf16);
  5. train_gpt2cu on masked, padded SFT data, P in {1,2,4} x K in {1,2,4} with P*K*B = 16 rows,
     under mpirun (NCCL over MPI): each window's gradient against train_gpt2's, the CUDA trainer's
     results across the grid against its own P=1 K=1 run, exactly one reduce-scatter, one scalar
     all-reduce and one all-gather per window (counted by the emulated NCCL, not by the trainer);
  6. resume at P=2 is bit-identical to an uninterrupted run; a short P=2 run under AddressSanitizer.

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
from harness import BUILD, MPI_ENV, PYTHON, REPO, Checks, ensure_synthetic, run, step_losses, tail, worst_tensor_error  # noqa: E402

EMU = os.path.join(REPO, "build", "cpucuda")
checks = Checks()
t_start = time.time()


def part_done(title, t0):
    print(f"     [{title}: {time.time() - t0:.0f} s]", flush=True)


def need(path):
    if not os.access(path, os.X_OK):
        checks.check(False, f"{os.path.relpath(path, REPO)} built", "run `make cpucuda cpucuda-asan` (make test does)")
        return False
    return True


# --- 1. the emulation checks itself ------------------------------------------------------------------
t0 = time.time()
probes = os.path.join(EMU, "probes")
if need(probes):
    rc, so, se = run([probes, "wmma"], timeout=60)
    checks.check(rc == 0, "WMMA emulation: a 32x48x64 bf16 GEMM through nvcuda::wmma is exact", so.strip() or tail(se))
    expect = {
        "deadlock": ("deadlock in kernel barrier_vs_shuffle, block", "not there: thread (48,0,0)"),
        "lane": ("thread (5,0,0) (lane 5) returned while lanes", "kernel early_return_lane, block (0,0,0)"),
        "divergent": ("divergent warp: thread", "kernel divergent_warp"),
        "strict": ("wait in __syncthreads (CPUCUDA_STRICT=1); kernel divergent_syncthreads", "thread ("),
        "misaligned": ("load128: address", "is not 16-byte aligned (kernel misaligned_load128)"),
    }
    for case, words in expect.items():
        env = {"CPUCUDA_STRICT": "1"} if case == "strict" else None
        rc, so, se = run([probes, case], env=env, timeout=30)
        first = next((l for l in se.splitlines() if l.startswith("[cpucuda]")), "")
        checks.check(rc not in (0, 124) and all(w in se for w in words), f"emulation stops a {case} kernel with a diagnosis",
                     f"exit {rc}: {first}" if first else f"exit {rc}: {tail(so + se)}")
# inline PTX must fail to compile, naming itself
src = os.path.join(EMU, "src", "inline_ptx.cu")
os.makedirs(os.path.dirname(src), exist_ok=True)
rc, so, se = run(["perl", "dev/cpucuda/cu2cpp.pl", "dev/cpucuda/probes/inline_ptx.cu"])
open(src, "w").write(so)
rc, so, se = run(["g++", "-std=c++17", "-I/usr/local/cuda/include", "-include", "dev/cpucuda/cpucuda.h", "-c", "-x", "c++", src,
                  "-o", os.devnull])
errors = [l for l in se.splitlines() if "error:" in l]
checks.check(rc != 0 and bool(errors) and "inline_PTX" in errors[0], "inline PTX fails to compile, naming it",
             errors[0].split("error:")[1].strip() if errors else f"exit {rc}")
part_done("emulation self-checks", t0)

# --- 2, 3. the kernel harnesses ----------------------------------------------------------------------
HARNESSES = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, "dev", "cuda")) if f.endswith(".cu"))


def run_harness(binary, name, label, env=None):
    t = time.time()
    rc, so, se = run([binary], env=env, timeout=900)
    oks = sum(1 for l in so.splitlines() if re.search(r"\bok\b", l))
    closing = f"{name}: ALL OK" in so
    checks.check(rc == 0 and closing, f"{label} {name}",
                 f"{oks} validations ok, {time.time() - t:.0f} s" if rc == 0 else f"exit {rc}: {tail(so + se, 4)}")


t0 = time.time()
for h in HARNESSES:
    b = os.path.join(EMU, "dev", "cuda", h)
    if need(b):
        run_harness(b, h, "harness (default fiber order)")
part_done("harnesses, default order", t0)

t0 = time.time()
# Out-of-bounds accesses and use after free are checked, leaks are not: a harness that returns without
# freeing its device buffers and handles leaks nothing on a GPU (the context releases them).
random_order = {"CPUCUDA_SCHED_SEED": "7", "CPUCUDA_STRICT": "1", "ASAN_OPTIONS": "detect_leaks=0"}
for h in HARNESSES:
    b = os.path.join(EMU, "asan", "dev", "cuda", h)
    if need(b):
        run_harness(b, h, "harness (AddressSanitizer, random fiber order, strict)", random_order)
b = os.path.join(EMU, "ucontext", "dev", "cuda", "layernorm_forward")
if need(b):
    run_harness(b, "layernorm_forward", "harness (ucontext fibers)")
part_done("harnesses, AddressSanitizer + random order", t0)

# --- 4. test_gpt2cu against PyTorch ------------------------------------------------------------------
t0 = time.time()
model, debug = os.path.join(BUILD, "model_tiny.bin"), os.path.join(BUILD, "debug_tiny.bin")
test_bin = os.path.join(EMU, "test_gpt2cu")
if not (os.path.exists(model) and os.path.exists(debug)):
    checks.check(False, "emulated test_gpt2cu", "the PyTorch debug state is missing (dev/test/test_reference.py writes it)")
elif need(test_bin):
    rc, so, se = run([test_bin, model, debug], timeout=900)
    sys.stdout.write(so)   # its PASS/FAIL lines count in run_tests.py's totals
    fails = [l for l in so.splitlines() if l.startswith("FAIL")]
    checks.check(rc == 0 and not fails, "emulated test_gpt2cu exits 0 with no FAIL line",
                 f"exit {rc}, {len(fails)} FAIL line(s)" + (f": {tail(se)}" if rc else ""))
part_done("test_gpt2cu", t0)

# --- 5. the P x K grid against train_gpt2 ------------------------------------------------------------
t0 = time.time()
work = os.path.join(BUILD, "cpucuda")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
have_mpi = shutil.which("mpirun") is not None
train_cu = os.path.join(EMU, "train_gpt2cu")
data = ensure_synthetic()
shard = os.path.join(data, "synthetic_train_000000.bin")
init = os.path.join(work, "init.bin")
rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "5", "--write_checkpoint", init])
checks.check(rc == 0, "initial model from train_gpt2.py", tail(se, 2))
config, _ = formats.read_model(init)
TENSORS = formats.parameter_tensors(config)
NUM_PARAMS = sum(n for _, n in TENSORS)
STEPS, ROWS, T = 2, 16, 32
COMMON = ["-e", init, "-i", shard, "-j", "", "-pad", "1", "-t", str(T), "-x", str(STEPS), "-s", "0", "-l", "1e-3",
          "-c", "0.1", "-clip", "1.0"]
VS_FP32 = (2.5e-2, 5e-2)   # the first window, the later ones (see the docstring)
TRACE = re.compile(r"\[cpucuda nccl\] rank (\d+): (\S+) n=")


def train(name, program, P, K, B, extra=(), env=None):
    """One run; dict(losses, grads (windows, params), comm {rank: {op: count}}, stdout) or None."""
    dump = os.path.join(work, name + ".grads")
    args = COMMON + ["-b", str(B), "-k", str(K), "-dump_grads", dump] + list(extra)
    full_env = dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1", CPUCUDA_NCCL_TRACE="1")
    full_env.update(env or {})
    cmd = (["mpirun", "-np", str(P), "--oversubscribe"] if have_mpi else []) + [program] + args
    rc, so, se = run(cmd, env=full_env, timeout=900)
    if rc != 0:
        checks.check(False, f"{name} runs", tail(se))
        return None
    grads = np.fromfile(dump, dtype=np.float32)
    return dict(losses=step_losses(so), grads=grads.reshape(-1, NUM_PARAMS), comm=collectives(so), stdout=so)


def collectives(stdout):
    """The emulated NCCL's trace: (rank 0's collectives in each window, every rank's total). A window of
    rank 0 is what it calls between the previous step line (or the 'steps:' line) and its own step line;
    the setup's collectives (the ranks' agreement on flags and data) come before it."""
    windows, current, totals = [], None, {}
    for line in stdout.splitlines():
        m = TRACE.match(line)
        if m:
            rank, op = int(m.group(1)), m.group(2)
            totals.setdefault(rank, collections.Counter())[op] += 1
            if rank == 0 and current is not None:
                current[op] += 1
        elif line.startswith("steps:"):
            current = collections.Counter()
        elif line.startswith("step ") and current is not None:
            windows.append(dict(current))
            current = collections.Counter()
    return dict(windows=windows, totals=totals)


def compare(name, a, ref, grad_tols, loss_tol):
    """grad_tols: the first window's tolerance, then the later windows'."""
    if a is None or ref is None:
        return None
    shape_ok = a["grads"].shape == ref["grads"].shape
    errs = [worst_tensor_error(x, y, TENSORS) for x, y in zip(a["grads"], ref["grads"])]
    tols = [grad_tols[min(w, 1)] for w in range(len(errs))]
    ok = shape_ok and all(e[0] <= t for e, t in zip(errs, tols))
    g = max(errs, default=(9.9, "?"))
    checks.check(ok, f"{name}: every window's gradient",
                 "per window worst ||dg||/||g|| (tolerance): "
                 + ", ".join(f"{e[0]:.1e} in {e[1]} ({t:.0e})" for e, t in zip(errs, tols)))
    l_err = max((abs(x - y) for x, y in zip(a["losses"], ref["losses"])), default=9.9)
    checks.check(len(a["losses"]) == len(ref["losses"]) == STEPS and l_err <= loss_tol, f"{name}: losses",
                 f"max |dloss| = {l_err:.1e} (tolerance {loss_tol:.0e}): {a['losses']}")
    return g[0]


if need(train_cu):
    cpu_ref = train("cpu_P1_K1", "./train_gpt2", 1, 1, ROWS)
    cu_ref = train("cu_P1_K1", train_cu, 1, 1, ROWS)
    if cu_ref is not None:
        counts = [l.split("| N ")[1].split()[0] for l in cu_ref["stdout"].splitlines() if "| N " in l]
        print(f"     valid targets per window of {ROWS} rows x T={T}: {counts}")
    compare("CUDA P=1 K=1 B=16 vs train_gpt2 (bf16 vs fp32)", cu_ref, cpu_ref, VS_FP32, 1e-2)
    grid = [(P, K) for P in (1, 2, 4) for K in (1, 2, 4)] if have_mpi else [(1, 2), (1, 4)]
    if not have_mpi:
        checks.skip("P > 1 on the emulation", "mpirun not found")
    worst_vs_cpu = 0.0
    for P, K in grid:
        if (P, K) == (1, 1):
            continue
        B = ROWS // (P * K)
        r = train(f"cu_P{P}_K{K}", train_cu, P, K, B)
        e = compare(f"CUDA P={P} K={K} B={B} vs train_gpt2", r, cpu_ref, VS_FP32, 1e-2)
        worst_vs_cpu = max(worst_vs_cpu, e or 0.0)
        compare(f"CUDA P={P} K={K} B={B} vs CUDA P=1 K=1 B=16", r, cu_ref, (1e-4, 1e-4), 1e-4)
        if r is not None:
            want = {"reduce-scatter": 1, "all-reduce": 1, "all-gather": 1}
            windows, totals = r["comm"]["windows"], r["comm"]["totals"]
            same = len(totals) == P and all(t == totals[0] for t in totals.values())
            checks.check(len(windows) == STEPS and all(w == want for w in windows) and same,
                         f"CUDA P={P} K={K}: 1 reduce-scatter, 1 scalar all-reduce, 1 all-gather per window (emulated NCCL's count)",
                         f"rank 0's windows: {windows}; every rank the same collectives in all: {same}")
    print(f"     worst tensor error of the CUDA trainer against train_gpt2 over the grid: {worst_vs_cpu:.2e}")
part_done("P x K grid", t0)

# --- 6. resume, and AddressSanitizer on a short P=2 run ------------------------------------------------
t0 = time.time()
if need(train_cu) and have_mpi:
    def resume_run(out, steps, extra=()):
        args = COMMON[:COMMON.index("-x")] + ["-x", str(steps), "-s", "0", "-l", "1e-3", "-b", "2", "-k", "2", "-n", "2",
                                             "-o", out] + list(extra)
        return run(["mpirun", "-np", "2", "--oversubscribe", train_cu] + args,
                   env=dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1"), timeout=600)
    full, part = os.path.join(work, "resume_full"), os.path.join(work, "resume_part")
    r1, so_full, se1 = resume_run(full, 4)
    r2, so_a, se2 = resume_run(part, 2)
    r3, so_b, se3 = resume_run(part, 4, ["-y", "1"])
    ok = r1 == r2 == r3 == 0
    same_model = ok and open(os.path.join(full, "model_00000004.bin"), "rb").read() == \
        open(os.path.join(part, "model_00000004.bin"), "rb").read()
    same_losses = ok and step_losses(so_full) == step_losses(so_a) + step_losses(so_b)
    checks.check(same_model and same_losses, "CUDA P=2 resume at step 2 is bit-identical (losses, model_4 bytes)",
                 f"losses {step_losses(so_full)}" if ok else tail(se1 + se2 + se3))
asan_cu = os.path.join(EMU, "asan", "train_gpt2cu")
if need(asan_cu):
    args = COMMON[:COMMON.index("-x")] + ["-x", "2", "-s", "0", "-b", "2", "-k", "2"]
    cmd = (["mpirun", "-np", "2", "--oversubscribe"] if have_mpi else []) + [asan_cu] + args
    # leak checking is off here: OpenMPI's own allocations at exit are reported as leaks
    rc, so, se = run(cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1", CPUCUDA_THREADS="1", ASAN_OPTIONS="detect_leaks=0"), timeout=900)
    asan = [l for l in se.splitlines() if "AddressSanitizer" in l]
    checks.check(rc == 0 and not asan and len(step_losses(so)) == 2, "CUDA trainer P=2 under AddressSanitizer: no error",
                 f"2 steps, losses {step_losses(so)}" if rc == 0 and not asan else (asan[0] if asan else tail(se)))
part_done("resume and AddressSanitizer training", t0)
print(f"     [all of the emulated CUDA checks: {time.time() - t_start:.0f} s]")
checks.exit()
