#!/usr/bin/env python3
"""Runs the project's test suites and adds up their PASS / FAIL / SKIP lines.

    make test                                     every suite, every case (what CI runs)
    make check                                    the five-minute subset (CHECK below)
    python3 dev/test/run_tests.py --list          every suite:case
    python3 dev/test/run_tests.py --only mpi      one suite
    python3 dev/test/run_tests.py --only mpi:grid cpucuda:harness_gelu
                                                  cases by name or prefix of a name

Each suite is a program (dev/test/test_NAME.py, known here as NAME) whose cases run by name (harness.Suite).
Its check lines are echoed as they come. A suite that exits non-zero without printing a FAIL line counts
as one failure (a crash is never a pass). The last line is "N passed, N failed, N skipped".
"""
import argparse
import os
import subprocess
import sys
import time

from harness import BUILD, PYTHON, REPO, rerun_command

# (name, title), in the order make test runs them; the program is dev/test/test_<name>.py.
SUITES = [
    ("data", "data scripts"),
    ("oracle", "PyTorch oracle"),
    ("reference", "CPU trainer vs PyTorch"),
    ("cpu_vector", "CPU trainer: the widest vectors the CPU has"),
    ("cli", "CPU trainer command line"),
    ("signal", "a run told to stop saves itself (SIGTERM, SIGUSR1)"),
    ("mpi", "distributed window (MPI)"),
    ("fuzz", "hostile inputs (fuzz)"),
    ("sanitize", "hostile inputs under AddressSanitizer and UBSan"),
    ("sft", "SFT rows and exact accumulation"),
    ("hf", "Hugging Face, HellaSwag, plots"),
    ("cuda", "CUDA trainer"),
    ("cpucuda", "CUDA code on the CPU emulation"),
    ("cuda_fp32", "CUDA trainer, fp32 build, emulated, vs the CPU trainer"),
    ("cuda_plan", "CUDA trainer on the CPU emulation: -plan, GELU fallback, in-place reduce-scatter"),
    ("flash", "flash attention (CPU emulation) and the cost model"),
]

# make check: the inner loop, about five minutes on 2 cores once the programs are built. One case or a
# few of each layer, chosen so that a break in the CPU forward/backward, in the window's normalization,
# in the communication or in a CUDA kernel fails at least one of them (README, Tests; dev/test/
# check_teeth.sh shows three such breaks caught). Left out: most of the fuzz suite, the grids beyond P=2,
# the sanitizers, the fp32 CUDA build, Hugging Face, flash attention, the data scripts.
CHECK = [
    "reference",                                   # train_gpt2 vs PyTorch: logits, every gradient, the window, the trajectory
    "cpu_vector",                                  # the matmul's vector path is the CPU's widest, same bits as plain C
    "cli:resume",                                  # bit-identical resume
    "cli:bad",                                     # bad flags: one line, exit 1
    "signal:sigterm_P1",                           # SIGTERM: the window ends with a checkpoint, resume gives the same bits
    "mpi:grid_P2_K2",                              # one mpirun grid point at P=2 against P=1 and PyTorch
    "mpi:collectives",                             # one reduce-scatter, one all-reduce, one all-gather a window
    "fuzz:quick",                                  # the bad-input basics
    "sft:window_exact_at_any_K",                   # K x B = 1 x KB on padded, masked rows
    "cpucuda:self_checks",                         # the emulation stops a deadlock, a lost lane, ...
    "cpucuda:quick_harnesses",                     # every dev/cuda harness at its smallest shape
    "cpucuda:grid_P2_K1",                          # one emulated CUDA window at P=2 against train_gpt2
]


def script(name):
    return os.path.join("dev", "test", f"test_{name}.py")


def parse_specs(specs):
    """['mpi', 'cpucuda:harness_gelu', ...] -> {suite: None (all cases) or [case, ...]}, in SUITES order;
    exits 2 naming an unknown suite."""
    known = [n for n, _ in SUITES]
    wanted = {}
    for spec in specs:
        suite, _, case = spec.partition(":")
        if suite not in known:
            sys.exit(f"error: --only {spec}: no suite '{suite}' (suites: {', '.join(known)})")
        if not case:
            wanted[suite] = None
        elif wanted.get(suite, []) is not None:
            wanted.setdefault(suite, []).append(case)
    return {n: wanted[n] for n in known if n in wanted}


def list_cases():
    for name, title in SUITES:
        p = subprocess.run([PYTHON, script(name), "--list"], cwd=REPO, capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{name}: --list failed: {p.stderr.strip()}")
            continue
        print(f"{name}  ({title})")
        for line in p.stdout.splitlines():
            print(f"  {name}:{line}")


def run_suites(plan):
    """plan: {suite: None or [case, ...]}. Returns the exit code."""
    os.makedirs(BUILD, exist_ok=True)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    failed_names, reruns = [], []
    titles = dict(SUITES)
    for name, cases in plan.items():
        title, prog = titles[name], script(name)
        if not os.path.exists(os.path.join(REPO, prog)):
            print(f"FAIL {title}: {prog} is missing")
            counts["FAIL"] += 1
            continue
        cmd = [PYTHON, prog] + (["--only"] + cases if cases else [])
        print(f"=== {title}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        suite_fail = 0
        for line in p.stdout:
            print(line, end="", flush=True)
            word = line.split(" ", 1)[0]
            if word in counts:
                counts[word] += 1
                if word == "FAIL":
                    suite_fail += 1
                    failed_names.append(f"{title}: {line.strip()[5:]}")
            elif line.strip().startswith("rerun alone: "):
                reruns.append(line.strip()[len("rerun alone: "):])
        rc = p.wait()
        if rc != 0 and suite_fail == 0:
            print(f"FAIL {title}: exited with code {rc} without reporting a failed check")
            counts["FAIL"] += 1
            failed_names.append(f"{title}: exit code {rc}")
            reruns.append(rerun_command(name, "").rstrip(":"))
        print(f"=== {title}: {time.time() - t0:.0f} s", flush=True)
    if failed_names:
        print("failed checks:")
        for n in failed_names:
            print(f"  {n}")
        print("rerun them alone:")
        for r in dict.fromkeys(reruns):
            print(f"  {r}")
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return 1 if counts["FAIL"] else 0


def main():
    ap = argparse.ArgumentParser(description="Runs the test suites (all of them by default).")
    ap.add_argument("--list", action="store_true", help="print every suite:case and exit")
    ap.add_argument("--only", nargs="+", metavar="SUITE[:CASE]", help="run only these suites or cases (a case name may be a prefix)")
    ap.add_argument("--check", action="store_true", help="run the five-minute subset (make check)")
    a = ap.parse_args()
    if a.list:
        list_cases()
        return 0
    if a.only and a.check:
        sys.exit("error: --only and --check: give one of them")
    specs = a.only or (CHECK if a.check else [n for n, _ in SUITES])
    return run_suites(parse_specs(specs))


if __name__ == "__main__":
    sys.exit(main())
