#!/usr/bin/env python3
"""Runs every test program of the project and adds up their PASS / FAIL / SKIP lines.

    make test        (builds first, then runs this)

Each suite is a command; its check lines are echoed as they come. A suite that exits non-zero
without printing a FAIL line counts as one failure (a crash is never a pass). The last line is
"N passed, N failed, N skipped".
"""
import os
import subprocess
import sys
import time

from harness import BUILD, PYTHON, REPO

SUITES = [
    ("data scripts", [PYTHON, "dev/test/test_data.py"]),
    ("PyTorch oracle", [PYTHON, "dev/test/test_oracle.py"]),
    ("CPU trainer vs PyTorch", [PYTHON, "dev/test/test_reference.py"]),
    ("CPU trainer command line", [PYTHON, "dev/test/test_cli.py"]),
    ("distributed window (MPI)", [PYTHON, "dev/test/test_mpi.py"]),
    ("hostile inputs (fuzz)", [PYTHON, "dev/test/test_fuzz.py"]),
    ("SFT rows and exact accumulation", [PYTHON, "dev/test/test_sft.py"]),
    ("Hugging Face, HellaSwag, plots", [PYTHON, "dev/test/test_hf.py"]),
    ("CUDA trainer", [PYTHON, "dev/test/test_cuda.py"]),
    ("CUDA code on the CPU emulation", [PYTHON, "dev/test/test_cpucuda.py"]),
    ("CUDA trainer, fp32 build, emulated, vs the CPU trainer", [PYTHON, "dev/test/test_cuda_fp32.py"]),
    ("CUDA trainer on the CPU emulation: -plan, GELU fallback, in-place reduce-scatter", [PYTHON, "dev/test/test_cuda_plan.py"]),
    ("flash attention (CPU emulation) and the cost model", [PYTHON, "dev/test/test_flash.py"]),
]


def main():
    os.makedirs(BUILD, exist_ok=True)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    failed_names = []
    for title, cmd in SUITES:
        if not os.path.exists(os.path.join(REPO, cmd[1])):
            print(f"FAIL {title}: {cmd[1]} is missing")
            counts["FAIL"] += 1
            continue
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
        rc = p.wait()
        if rc != 0 and suite_fail == 0:
            print(f"FAIL {title}: exited with code {rc} without reporting a failed check")
            counts["FAIL"] += 1
            failed_names.append(f"{title}: exit code {rc}")
        print(f"=== {title}: {time.time() - t0:.0f} s", flush=True)
    if failed_names:
        print("failed checks:")
        for name in failed_names:
            print(f"  {name}")
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    sys.exit(1 if counts["FAIL"] else 0)


if __name__ == "__main__":
    main()
