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
from harness import BUILD, REPO, Suite, ensure_tinyshakespeare, fixture, fresh_dir, logged, run, tail  # noqa: E402

suite = Suite(__file__)
WORK = os.path.join(BUILD, "cli")


def work(name):
    return os.path.join(WORK, name)


@fixture
def data():
    """A fresh work directory and the tinyshakespeare shards: dict(train, val, tok)."""
    fresh_dir(WORK)
    ts = ensure_tinyshakespeare()
    return dict(train=os.path.join(ts, "tiny_shakespeare_train.bin"), val=os.path.join(ts, "tiny_shakespeare_val.bin"),
                tok=os.path.join(ts, "gpt2_tokenizer.bin"))


def same_file(a, b):
    return open(a, "rb").read() == open(b, "rb").read()


# --- training works -------------------------------------------------------------------------------
@suite.case
def training():
    """40 steps on tinyshakespeare lower the loss; validation at steps 0, 20 and the end; a sample."""
    d, log = data(), work("training.log")
    rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", d["train"], "-j", d["val"], "-tk", d["tok"], "-b", "4", "-t", "32",
                      "-x", "40", "-l", "2e-3", "-v", "20", "-m", "4", "-s", "40", "-g", "16", "-log", log])
    losses = logged(log, "trl")
    ok = rc == 0 and len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    suite.check(ok, "training lowers the loss", f"first 5 mean {np.mean(losses[:5]):.3f}, last 5 mean {np.mean(losses[-5:]):.3f}"
                if losses else tail(se))
    vals = logged(log, "tel")
    suite.check(len(vals) == 3, "validation loss at steps 0, 20 and the end", f"{len(vals)} validation losses logged: {vals}")
    suite.check("sample:" in so, "sample printed", "")


# --- bad input: one line on stderr naming the culprit, exit code 1 -----------------------------------
def write_bytes(name, content):
    path = work(name)
    with open(path, "wb") as f:
        f.write(content)
    return path


@fixture
def broken_shards():
    """Broken copies of the training shard: dict(name: path)."""
    train = data()["train"]
    good = open(train, "rb").read()
    header = np.frombuffer(good[:1024], dtype=np.int32).copy()
    header[1] = 7
    big_token = work("big_token.bin")
    formats.write_shard(big_token, np.array([50256] + [60000] * 200, dtype=np.uint16))
    return dict(bad_magic=write_bytes("bad_magic.bin", np.array([123] + [0] * 255, dtype=np.int32).tobytes() + b"\0" * 64),
                bad_version=write_bytes("bad_version.bin", header.tobytes() + good[1024:1024 + 2 * int(header[2])]),
                truncated=write_bytes("truncated.bin", good[:1024 + 1000]), big_token=big_token)


@fixture
def truncated_checkpoint():
    """The first 5000 bytes of a checkpoint written by a one-step run."""
    rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", data()["train"], "-j", "", "-x", "1", "-s", "0", "-t", "16", "-n", "1",
                      "-o", work("ck")])
    ckpt = work("ck/model_00000001.bin")
    if rc != 0 or not os.path.exists(ckpt):
        raise RuntimeError(f"a one-step run writing a checkpoint: exit {rc}: {tail(se)}")
    return write_bytes("truncated_ckpt.bin", open(ckpt, "rb").read()[:5000])


def base_args():
    return ["./train_gpt2", "-e", "tiny", "-j", "", "-s", "0", "-x", "1", "-t", "32"]


def expect_error(name, cmd, needle):
    """Exit 1, the last stderr line an 'error:' naming `needle`, no crash, no NaN printed."""
    rc, so, se = run(cmd, timeout=60)
    lines = [l for l in se.strip().splitlines() if l.strip()]
    ok = rc == 1 and len(lines) >= 1 and lines[-1].startswith("error:") and needle in lines[-1] \
        and "Segmentation" not in se and "nan" not in so.lower()
    suite.check(ok, f"bad input: {name}", f"exit {rc}: {lines[-1] if lines else '(no message)'}")


@suite.case
def bad_shards():
    """A missing, mis-stamped, truncated shard or one with a token id >= vocab: one line, exit 1."""
    s, base = broken_shards(), base_args()
    expect_error("missing data file", base + ["-i", work("nope.bin")], "no data shard matches")
    expect_error("shard with a wrong magic", base + ["-i", s["bad_magic"]], "magic")
    expect_error("shard with a wrong version", base + ["-i", s["bad_version"]], "version")
    expect_error("truncated shard", base + ["-i", s["truncated"]], "truncated")
    expect_error("token id >= vocab", base + ["-i", s["big_token"]], "token id 60000")


@suite.case
def bad_checkpoints():
    """A checkpoint with a wrong magic, truncated or missing: one line, exit 1."""
    train = data()["train"]
    expect_error("checkpoint with a wrong magic", ["./train_gpt2", "-e", broken_shards()["bad_magic"], "-i", train, "-j", ""], "magic")
    expect_error("truncated checkpoint", ["./train_gpt2", "-e", truncated_checkpoint(), "-i", train, "-j", ""], "truncated")
    expect_error("missing checkpoint", ["./train_gpt2", "-e", work("none.bin"), "-i", train], "-e")


@suite.case
def bad_flags():
    """Flags out of range, malformed or unknown, and a resume with nothing to resume: one line, exit 1."""
    base = base_args() + ["-i", data()["train"]]
    expect_error("T > max_seq_len", base + ["-t", "128"], "max_seq_len")
    expect_error("B*T does not divide the total batch", base + ["-d", "1000"], "multiple of B*T*P")
    expect_error("unknown flag", base + ["-frobnicate", "1"], "unknown flag")
    expect_error("malformed integer", base + ["-b", "four"], "-b expects an integer")
    expect_error("malformed number", base + ["-l", "1e-3x"], "-l expects a number")
    expect_error("flag without a value", base + ["-b"], "-b expects")
    expect_error("non-positive B", base + ["-b", "0"], "-b expects an integer >= 1")
    expect_error("malformed K schedule", base + ["-k_schedule", "0:8,x"], "-k_schedule")
    expect_error("resume without a checkpoint", base + ["-y", "1", "-o", work("empty")], "no complete checkpoint")


# --- a window whose targets are all masked: a warning and no update, never a NaN -----------------------
@suite.case
def all_masked():
    """An all-masked window: the update skipped with a warning, never a NaN."""
    data()
    masked, log = work("all_masked.bin"), work("all_masked.log")
    formats.write_shard(masked, np.array([50256] + list(range(100, 400)), dtype=np.uint16), mask=np.zeros(301, dtype=np.uint8))
    rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", masked, "-j", masked, "-t", "32", "-b", "2", "-x", "2", "-v", "1",
                      "-m", "1", "-s", "0", "-log", log], timeout=60)
    skipped = logged(log, "skip")
    ok = rc == 0 and len(skipped) == 2 and logged(log, "valid") == [0, 0] and "no valid target in the window" in se \
        and "nan" not in so.lower()
    suite.check(ok, "all-masked window: update skipped with a warning, no NaN",
                f"exit {rc}; {len(skipped)} skipped steps logged; {tail(se, 1)}")


# --- resume: stop at step 2, resume, compare with the run that never stopped, bit for bit -------------
def resume_run(out, steps, log, extra=()):
    d = data()
    return run(["./train_gpt2", "-e", "tiny", "-i", d["train"], "-j", d["val"], "-v", "2", "-m", "2", "-s", "2", "-g", "8",
                "-tk", d["tok"], "-t", "32", "-b", "2", "-k", "2", "-x", str(steps), "-n", "2", "-o", out, "-l", "1e-3",
                "-c", "0.1", "-log", log] + list(extra))


@suite.case
def resume():
    """Stopped at step 2 and resumed, a run's losses and final model equal those of one that never stopped."""
    full, part = work("full"), work("part")
    logs = [work(n) for n in ("full.log", "part_a.log", "part_b.log")]
    rc1, _, se1 = resume_run(full, 4, logs[0])
    rc2, _, se2 = resume_run(part, 2, logs[1])
    rc3, _, se3 = resume_run(part, 4, logs[2], ["-y", "1"])
    if not rc1 == rc2 == rc3 == 0:
        raise RuntimeError(tail(se1 + se2 + se3))
    l_full, l_a, l_b = (logged(p, "trl") for p in logs)
    same_losses = len(l_full) == 4 and l_full == l_a + l_b
    same_model = same_file(os.path.join(full, "model_00000004.bin"), os.path.join(part, "model_00000004.bin"))
    suite.check(same_losses and same_model, "resume is bit-identical",
                f"losses {l_full} vs {l_a} + {l_b}; final model files {'identical' if same_model else 'differ'}")


# --- -shuffle 1: resume redraws the row order of the epoch it stopped in --------------------------------
def shuffle_run(out, steps, log, extra=()):
    return run(["./train_gpt2", "-e", "tiny", "-i", small_shard(), "-j", "", "-s", "0", "-t", "32", "-b", "2", "-k", "2",
                "-x", str(steps), "-n", "2", "-o", out, "-l", "1e-3", "-shuffle", "1", "-log", log] + list(extra))


@fixture
def small_shard():
    """10 rows of T=32, 4 rows per step: step 3 crosses into epoch 1 after a resume at step 2."""
    small = work("small_train.bin")
    formats.write_shard(small, formats.read_shard(data()["train"])[0][:10 * 32 + 1])
    return small


@fixture
def shuffle_runs():
    """-shuffle 1: 4 steps straight, 2 then resumed to 4, and 4 unshuffled: their losses and directories."""
    sfull, spart, splain = work("shuffle_full"), work("shuffle_part"), work("plain")
    logs = [work(n) for n in ("shuffle_full.log", "shuffle_a.log", "shuffle_b.log", "plain.log")]
    results = [shuffle_run(sfull, 4, logs[0]), shuffle_run(spart, 2, logs[1]), shuffle_run(spart, 4, logs[2], ["-y", "1"]),
               shuffle_run(splain, 4, logs[3], ["-shuffle", "0"])]
    if any(rc != 0 for rc, _, _ in results):
        raise RuntimeError(tail("".join(se for _, _, se in results)))
    return dict(full=sfull, part=spart, stdout_full=results[0][1], losses=[logged(p, "trl") for p in logs])


@suite.case
def shuffle_resume():
    """-shuffle 1: a resume across an epoch boundary is bit-identical, and shuffling changes the run."""
    r = shuffle_runs()
    full, a, b, plain = r["losses"]
    same = len(full) == 4 and full == a + b and \
        same_file(os.path.join(r["full"], "model_00000004.bin"), os.path.join(r["part"], "model_00000004.bin"))
    suite.check(same and full != plain and "shuffled each epoch" in r["stdout_full"],
                "-shuffle 1: resume across an epoch boundary is bit-identical", f"losses {full}; unshuffled {plain}")


@suite.case
def bad_resume_seed():
    """-shuffle 1: resuming with another -seed (another row order) is refused with one line."""
    # Its own 2-step run rather than shuffle_runs' four: this case is in make check.
    out = work("shuffle_seed")
    rc, so, se = shuffle_run(out, 2, work("shuffle_seed_a.log"))
    if rc != 0:
        raise RuntimeError(f"a 2-step -shuffle 1 run: {tail(se)}")
    rc, so, se = shuffle_run(out, 4, work("shuffle_seed_b.log"), ["-y", "1", "-seed", "7"])
    suite.check(rc == 1 and "-shuffle/-seed" in se and len(se.strip().splitlines()) == 1,
                "-shuffle 1: resuming with another -seed is refused", f"exit {rc}: {tail(se, 2)}")


# --- a run killed while checkpointing leaves the previous checkpoint intact -------------------------------
def has_complete_checkpoint(directory):
    # A complete checkpoint is a DONE_<8 digits>; a DONE_<s>.tmp (killed while writing it) is not one.
    return os.path.isdir(directory) and any(re.fullmatch(r"DONE_\d{8}", n) for n in os.listdir(directory))


@suite.case
def killed_checkpoint():
    """A run killed at 0.6..1.8 s, perhaps while checkpointing: its latest complete checkpoint loads."""
    train = data()["train"]
    kill_dir = work("kill")
    survived = attempted = 0
    for delay in [0.6, 0.9, 1.2, 1.5, 1.8]:
        shutil.rmtree(kill_dir, ignore_errors=True)
        p = subprocess.Popen(["./train_gpt2", "-e", "tiny", "-i", train, "-j", "", "-s", "0", "-t", "32", "-b", "1",
                              "-x", "1000", "-n", "1", "-o", kill_dir], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if not has_complete_checkpoint(kill_dir):
            continue
        rc, so, se = run(["./train_gpt2", "-e", "tiny", "-i", train, "-j", "", "-s", "0", "-t", "32", "-b", "1", "-x", "1000",
                          "-n", "0", "-o", kill_dir, "-y", "1", "-x", "0"], timeout=60)
        attempted += 1
        survived += rc == 0 and "resumed from step" in so
    suite.check(attempted >= 1 and survived == attempted, "killed mid-run, the latest complete checkpoint loads",
                f"{survived} of {attempted} runs killed after their first checkpoint (kills at 0.6..1.8 s) resumed cleanly")


if __name__ == "__main__":
    suite.main()
