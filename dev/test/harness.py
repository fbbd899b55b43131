"""Shared bits of the test scripts: running commands, reporting checks, the repository's paths.

Every test program prints one line per check: "PASS name: detail", "FAIL name: detail" or
"SKIP name: reason", and exits 1 if any check failed. dev/test/run_tests.py adds them up.

A test program is a Suite of cases, each a function registered by name with @suite.case, so that any
one of them runs alone:

    python3 dev/test/test_mpi.py --list
    python3 dev/test/test_mpi.py --only grid_P2 resume      (names or prefixes of names)
    python3 dev/test/run_tests.py --only mpi:grid_P2         (the same through the runner)

What several cases need (a reference run, a model file) is a @fixture: computed on first use, once.
"""
import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(REPO, "build", "test")
SHARED = os.path.abspath(os.path.join(REPO, "..", "shared"))
PYTHON = sys.executable

# mpirun as root needs these; --oversubscribe lets 4 ranks share 2 cores.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}


class Checks:
    """Counts and prints checks; exit() ends the script with 1 if any failed."""

    def __init__(self):
        self.failed = 0
        self.reported = 0   # check and skip lines so far

    def check(self, ok, name, detail=""):
        self.reported += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail != "" else ""), flush=True)
        if not ok:
            self.failed += 1
        return ok

    def skip(self, name, reason):
        self.reported += 1
        print(f"SKIP {name}: {reason}", flush=True)

    def exit(self):
        sys.exit(1 if self.failed else 0)


class Skip(Exception):
    """Raised by a case (or a fixture) that cannot run on this machine: one SKIP line, not a pass."""


class Suite(Checks):
    """A test program's cases, run in the order they are defined, or only those named on the command line.

    A case is a function of no argument that reports through suite.check() (any number of lines), or
    reports nothing and returns: then one PASS line named after it, with the string it returned as the
    detail. An exception is one FAIL line with the place it was raised, Skip one SKIP line. A case that
    failed prints the command that reruns it alone."""

    def __init__(self, path):
        super().__init__()
        self.script = os.path.relpath(os.path.abspath(path), REPO)
        self.name = suite_name(path)
        self.cases = []

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def select(self, only):
        """The cases named by `only` (exact names or prefixes), in definition order; exits 2 on a name
        that matches none."""
        if not only:
            return list(self.cases)
        names = [c.__name__ for c in self.cases]
        for want in only:
            if not any(n == want or n.startswith(want) for n in names):
                print(f"error: {self.script}: --only {want}: no such case (--list lists them)", file=sys.stderr)
                sys.exit(2)
        return [c for c in self.cases if any(c.__name__ == w or c.__name__.startswith(w) for w in only)]

    def run_case(self, fn):
        name, failed_before, reported_before, t0 = fn.__name__, self.failed, self.reported, time.time()
        try:
            detail = fn()
            if self.reported == reported_before:
                self.check(True, name, detail if detail is not None else "ok")
        except Skip as e:
            self.skip(name, str(e))
        except Exception as e:  # AssertionError included: a case may assert
            where = next((f for f in reversed(traceback.extract_tb(e.__traceback__))
                          if f.filename.startswith(os.path.dirname(os.path.abspath(__file__)))), None)
            at = f" ({os.path.basename(where.filename)} line {where.lineno})" if where else ""
            self.check(False, name, f"{type(e).__name__}: {e}{at}")
        if self.failed != failed_before:
            print(f"     rerun alone: {rerun_command(self.name, name)}", flush=True)
        print(f"     [{self.name}:{name}: {time.time() - t0:.0f} s]", flush=True)

    def main(self, argv=None):
        ap = argparse.ArgumentParser(prog=self.script, description=(sys.modules["__main__"].__doc__ or "").split("\n")[0])
        ap.add_argument("--list", action="store_true", help="print the names of the cases and exit")
        ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases (names or prefixes of names)")
        a = ap.parse_args(argv)
        if a.list:
            for c in self.cases:
                doc = (c.__doc__ or "").strip().split("\n")[0]
                print(f"{c.__name__}" + (f"  {doc}" if doc else ""))
            return
        os.makedirs(BUILD, exist_ok=True)
        for fn in self.select(a.only):
            self.run_case(fn)
        self.exit()


def suite_name(path):
    """test_mpi.py -> mpi: the name run_tests.py knows the suite by."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem[len("test_"):] if stem.startswith("test_") else stem


def rerun_command(suite, case):
    return f"python3 dev/test/run_tests.py --only {suite}:{case}"


def fixture(fn):
    """What several cases share (a run, a file): computed once, on first use. A failure is remembered
    and raised again in every case that needs it, so each such case fails saying why, without
    repeating the work."""
    outcome = {}

    @functools.wraps(fn)
    def get():
        if "value" not in outcome and "error" not in outcome:
            try:
                outcome["value"] = fn()
            except Exception as e:
                outcome["error"] = e
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
    return get


def run(cmd, env=None, timeout=600, cwd=REPO):
    """Runs cmd (a list), returns (exit code, stdout, stderr). A timeout counts as exit code 124."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "2")
    if env:
        full_env.update(env)
    try:
        p = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        return 124, e.stdout or "", (e.stderr or "") + f"\ntimed out after {timeout} s"


def tail(text, lines=6):
    return " | ".join(text.strip().splitlines()[-lines:])


def read_log(path):
    """The trainer's key:value log (-log FILE, or -o's main.log; doc/formats.md) as a list of dicts, one
    per line, numbers as floats ('s' as an int). A missing file is an empty log."""
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path, encoding="utf-8"):
        fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
        if "s" in fields:
            out.append({k: (int(v) if k == "s" else float(v)) for k, v in fields.items()})
    return out


def logged(path, key):
    """The values of `key` in the log's lines that have it, in order: logged(p, "trl") is the loss of
    every window trained, logged(p, "valid") its count of valid targets, "tel" the validation losses."""
    return [line[key] for line in read_log(path) if key in line]


def fresh_dir(path):
    """path as an empty directory (a case's work directory: last run's files removed); returns it."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def ensure_tinyshakespeare():
    """Shards of tinyshakespeare under build/test/ts, from ../shared (offline) or downloaded."""
    out = os.path.join(BUILD, "ts")
    train = os.path.join(out, "tiny_shakespeare_train.bin")
    if not os.path.exists(train):
        local = os.path.join(SHARED, "data", "tinyshakespeare", "input.txt")
        cmd = [PYTHON, "dev/data/tinyshakespeare.py", "--out_dir", out]
        if os.path.exists(local):
            cmd += ["--input", local]
        rc, so, se = run(cmd)
        if rc != 0:
            raise RuntimeError(f"dev/data/tinyshakespeare.py failed: {tail(se)}")
    return out


def ensure_tiny_debug_state(fresh=True):
    """(model, debug state) under build/test: the oracle's tiny model (seed 1337) and a debug state of a
    masked K=3 window from tinyshakespeare (test_gpt2.c and test_gpt2.cu check against it). fresh=False
    keeps files already there (from this run of make test's reference suite)."""
    model, debug = os.path.join(BUILD, "model_tiny.bin"), os.path.join(BUILD, "debug_tiny.bin")
    if fresh or not (os.path.exists(model) and os.path.exists(debug)):
        ts = ensure_tinyshakespeare()
        rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "1337", "--B", "4", "--T", "32", "--K", "3",
                          "--input_bin", os.path.join(ts, "tiny_shakespeare_train.bin"),
                          "--write_checkpoint", model, "--write_debug_state", debug])
        if rc != 0:
            raise RuntimeError(f"the oracle could not write the debug state: {tail(se or so, 2)}")
    return model, debug


def ensure_synthetic():
    """Padded-layout SFT shards (prompts masked, lengths varying) under build/test/synthetic."""
    out = os.path.join(BUILD, "synthetic")
    if not os.path.exists(os.path.join(out, "synthetic_train_000000.bin")):
        rc, so, se = run([PYTHON, "dev/data/synthetic.py", "--shards", "--n", "3000", "--seed", "7",
                          "--out_dir", out, "--val_examples", "300"])
        if rc != 0:
            raise RuntimeError(f"dev/data/synthetic.py failed: {tail(se)}")
    return out


def worst_tensor_error(a, b, tensors):
    """max over the tensors [(name, numel), ...] laid end to end in a and b of ||a - b|| / ||b||, and
    that tensor's name (a zero reference tensor: the absolute norm)."""
    import numpy as np
    worst, name, off = 0.0, "", 0
    for tname, n in tensors:
        ref = np.linalg.norm(b[off:off + n].astype(np.float64))
        err = np.linalg.norm(a[off:off + n].astype(np.float64) - b[off:off + n]) / (ref if ref > 0 else 1.0)
        if err > worst:
            worst, name = err, tname
        off += n
    return worst, name
