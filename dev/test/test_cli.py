#!/usr/bin/env python3
"""train_gpt2 as a user runs it: training on tinyshakespeare lowers the loss and prints validation
and a sample; every kind of bad input gives one clear line and exit code 1; an interrupted run
resumes bit for bit; a run killed while writing a checkpoint leaves the previous one loadable."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, REPO, Checks, ensure_tinyshakespeare, run, step_losses, tail  # noqa: E402

checks = Checks()
ts = ensure_tinyshakespeare()
train = os.path.join(ts, "tiny_shakespeare_train.bin")
val = os.path.join(ts, "tiny_shakespeare_val.bin")
tok = os.path.join(ts, "gpt2_tokenizer.bin")
work = os.path.join(BUILD, "cli")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
TINY = ["./train_gpt2", "-e", "tiny", "-i", train, "-j", val, "-tk", tok, "-b", "4", "-t", "32"]

# --- training works -------------------------------------------------------------------------
rc, so, se = run(TINY + ["-x", "40", "-l", "2e-3", "-v", "20", "-m", "4", "-s", "40", "-g", "16"])
losses = step_losses(so)
ok = rc == 0 and len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
checks.check(ok, "training lowers the loss", f"first 5 mean {np.mean(losses[:5]):.3f}, last 5 mean {np.mean(losses[-5:]):.3f}"
             if losses else tail(se))
checks.check(so.count("val loss") == 3, "validation loss at steps 0, 20 and the end", f"{so.count('val loss')} val lines")
checks.check("sample:" in so, "sample printed", "")

# --- bad input: one line on stderr naming the culprit, exit code 1 -------------------------------
def write_bytes(name, data):
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(data)
    return path

good = open(train, "rb").read()
header = np.frombuffer(good[:1024], dtype=np.int32).copy()
bad_magic = write_bytes("bad_magic.bin", np.array([123] + [0] * 255, dtype=np.int32).tobytes() + b"\0" * 64)
h = header.copy(); h[1] = 7
bad_version = write_bytes("bad_version.bin", h.tobytes() + good[1024:1024 + 2 * int(header[2])])
truncated = write_bytes("truncated.bin", good[:1024 + 1000])
big_token = os.path.join(work, "big_token.bin")
formats.write_shard(big_token, np.array([50256] + [60000] * 200, dtype=np.uint16))
model = os.path.join(work, "model.bin")
rc, so, se = run(TINY + ["-x", "0", "-v", "0", "-s", "0", "-n", "1", "-o", os.path.join(work, "m")])
rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", train, "-j", "", "-x", "1", "-s", "0", "-t", "16", "-n", "1",
                  "-o", os.path.join(work, "ck")])
ckpt = os.path.join(work, "ck", "model_00000001.bin")
truncated_ckpt = write_bytes("truncated_ckpt.bin", open(ckpt, "rb").read()[:5000]) if os.path.exists(ckpt) else "missing"

BASE = ["./train_gpt2", "-e", "tiny", "-j", "", "-s", "0", "-x", "1", "-t", "32"]
bad_cases = [
    ("missing data file", BASE + ["-i", os.path.join(work, "nope.bin")], "no data shard matches"),
    ("shard with a wrong magic", BASE + ["-i", bad_magic], "magic"),
    ("shard with a wrong version", BASE + ["-i", bad_version], "version"),
    ("truncated shard", BASE + ["-i", truncated], "truncated"),
    ("token id >= vocab", BASE + ["-i", big_token], "token id 60000"),
    ("checkpoint with a wrong magic", ["./train_gpt2", "-e", bad_magic, "-i", train, "-j", ""], "magic"),
    ("truncated checkpoint", ["./train_gpt2", "-e", truncated_ckpt, "-i", train, "-j", ""], "truncated"),
    ("missing checkpoint", ["./train_gpt2", "-e", os.path.join(work, "none.bin"), "-i", train], "-e"),
    ("T > max_seq_len", BASE + ["-i", train, "-t", "128"], "max_seq_len"),
    ("B*T does not divide the total batch", BASE + ["-i", train, "-d", "1000"], "multiple of B*T*P"),
    ("unknown flag", BASE + ["-i", train, "-frobnicate", "1"], "unknown flag"),
    ("malformed integer", BASE + ["-i", train, "-b", "four"], "-b expects an integer"),
    ("malformed number", BASE + ["-i", train, "-l", "1e-3x"], "-l expects a number"),
    ("flag without a value", BASE + ["-i", train, "-b"], "-b expects"),
    ("non-positive B", BASE + ["-i", train, "-b", "0"], "-b expects an integer >= 1"),
    ("malformed K schedule", BASE + ["-i", train, "-k_schedule", "0:8,x"], "-k_schedule"),
    ("resume without a checkpoint", BASE + ["-i", train, "-y", "1", "-o", os.path.join(work, "empty")], "no complete checkpoint"),
]
for name, cmd, needle in bad_cases:
    rc, so, se = run(cmd, timeout=60)
    lines = [l for l in se.strip().splitlines() if l.strip()]
    ok = rc == 1 and len(lines) >= 1 and lines[-1].startswith("error:") and needle in lines[-1] \
        and "Segmentation" not in se and "nan" not in so.lower()
    checks.check(ok, f"bad input: {name}", f"exit {rc}: {lines[-1] if lines else '(no message)'}")

# --- a window whose targets are all masked: a warning and no update, never a NaN ---------------------
masked = os.path.join(work, "all_masked.bin")
formats.write_shard(masked, np.array([50256] + list(range(100, 400)), dtype=np.uint16), mask=np.zeros(301, dtype=np.uint8))
rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", masked, "-j", masked, "-t", "32", "-b", "2", "-x", "2", "-v", "1",
                  "-m", "1", "-s", "0"], timeout=60)
ok = rc == 0 and so.count("skipped (N = 0)") == 2 and "no valid target in the window" in se and "nan" not in so.lower()
checks.check(ok, "all-masked window: update skipped with a warning, no NaN",
             f"exit {rc}; {so.count('skipped (N = 0)')} skipped steps; {tail(se, 1)}")

# --- resume: stop at step 2, resume, compare with the run that never stopped, bit for bit ---------
def train_run(out, steps, extra=()):
    return run(["./train_gpt2", "-e", "tiny", "-i", train, "-j", val, "-v", "2", "-m", "2", "-s", "2", "-g", "8",
                "-tk", tok, "-t", "32", "-b", "2", "-k", "2", "-x", str(steps), "-n", "2", "-o", out, "-l", "1e-3",
                "-c", "0.1"] + list(extra))

full, part = os.path.join(work, "full"), os.path.join(work, "part")
rc1, so_full, se1 = train_run(full, 4)
rc2, so_a, se2 = train_run(part, 2)
rc3, so_b, se3 = train_run(part, 4, ["-y", "1"])
ok = rc1 == rc2 == rc3 == 0
same_losses = ok and step_losses(so_full) == step_losses(so_a) + step_losses(so_b)
same_model = ok and open(os.path.join(full, "model_00000004.bin"), "rb").read() == open(os.path.join(part, "model_00000004.bin"), "rb").read()
checks.check(same_losses and same_model, "resume is bit-identical",
             f"losses {step_losses(so_full)} vs {step_losses(so_a)} + {step_losses(so_b)}; final model files "
             f"{'identical' if same_model else 'differ'}" if ok else tail(se1 + se2 + se3))

# --- -shuffle 1: resume redraws the row order of the epoch it stopped in ---------------------------
# 10 rows of T=32, 4 rows per step: step 3 crosses into epoch 1 after the resume at step 2.
small = os.path.join(work, "small_train.bin")
formats.write_shard(small, formats.read_shard(train)[0][:10 * 32 + 1])


def shuffle_run(out, steps, extra=()):
    return run(["./train_gpt2", "-e", "tiny", "-i", small, "-j", "", "-s", "0", "-t", "32", "-b", "2", "-k", "2",
                "-x", str(steps), "-n", "2", "-o", out, "-l", "1e-3", "-shuffle", "1"] + list(extra))


sfull, spart, splain = (os.path.join(work, n) for n in ("shuffle_full", "shuffle_part", "plain"))
rc1, so_full, se1 = shuffle_run(sfull, 4)
rc2, so_a, se2 = shuffle_run(spart, 2)
rc3, so_b, se3 = shuffle_run(spart, 4, ["-y", "1"])
rc4, so_plain, se4 = shuffle_run(splain, 4, ["-shuffle", "0"])
ok = rc1 == rc2 == rc3 == rc4 == 0
same = ok and step_losses(so_full) == step_losses(so_a) + step_losses(so_b) and \
    open(os.path.join(sfull, "model_00000004.bin"), "rb").read() == open(os.path.join(spart, "model_00000004.bin"), "rb").read()
differs = ok and step_losses(so_full) != step_losses(so_plain)
checks.check(same and differs and "shuffled each epoch" in so_full, "-shuffle 1: resume across an epoch boundary is bit-identical",
             f"losses {step_losses(so_full)}; unshuffled {step_losses(so_plain)}" if ok else tail(se1 + se2 + se3 + se4))
rc, so, se = shuffle_run(spart, 4, ["-y", "1", "-seed", "7"])
checks.check(rc == 1 and "-shuffle/-seed" in se and len(se.strip().splitlines()) == 1,
             "-shuffle 1: resuming with another -seed is refused", f"exit {rc}: {tail(se, 2)}")

# --- a run killed while checkpointing leaves the previous checkpoint intact -----------------------
kill_dir = os.path.join(work, "kill")
survived = attempted = 0
for attempt, delay in enumerate([0.6, 0.9, 1.2, 1.5, 1.8]):
    shutil.rmtree(kill_dir, ignore_errors=True)
    p = subprocess.Popen(["./train_gpt2", "-e", "tiny", "-i", train, "-j", "", "-s", "0", "-t", "32", "-b", "1",
                          "-x", "1000", "-n", "1", "-o", kill_dir], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # A complete checkpoint is a DONE_<8 digits>; a DONE_<s>.tmp (killed while writing it) is not one.
    if not os.path.isdir(kill_dir) or not any(re.fullmatch(r"DONE_\d{8}", n) for n in os.listdir(kill_dir)):
        continue
    rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", train, "-j", "", "-s", "0", "-t", "32", "-b", "1", "-x", "1000",
                      "-n", "0", "-o", kill_dir, "-y", "1", "-x", "0"], timeout=60)
    attempted += 1
    survived += rc == 0 and "resumed from step" in so
checks.check(attempted >= 1 and survived == attempted, "killed mid-run, the latest complete checkpoint loads",
             f"{survived} of {attempted} runs killed after their first checkpoint (kills at 0.6..1.8 s) resumed cleanly")
checks.exit()
