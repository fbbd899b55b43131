#!/usr/bin/env python3
"""The CUDA trainer. On a machine without a GPU (CI) it checks that `make` built train_gpt2cu and
test_gpt2cu, and reports the GPU runs as SKIPPED (not passed). On a GPU it runs test_gpt2cu against
the PyTorch debug state and a short training run."""
import os
import re
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

# What the real compiler says of each kernel's resources, which the CPU emulation cannot: ptxas -v for
# sm_80 and sm_90, as `make train_gpt2cu` compiles. A bandwidth-bound kernel that spills registers moves
# bytes through local memory that it exists not to move, so none of them may. The flash attention
# kernels hold whole tiles in registers by design (on sm_90 the hs=64 backward spills 8 bytes): their
# spills are printed, not checked.
NVCC = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
for arch in ("80", "90"):
    rc, so, se = run([NVCC, "-O3", "-std=c++17", "--use_fast_math", f"-gencode=arch=compute_{arch},code=sm_{arch}",
                      "-Xptxas", "-v", "-c", "train_gpt2.cu", "-o", os.devnull], timeout=600)
    kernel, spills = None, {}
    for line in se.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?(\w+)'?", line)
        if m:
            kernel = m.group(1)
        m = re.search(r"(\d+) bytes spill stores", line)
        if m and kernel and int(m.group(1)) > 0:
            spills[kernel] = int(m.group(1))
    names = subprocess.run(["c++filt"], input="\n".join(spills), capture_output=True, text=True).stdout.split("\n")
    demangled = dict(zip(spills, names)) if len(names) >= len(spills) else {k: k for k in spills}
    flash = {k: v for k, v in spills.items() if "flash" in demangled[k]}
    others = {k: v for k, v in spills.items() if k not in flash}
    kernels = se.count("Compiling entry function")
    checks.check(rc == 0 and kernels > 0 and not others, f"ptxas sm_{arch}: no kernel outside flash attention spills registers",
                 f"{kernels} kernels; " + ("spills: " + ", ".join(f"{demangled[k][:60]} {v} B" for k, v in others.items())
                                            if others else "none spill")
                 + ("; flash (not checked): " + ", ".join(f"{demangled[k][:50]} {v} B" for k, v in flash.items()) if flash else "")
                 if rc == 0 else tail(se))


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
