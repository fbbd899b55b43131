#!/usr/bin/env python3
"""train_gpt2.c against the PyTorch oracle: the oracle writes a tiny model and a debug state with
a masked window (K=3 micro-steps whose valid counts differ), then ./test_gpt2 checks logits, loss,
every gradient tensor, the window's exactness and the loss trajectory (see test_gpt2.c)."""
import os
import sys

from harness import BUILD, PYTHON, Checks, ensure_tinyshakespeare, run, tail

checks = Checks()
ts = ensure_tinyshakespeare()
model, debug = os.path.join(BUILD, "model_tiny.bin"), os.path.join(BUILD, "debug_tiny.bin")
rc, so, se = run([PYTHON, "train_gpt2.py", "--model", "tiny", "--seed", "1337", "--B", "4", "--T", "32", "--K", "3",
                  "--input_bin", os.path.join(ts, "tiny_shakespeare_train.bin"),
                  "--write_checkpoint", model, "--write_debug_state", debug])
if not checks.check(rc == 0, "oracle writes the debug state", tail(se or so, 2)):
    checks.exit()
rc, so, se = run(["./test_gpt2", model, debug])
sys.stdout.write(so)
sys.stdout.write(se)
if rc != 0 and "FAIL" not in so:
    checks.check(False, "test_gpt2", f"exit code {rc}: {tail(se)}")
sys.exit(1 if rc != 0 else checks.failed and 1)
