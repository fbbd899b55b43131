#!/usr/bin/env python3
"""train_gpt2.c against the PyTorch oracle: the oracle writes a tiny model and a debug state with
a masked window (K=3 micro-steps whose valid counts differ), then ./test_gpt2 checks logits, loss,
every gradient tensor, the window's exactness and the loss trajectory (see test_gpt2.c)."""
import sys

from harness import Suite, ensure_tiny_debug_state, run, tail

suite = Suite(__file__)


@suite.case
def test_gpt2():
    """./test_gpt2 on the oracle's debug state: logits, loss, gradients, the window, the trajectory."""
    model, debug = ensure_tiny_debug_state()
    suite.check(True, "oracle writes the debug state", debug)
    rc, so, se = run(["./test_gpt2", model, debug])
    sys.stdout.write(so)   # its own PASS/FAIL lines count in run_tests.py's totals
    sys.stdout.write(se)
    failed = sum(1 for line in so.splitlines() if line.startswith("FAIL"))
    suite.failed += failed
    if rc != 0 and not failed:
        suite.check(False, "test_gpt2", f"exit code {rc}: {tail(se)}")


if __name__ == "__main__":
    suite.main()
