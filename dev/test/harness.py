"""Shared bits of the test scripts: running commands, reporting checks, the repository's paths.

Every test program prints one line per check: "PASS name: detail", "FAIL name: detail" or
"SKIP name: reason", and exits 1 if any check failed. dev/test/run_tests.py adds them up.
"""
import os
import subprocess
import sys

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

    def check(self, ok, name, detail=""):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            self.failed += 1
        return ok

    def skip(self, name, reason):
        print(f"SKIP {name}: {reason}", flush=True)

    def exit(self):
        sys.exit(1 if self.failed else 0)


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


def step_losses(stdout):
    """The loss of every 'step i/n | loss x' line, in order."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("step ") and "| loss " in line:
            out.append(float(line.split("| loss ")[1].split()[0]))
    return out


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
