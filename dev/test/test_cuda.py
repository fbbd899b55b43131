#!/usr/bin/env python3
"""The CUDA trainer. On a machine without a GPU (CI) it checks that `make` built train_gpt2cu and
test_gpt2cu, and reports the GPU runs as SKIPPED (not passed). On a GPU it runs test_gpt2cu against
the PyTorch debug state and a short training run."""
import os
import shutil
import subprocess
import sys

from harness import BUILD, PYTHON, REPO, Checks, ensure_tinyshakespeare, run, step_losses, tail

checks = Checks()
for binary in ("train_gpt2cu", "test_gpt2cu"):
    path = os.path.join(REPO, binary)
    checks.check(os.path.exists(path) and os.access(path, os.X_OK), f"{binary} compiled and linked",
                 "built by make with nvcc for GPU_ARCH (default sm_80 sm_90)")

# The kernel harnesses of dev/cuda (one file per kernel) must keep compiling with the kernels they test.
rc, so, se = run(["make", "-C", "dev/cuda"], timeout=900)
checks.check(rc == 0, "dev/cuda kernel harnesses compiled and linked", "make -C dev/cuda" if rc == 0 else tail(se))


def gpu_present():
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if not gpu_present():
    checks.skip("test_gpt2cu on a GPU", "no GPU on this machine")
    checks.skip("train_gpt2cu trains on tinyshakespeare", "no GPU on this machine")
    checks.exit()

ts = ensure_tinyshakespeare()
model, debug = os.path.join(BUILD, "model_tiny.bin"), os.path.join(BUILD, "debug_tiny.bin")
if not os.path.exists(debug):
    rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "1337", "--B", "4", "--T", "32", "--K", "3",
                      "--input_bin", os.path.join(ts, "tiny_shakespeare_train.bin"),
                      "--write_checkpoint", model, "--write_debug_state", debug])
    checks.check(rc == 0, "oracle writes the debug state", tail(se, 2))
for attn in ("flash", "ref"):   # both attentions (-attn of train_gpt2cu) against the same oracle
    rc, so, se = run(["./test_gpt2cu", model, debug, attn])
    sys.stdout.write(so)
    sys.stdout.write(se)
    fails = [l for l in so.splitlines() if l.startswith("FAIL")]
    # run_tests.py counts test_gpt2cu's own PASS/FAIL lines; this check makes this script's exit code say it too
    checks.check(rc == 0 and not fails, f"test_gpt2cu ({attn} attention) exits 0 with no FAIL line",
                 f"exit code {rc}, {len(fails)} FAIL line(s)" + (f": {tail(se)}" if rc != 0 and not fails else ""))
rc, so, se = run(["./train_gpt2cu", "-e", "tiny", "-i", os.path.join(ts, "tiny_shakespeare_train.bin"),
                  "-j", os.path.join(ts, "tiny_shakespeare_val.bin"), "-tk", os.path.join(ts, "gpt2_tokenizer.bin"),
                  "-b", "8", "-t", "64", "-x", "60", "-l", "2e-3", "-v", "30", "-s", "60"])
losses = step_losses(so)
checks.check(rc == 0 and len(losses) == 60 and sum(losses[-5:]) < sum(losses[:5]) - 2.5,
             "train_gpt2cu trains on tinyshakespeare", f"loss {losses[:1]} -> {losses[-1:]}" if losses else tail(se))
checks.exit()
