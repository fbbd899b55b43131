#!/usr/bin/env python3
"""Hostile inputs against train_gpt2 built with AddressSanitizer and UBSan (make sanitize).

The fuzz suite's train_gpt2 cases (dev/test/test_fuzz.py: the command line, the model, the loader,
checkpoints and resume, one process and under mpirun) run here with build/sanitize/train_gpt2: their
own checks as in the fuzz suite, then one more per case, that no sanitizer reported anything while it
ran. The fuzz checks alone could pass over a finding: a sanitizer stopping a program that was about to
fail with exit 1 anyway (1 is also ASan's own exit code), or a rank stopping under mpirun, where any
non-zero exit is what is expected. So every report ends in a file of the report directory (reports
are kept under build/test/sanitize_reports/<case>/), whatever the exit code says.

    python3 dev/test/test_sanitize.py --list
    python3 dev/test/test_sanitize.py --only shards resume

Left out (see CASES): the train_gpt2cu cases (cu_flags, cu_checkpoints, cu_nonfinite): another
program, the CUDA trainer on the emulation, which make cpucuda-asan builds with AddressSanitizer.
"""
import atexit
import glob
import itertools
import os
import re
import shutil

import harness
from harness import BUILD, REPO, Suite, fresh_dir

SANITIZED = os.path.join(REPO, "build", "sanitize", "train_gpt2")
REPORTS = os.path.join(BUILD, "sanitize_reports")

# GCC's combined runtime takes its common flags (log_path, allocator_may_return_null) from
# UBSAN_OPTIONS for some reports and from ASAN_OPTIONS for others (leaks), and prints UBSan's own
# reports on stderr whatever log_path says: both variables get the same settings, and every stderr
# that holds a report is written to the report directory too (scanned_run). allocator_may_return_null:
# an impossible allocation (-b 1000000 -t 64) is a NULL the trainer must handle with one error line,
# not a sanitizer abort. exitcode=66 (not 1): a sanitizer stop also fails the fuzz check, which
# expects 1.
COMMON = "allocator_may_return_null=1:exitcode=66"
SAN_ENV = {
    "ASAN_OPTIONS": f"log_path={os.path.join(REPORTS, 'asan')}:{COMMON}",
    "UBSAN_OPTIONS": f"log_path={os.path.join(REPORTS, 'ubsan')}:print_stacktrace=1:{COMMON}",
}
# Before test_fuzz is imported: it reads these once, and every run it makes inherits os.environ.
os.environ.update(SAN_ENV, FUZZ_TRAINER=SANITIZED, FUZZ_WORK="fuzz_sanitize")
import test_fuzz as fuzz  # noqa: E402

# The fuzz cases run here, in the fuzz suite's order: every train_gpt2 case. About 130 s in all on 2 cores.
CASES = [
    "quick_flags", "quick_shards", "quick_checkpoints", "quick_nonfinite",
    "flags",                # the command line only, but cheap: every flag's bad values, past int too
    "overflow",             # sizes past int and past memory, checkpoint and shard headers
    "shards",               # every broken shard with -i, -j and -pad 1
    "checkpoints",          # every broken checkpoint with -e
    "vocabulary",           # a V=1000 model, sampling, tokenizers that do not fit
    "nonfinite",            # NaN windows and a NaN validation loss (exp_fast on NaN)
    "resume",               # damaged and copied checkpoint directories
    "disk",                 # full disks under a checkpoint and main.log
    "valid_edges",          # edge inputs that train
    "mpi",                  # ranks that disagree, failures on one rank or every rank
    "mpi_validation_rows",  # -m over P and B
]

suite = Suite(__file__)
fuzz.suite = suite      # the fuzz cases' checks are this suite's lines, and count in its exit code
REPORT_IDS = itertools.count()
MARK = re.compile(r"runtime error:|Sanitizer|==\d+==ERROR")


def scanned_run(cmd, env=None, timeout=600, cwd=REPO):
    """harness.run, keeping as a report file any stderr (or stdout) that holds a sanitizer's report.
    Under mpirun without leak detection: OpenMPI's runtime leaves some hundred allocations at
    MPI_Finalize (made in MPI_Init, in its progress thread, and in components unloaded by then, so that
    their stacks cannot even be named). The trainer's own leaks are looked for in the one-process runs,
    whose MPI (a singleton) leaves none."""
    if cmd and os.path.basename(cmd[0]) == "mpirun":
        env = dict(env or {}, **{k: v + ":detect_leaks=0" for k, v in SAN_ENV.items()})
    rc, so, se = harness.run(cmd, env=env, timeout=timeout, cwd=cwd)
    if MARK.search(se) or MARK.search(so):
        with open(os.path.join(REPORTS, f"stderr.{next(REPORT_IDS)}"), "w") as f:
            f.write(f"command: {' '.join(cmd)}\nexit code: {rc}\n{se}\n{so}")
    return rc, so, se


fuzz.run = scanned_run


# What allocator_may_return_null=1 prints where it returns NULL: the request asked for it (the overflow
# case's -b 1000000 -t 64, whose NULL the fuzz check sees handled with one error line), not a defect.
REFUSED = "AddressSanitizer failed to allocate"


def findings(p):
    """The lines of a report file that say what was found (an ASan ERROR, a UBSan runtime error, a
    leak), but the refused allocations."""
    return [l.strip() for l in open(p, errors="replace") if MARK.search(l) and "SUMMARY" not in l and REFUSED not in l]


def refused_only(p):
    return not findings(p) and REFUSED in open(p, errors="replace").read()


def summary(p):
    """What a report found and where: 'ERROR: AddressSanitizer: heap-buffer-overflow, in f file:line'."""
    lines = open(p, errors="replace").read().splitlines()
    what = (findings(p) or lines[:1] or [""])[0]
    what = re.sub(r" on address 0x\w+.*", "", re.sub(r"^==\d+==", "", what))
    frame = next((re.sub(r"^#0 0x[0-9a-f]+ ", "", l.strip()) for l in lines if l.strip().startswith("#0 ")), "")
    return what + (f", {frame}" if frame else "")


def reports():
    """The report files written since the last case's were filed away (file_reports)."""
    return sorted(p for p in glob.glob(os.path.join(REPORTS, "*")) if os.path.isfile(p))


def file_reports(name, new):
    """Into REPORTS/<case>/: the next case's reports are then every file left at the top, even one whose
    name (a process id, which the sanitizers write them under) comes round again."""
    if not new:
        return []
    d = os.path.join(REPORTS, name)
    os.makedirs(d, exist_ok=True)
    moved = []
    for p in new:
        q = os.path.join(d, os.path.basename(p))
        while os.path.exists(q):
            q += "+"
        shutil.move(p, q)
        moved.append(q)
    return moved


@harness.fixture
def sanitized():
    """The sanitized trainer starts (make sanitize); an empty report directory."""
    fresh_dir(REPORTS)
    if not os.path.exists(SANITIZED):
        raise RuntimeError("build/sanitize/train_gpt2 is not built (make sanitize)")
    rc, so, se = scanned_run([SANITIZED, "-h"], timeout=60)
    if rc != 0 or reports():
        raise RuntimeError(f"build/sanitize/train_gpt2 -h: exit {rc}: {harness.tail(se, 2)}")


def sanitized_case(name):
    fn = getattr(fuzz, name)

    def case():
        sanitized()
        skipped = False
        try:
            fn()
        except harness.Skip:
            skipped = True
            raise
        finally:  # also when a fixture's run failed: the report says why
            new = file_reports(name, reports())
            refused = [p for p in new if refused_only(p)]
            bad = [p for p in new if p not in refused]
            also = f" ({len(refused)} file(s) of refused allocations only, asked for)" if refused else ""
            if bad or not skipped:
                suite.check(not bad, f"{name}: no sanitizer report",
                            f"{len(bad)} report(s) in {os.path.relpath(os.path.dirname(bad[0]), REPO)}, the first {os.path.basename(bad[0])}: "
                            f"{summary(bad[0])}{also}" if bad else f"0 reports{also}")
    case.__name__, case.__doc__ = name, fn.__doc__
    return case


for _name in CASES:
    suite.case(sanitized_case(_name))


if __name__ == "__main__":
    atexit.register(fuzz.print_counts)
    suite.main()
