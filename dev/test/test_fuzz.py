#!/usr/bin/env python3
"""Hostile inputs against train_gpt2 (one process and under mpirun) and train_gpt2cu, executed on the
CPU emulation (dev/cpucuda): every flag and checkpoint case, and the non-finite stops.

Every case crafts one bad input (a flag value, a shard, a checkpoint, a tokenizer, a checkpoint
directory, ranks that disagree, numbers that turn NaN) and checks the promise itself:
  - bad input: exit code 1 (under mpirun: non-zero, never the timeout), exactly one error line
    naming the flag or file (under mpirun too: from the rank that differs, or from rank 0 when all
    fail alike), no crash, no NaN printed as a loss, nothing written to the output directory, the
    previous checkpoint byte for byte intact;
  - valid edge input: exit 0 and finite losses;
every case under a timeout (a hang fails). The expected messages are the words of the promise (the
flag, the file, "non-finite"), not text copied from the code. The last line counts cases by category.
"""
import collections
import glob
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, REPO, Checks, ensure_tinyshakespeare, run, step_losses, tail  # noqa: E402

checks = Checks()
counts = collections.Counter()
t_start = time.time()
work = os.path.join(BUILD, "fuzz")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
ts = ensure_tinyshakespeare()
tokens, _ = formats.read_shard(os.path.join(ts, "tiny_shakespeare_val.bin"))
tok_file = os.path.join(ts, "gpt2_tokenizer.bin")
ENV1 = {"OMP_NUM_THREADS": "1"}
HAS_MPI = shutil.which("mpirun") is not None


def path(name):
    return os.path.join(work, name)


def shard(name, toks, mask=None):
    p = path(name)
    formats.write_shard(p, np.asarray(toks, dtype=np.uint16), mask)
    return p


def raw(name, data):
    p = path(name)
    with open(p, "wb") as f:
        f.write(data)
    return p


def header(*values):
    h = np.zeros(formats.HEADER_INTS, dtype=np.int32)
    h[:len(values)] = values
    return h.tobytes()


train = shard("train.bin", tokens[:40 * 16 + 1])        # 40 rows of T=16
train_half = shard("train_half.bin", tokens[:20 * 16 + 1])
val = shard("val.bin", tokens[2000:2000 + 12 * 16 + 1])   # 12 rows of T=16
BASE = ["-e", "tiny", "-i", train, "-j", val, "-t", "16", "-b", "2", "-x", "2", "-v", "0", "-s", "0", "-m", "4"]


def error_lines(stderr):
    return [l for l in stderr.splitlines() if l.strip() and "warning:" not in l]


def crashed(text):
    return any(w in text for w in ("Segmentation", "core dumped", "Assertion", "Aborted", "Floating point exception"))


def snapshot(directory):
    """{file: bytes} of a directory (empty if it does not exist)."""
    if not os.path.isdir(directory):
        return {}
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, n))}


def expect_error(category, name, args, needle, binary="./train_gpt2", out_dir=None, mpi_cmd=None, timeout=60):
    """A bad input: one line naming `needle`, exit 1, nothing written to out_dir (its files unchanged)."""
    before = snapshot(out_dir) if out_dir else None
    if mpi_cmd is not None:
        rc, so, se = run(mpi_cmd, env=dict(MPI_ENV, **ENV1), timeout=timeout)
        errs = [l for l in se.splitlines() if "error:" in l]
        ok = rc not in (0, 124) and len(errs) == 1 and needle in errs[0]
    else:
        rc, so, se = run([binary] + args, env=ENV1, timeout=timeout)
        errs = error_lines(se)
        ok = rc == 1 and len(errs) == 1 and errs[0].startswith("error:") and needle in errs[0]
    ok = ok and not crashed(se) and "loss nan" not in so and "loss inf" not in so
    written = ""
    if out_dir is not None and snapshot(out_dir) != before:
        ok, written = False, f"; {out_dir} changed"
    counts[category] += 1
    shown = errs[:2] if errs else tail(se + so, 3)
    checks.check(ok, f"{category}: {name}", f"exit {rc}{' (timed out)' if rc == 124 else ''}: {shown}{written}")
    return so, se


def expect_training(category, name, args, steps, extra_check=None, binary="./train_gpt2", timeout=120):
    """A valid edge input: exit 0, `steps` finite losses."""
    rc, so, se = run([binary] + args, env=ENV1, timeout=timeout)
    losses = step_losses(so)
    ok = rc == 0 and len(losses) == steps and all(np.isfinite(losses)) and not crashed(se)
    detail = f"exit {rc}, {len(losses)} finite losses" if rc == 0 else tail(se, 2)
    if ok and extra_check is not None:
        ok, detail = extra_check(so, se)
    counts[category] += 1
    checks.check(ok, f"{category}: {name}", detail)
    return so, se


def mpirun2(args_rank0, args_rank1, binary="./train_gpt2"):
    """Two ranks with their own arguments (MPMD: `mpirun -np 1 a : -np 1 b`)."""
    return ["mpirun", "--oversubscribe", "-np", "1", binary] + args_rank0 + [":", "-np", "1", binary] + args_rank1


# --- flags: every flag's range, malformed values, combinations ------------------------------------
BAD_VALUES = {
    "-b": ["0", "-1", "x", "2147483648", "1.5", ""], "-t": ["0", "-3", "abc"], "-d": ["0", "-2", "1e3"],
    "-k": ["0", "-2", "2147483648"], "-x": ["-2", "x", "99999999999"], "-l": ["-1e-3", "nan", "inf", "1e40", "abc"],
    "-u": ["-5"], "-q": ["-0.1", "1.5", "nan"], "-c": ["-1", "inf"], "-clip": ["-1", "nan"],
    "-beta1": ["1", "2", "-0.1"], "-beta2": ["1", "1.01"], "-eps": ["0", "-1", "-1e-8"], "-z": ["2", "-1"],
    "-sync_each_microstep": ["2"], "-grad_bf16": ["2"], "-pad": ["2"], "-shuffle": ["-1"], "-v": ["-1"],
    "-m": ["0", "-4"], "-s": ["-1"], "-g": ["0"], "-n": ["-1"], "-y": ["2", "-1"], "-overwrite": ["2"],
    "-seed": ["2147483648", "x", "-2147483649"],
}
MORE_BAD = {"-b": [" 4x", "0x4", "4.0"], "-t": ["1e1"], "-d": ["9223372036854775808", "32.5"], "-x": ["2147483648"],
            "-l": ["1e-3x", "--1", "0x"], "-q": ["inf", "-inf"], "-eps": ["nan", "-inf"], "-u": ["2147483648"],
            "-v": ["x"], "-s": ["1.0"], "-g": ["-5"], "-n": ["1e2"], "-z": ["1.0"], "-beta1": ["nan", "1.0000001"],
            "-clip": ["-inf"], "-c": ["-1e-30"], "-m": ["2147483648"], "-y": ["yes"]}
for flag, values in MORE_BAD.items():
    BAD_VALUES[flag] = BAD_VALUES.get(flag, []) + values
FLAG_CASES = [(f"{flag} {value!r}", BASE + [flag, value], f"flag {flag} expects")
              for flag, values in BAD_VALUES.items() for value in values]
FLAG_CASES += [
    ("unknown flag", BASE + ["-frobnicate", "1"], "-frobnicate"),
    ("flag without a value", BASE + ["-b"], "flag -b expects"),
    ("-d and -k together", BASE + ["-d", "64", "-k", "2"], "-d, -k and -k_schedule"),
    ("-sync_each_microstep 1 with -z 0", BASE + ["-sync_each_microstep", "1", "-z", "0"], "-sync_each_microstep"),
    ("-n without -o", BASE + ["-n", "1"], "flag -n"),
    ("-y 1 without -o", BASE + ["-y", "1"], "flag -y"),
    ("-y 1 with -overwrite 1", BASE + ["-y", "1", "-overwrite", "1", "-o", path("never")], "-overwrite"),
    ("-o longer than a path buffer", BASE + ["-o", path("o" * 1000)], "flag -o"),
    ("-dump_grads longer than a path buffer", BASE + ["-dump_grads", path("g" * 1000)], "flag -dump_grads"),
    ("-b 100000000 (B*T past int)", BASE + ["-b", "100000000", "-t", "64"], "-b"),
    ("-b 2147483647 -t 2", BASE + ["-b", "2147483647", "-t", "2"], "-b"),
]
for value in ["0:0", "1:4", "0:4,0:2", "0:4,x", "0:", ":4", "0:-1", "0:2,-5:1", "0:4,,8:2"]:
    FLAG_CASES.append((f"-k_schedule {value!r}", BASE + ["-k_schedule", value], "-k_schedule"))
NEEDS_NO_O = ("-n without -o", "-y 1 without -o")
for name, args, needle in FLAG_CASES:  # each with an output directory that must stay unwritten
    has_o = "-o" in args or name in NEEDS_NO_O
    expect_error("flags", name, args if has_o else ["-o", path("flag_out")] + args, needle, out_dir=path("flag_out"))

# --- overflow: sizes from flags and headers -----------------------------------------------------------
OVERFLOW = [
    ("-d 137438953472 (K past int)", BASE + ["-d", "137438953472"], "-d"),
    ("-d 9223372036854775807", BASE + ["-d", "9223372036854775807"], "-d"),
    ("-k_schedule 0:99999999999", BASE + ["-k_schedule", "0:99999999999"], "-k_schedule"),
    ("-k_schedule start 99999999999", BASE + ["-k_schedule", "0:2,99999999999:1"], "-k_schedule"),
    ("-k_schedule 0:99999999999999999999 (past 64 bits)", BASE + ["-k_schedule", "0:99999999999999999999"], "-k_schedule"),
    ("-d 99999999999999999999 (past 64 bits)", BASE + ["-d", "99999999999999999999"], "flag -d"),
]
for name, args, needle in OVERFLOW:
    expect_error("overflow", name, args, needle)
# Checkpoint headers whose sizes multiply past 2^63 bytes (some wrap to a small number).
for name, cfg in [("L*4*C*C", (64, 50257, 1 << 30, 1, 1 << 20, 50304)), ("Vp*C", (64, 50257, 1, 1, 1 << 30, 1 << 30)),
                  ("maxT*C", (1 << 30, 50257, 1, 1, 1 << 30, 50304)),
                  ("wrapping to 0 mod 2^64", (1, 1, 1 << 24, 1, 1 << 20, 1))]:
    p = raw(f"overflow_{len(counts)}.bin", header(formats.MODEL_MAGIC, 3, *cfg) + b"\0" * 4096)
    expect_error("overflow", f"checkpoint header: {name}", BASE + ["-e", p], p)
expect_error("overflow", "-b 1000000 -t 64: activations past this machine's memory", BASE + ["-b", "1000000", "-t", "64"], "-b 1000000")
p = raw("shard_count_huge.bin", header(formats.DATA_MAGIC, 1, 2**31 - 1) + b"\0" * 64)
expect_error("overflow", "shard header: 2^31-1 tokens in a small file", BASE + ["-i", p], p)

# --- shards: broken files, bad token ids and mask bytes, found when the shard is opened ---------------
good = open(train, "rb").read()
n_tok = (len(good) - 1024) // 2
late = np.array(tokens[:40 * 16 + 1], dtype=np.uint16)
late[-1] = 50257                                           # the very last token: the last row's target
mask2 = np.ones(len(late), dtype=np.uint8)
mask2[-3] = 2
SHARDS = [
    ("wrong magic", raw("s_magic.bin", header(123, 1, 10) + b"\0" * 20), "magic"),
    ("version 0", raw("s_v0.bin", header(formats.DATA_MAGIC, 0, n_tok) + good[1024:]), "version"),
    ("version 3", raw("s_v3.bin", header(formats.DATA_MAGIC, 3, n_tok) + good[1024:]), "version"),
    ("truncated body", raw("s_trunc.bin", good[:-10]), "s_trunc.bin"),
    ("trailing bytes", raw("s_trail.bin", good + b"\0\0"), "s_trail.bin"),
    ("shorter than its header", raw("s_short.bin", good[:100]), "s_short.bin"),
    ("negative token count", raw("s_neg.bin", header(formats.DATA_MAGIC, 1, -5)), "s_neg.bin"),
    ("no tokens", shard("s_empty.bin", []), "s_empty.bin"),
    ("fewer than T+1 tokens", shard("s_tiny.bin", tokens[:10]), "s_tiny.bin"),
    ("token id 65535 at position 0", shard("s_big0.bin", [65535] + list(tokens[:400])), "token id"),
    ("token id 50257 at the last position", shard("s_late.bin", late), "token id"),
    ("mask byte 2", raw("s_mask2.bin", header(formats.DATA_MAGIC, 2, len(late)) + np.minimum(late, 50256).astype(np.uint16).tobytes()
                        + mask2.tobytes()), "mask byte"),
    ("mask byte 255", raw("s_mask255.bin", header(formats.DATA_MAGIC, 2, len(late)) + np.minimum(late, 50256).astype(np.uint16).tobytes()
                          + np.full(len(late), 255, np.uint8).tobytes()), "mask byte"),
    ("a directory", work, "'" + work),
    ("no file matches", path("nothing_*.bin"), "nothing_*.bin"),
]
for name, p, needle in SHARDS:
    so, se = expect_error("shards", f"-i {name}", BASE + ["-i", p], needle)
    if name.startswith("token id 50257 at the last"):
        counts["shards"] += 1
        checks.check("step " not in so, "shards: a bad token id at the end is found before step 1", tail(so, 1))
for name, p, needle in SHARDS[:4] + SHARDS[9:12]:
    expect_error("shards", f"-j {name}", BASE + ["-j", p, "-v", "1"], needle)
for name, p, needle in SHARDS[:5] + SHARDS[9:13]:
    expect_error("shards", f"-pad 1 -i {name}", BASE + ["-i", p, "-pad", "1"], needle)
expect_error("shards", "-pad 1 on a shard without end-of-text tokens", BASE + ["-i", shard("s_noeot.bin", [t for t in tokens[:400] if t != formats.EOT_TOKEN]), "-pad", "1"],
             "s_noeot.bin")

# --- checkpoints given with -e ----------------------------------------------------------------------
init = path("init.bin")
rc, so, se = run(["./train_gpt2"] + BASE + ["-x", "0", "-o", path("mk_init"), "-n", "1", "-x", "1", "-v", "0"], env=ENV1)
shutil.copy(path("mk_init/model_00000001.bin"), init)
ckpt = open(init, "rb").read()
cfg, params = formats.read_model(init)


def model_with(name, p=None, **cfg_changes):
    c = dict(cfg, **cfg_changes)
    q = path(name)
    formats.write_model(q, params if p is None else p, c["max_seq_len"], c["vocab_size"], c["num_layers"],
                        c["num_heads"], c["channels"], c["padded_vocab_size"])
    return q


def poisoned(name, index, value):
    p = params.copy()
    p[index] = value
    return model_with(name, p)


CKPTS = [
    ("wrong magic", raw("c_magic.bin", header(1, 3) + ckpt[1024:]), "magic"),
    ("version 4", raw("c_v4.bin", header(formats.MODEL_MAGIC, 4) + ckpt[8:1024] + ckpt[1024:]), "version"),
    ("truncated", raw("c_trunc.bin", ckpt[:-4]), "c_trunc.bin"),
    ("trailing bytes", raw("c_trail.bin", ckpt + b"\0" * 4), "c_trail.bin"),
    ("header only", raw("c_head.bin", ckpt[:1024]), "c_head.bin"),
    ("shorter than its header", raw("c_short.bin", ckpt[:500]), "c_short.bin"),
    ("NaN in wte", poisoned("c_nan.bin", 5, np.nan), "c_nan.bin"),
    ("+Inf in lnfb", poisoned("c_inf.bin", len(params) - 1, np.inf), "c_inf.bin"),
    ("-Inf in qkvw", poisoned("c_minf.bin", 50304 * 64 + 64 * 64 + 500, -np.inf), "c_minf.bin"),
    ("NH not dividing C", model_with("c_nh.bin", num_heads=3), "c_nh.bin"),
    ("zero layers", raw("c_l0.bin", header(formats.MODEL_MAGIC, 3, 64, 50257, 0, 4, 64, 50304) + ckpt[1024:]), "c_l0.bin"),
    ("Vp < V", raw("c_vp.bin", header(formats.MODEL_MAGIC, 3, 64, 50257, 2, 4, 64, 50000) + ckpt[1024:]), "c_vp.bin"),
    ("negative maxT", raw("c_maxt.bin", header(formats.MODEL_MAGIC, 3, -64, 50257, 2, 4, 64, 50304) + ckpt[1024:]), "c_maxt.bin"),
    ("T > max_seq_len", init, "max_seq_len"),
    ("a directory", work, "-e"),
    ("a missing file", path("no_model.bin"), "-e"),
]
for name, p, needle in CKPTS:
    extra = ["-t", "65"] if name == "T > max_seq_len" else []
    expect_error("checkpoints", f"-e {name}", BASE + ["-e", p] + extra, needle)

# --- sampling and the model's own vocabulary ------------------------------------------------------------
small_v = 1000
rng = np.random.default_rng(0)
small_n = sum(n for _, n in formats.parameter_tensors(dict(cfg, vocab_size=small_v, padded_vocab_size=1024)))
small_params = (rng.standard_normal(small_n) * 0.02).astype(np.float32)
small_model = path("small_vocab.bin")
formats.write_model(small_model, small_params, 64, small_v, 2, 4, 64, 1024)
small_train = shard("small_train.bin", np.asarray(tokens[:40 * 16 + 1]) % small_v)
small_tok = path("small_tok.bin")
formats.write_tokenizer(small_tok, [f"t{i} ".encode() for i in range(small_v)], eot_token=small_v - 1)
SMALL = ["-e", small_model, "-i", small_train, "-j", "", "-t", "16", "-b", "2", "-x", "2", "-v", "0"]
expect_error("vocabulary", "V=1000 model sampling from GPT-2's end-of-text 50256", SMALL + ["-s", "1", "-tk", tok_file], "-s")
expect_error("vocabulary", "V=1000 model, no tokenizer file", SMALL + ["-s", "1", "-tk", path("no_tok.bin")], "-s")
expect_error("vocabulary", "V=1000 model with -pad 1", SMALL + ["-s", "0", "-pad", "1"], "-pad")
expect_error("vocabulary", "V=1000 model on GPT-2 token ids", SMALL + ["-s", "0", "-i", train], "token id")
expect_training("vocabulary", "V=1000 model samples from its tokenizer's end-of-text", SMALL + ["-s", "1", "-g", "8", "-tk", small_tok], 2,
                lambda so, se: (so.count("sample:") == 2, f"{so.count('sample:')} samples"))
expect_training("vocabulary", "V=1000 model trains without samples", SMALL + ["-s", "0"], 2)
bad_tok = raw("tok_eot.bin", header(formats.TOKENIZER_MAGIC, formats.TOKENIZER_VERSION, 5, 9) + b"\x01a" * 5)
expect_error("vocabulary", "tokenizer whose end-of-text is outside its vocabulary", BASE + ["-s", "1", "-tk", bad_tok], "tok_eot.bin")
bad_tok = raw("tok_neg.bin", header(formats.TOKENIZER_MAGIC, formats.TOKENIZER_VERSION, -5, 0))
expect_error("vocabulary", "tokenizer with a negative vocabulary", BASE + ["-s", "1", "-tk", bad_tok], "tok_neg.bin")
bad_tok = raw("tok_trunc.bin", open(tok_file, "rb").read()[:5000])
expect_error("vocabulary", "truncated tokenizer", BASE + ["-s", "1", "-tk", bad_tok], "tok_trunc.bin")

# --- non-finite numbers stop the run -------------------------------------------------------------------
def all_checkpoints_finite(directory):
    for m in glob.glob(os.path.join(directory, "model_*.bin")):
        if not np.all(np.isfinite(formats.read_model(m)[1])):
            return False
    return True


NONFINITE_SETTINGS = [("-l 1e30", ["-l", "1e30"]), ("-c 1e30", ["-c", "1e30"]), ("-l 1e30 -clip 0", ["-l", "1e30", "-clip", "0"]),
                      ("-l 1e25 -beta2 0", ["-l", "1e25", "-beta2", "0"])]


def expect_nonfinite_stop(category, name, extra, binary="./train_gpt2", timeout=60):
    out = path(f"nan_{os.path.basename(binary)}_" + name.replace(" ", "_"))
    rc, so, se = run([binary] + BASE + extra + ["-x", "6", "-n", "1", "-o", out], env=ENV1, timeout=timeout)
    errs = error_lines(se)
    ok = rc == 1 and len(errs) == 1 and "non-finite" in errs[0] and "step" in errs[0] and all_checkpoints_finite(out) \
        and not crashed(se)
    counts[category] += 1
    checks.check(ok, f"{category}: {name} stops with one line naming the step, every checkpoint finite",
                 f"exit {rc}: {errs[:1]}; {len(glob.glob(os.path.join(out, 'model_*.bin')))} checkpoint(s)")


for name, extra in NONFINITE_SETTINGS:
    expect_nonfinite_stop("non-finite", name, extra)
rc, so, se = run(["./train_gpt2"] + BASE + ["-l", "1e30", "-v", "1", "-x", "6"], env=ENV1, timeout=60)
errs = error_lines(se)
val_lines = [l for l in so.splitlines() if l.startswith("val loss")]
ok = rc == 1 and len(errs) == 1 and "non-finite" in errs[0] and any(("nan" in l or "inf" in l) for l in val_lines)
counts["non-finite"] += 1
checks.check(ok, "non-finite: a NaN validation loss is printed as such and stops the run", f"exit {rc}: {val_lines[-1:]} {errs[:1]}")

# --- checkpoint directories: stale runs, copied and damaged files, full disks -------------------------
RUN = ["-e", "tiny", "-i", train, "-j", "", "-t", "16", "-b", "2", "-v", "0", "-s", "0"]
run_a = path("run_a")
rc, so, se = run(["./train_gpt2"] + RUN + ["-x", "6", "-n", "2", "-o", run_a], env=ENV1)
if not checks.check(rc == 0 and os.path.exists(os.path.join(run_a, "DONE_00000006")), "checkpoints: run A writes steps 2, 4, 6",
                    tail(se, 2)):
    checks.exit()
counts["checkpoints"] += 1


def copy_of_a(name):
    d = path(name)
    shutil.copytree(run_a, d)
    return d


d = copy_of_a("stale")
expect_error("resume", "a fresh run into another run's directory", RUN + ["-x", "3", "-n", "3", "-o", d], "-o", out_dir=d)
expect_training("resume", "-overwrite 1 deletes the other run's checkpoints", RUN + ["-x", "3", "-n", "3", "-o", d, "-overwrite", "1"], 3,
                lambda so, se: (sorted(n for n in os.listdir(d) if n.startswith("DONE")) == ["DONE_00000003"],
                                f"DONE files {sorted(n for n in os.listdir(d) if n.startswith('DONE'))}"))
expect_training("resume", "then resuming takes this run's step 3", RUN + ["-x", "4", "-n", "0", "-o", d, "-y", "1"], 1,
                lambda so, se: ("resumed from step 3" in so, [l for l in so.splitlines() if "resumed" in l]))


d = copy_of_a("incomplete_only")
for n in os.listdir(d):
    if n.startswith("DONE_"):
        os.remove(os.path.join(d, n))
expect_training("resume", "a fresh run into a directory holding only incomplete steps (no DONE)", RUN + ["-x", "2", "-n", "2", "-o", d], 2,
                lambda so, se: (os.path.exists(os.path.join(d, "DONE_00000002")), f"{sorted(os.listdir(d))[:3]}..."))


def damaged(name, edit, needle):
    d = copy_of_a(name)
    edit(d)
    expect_error("resume", name.replace("_", " "), RUN + ["-x", "8", "-n", "2", "-o", d, "-y", "1"], needle, out_dir=d)


def f6(d, kind):
    return os.path.join(d, f"{kind}_00000006{'_00000' if kind == 'state' else ''}.bin")


def flip(p, offset):
    b = bytearray(open(p, "rb").read())
    b[offset] ^= 0x40
    open(p, "wb").write(bytes(b))


damaged("state_file_of_step_2_copied_over_step_6",
        lambda d: shutil.copy(os.path.join(d, "state_00000002_00000.bin"), f6(d, "state")), "step 2")
damaged("trailing_bytes_after_a_state_file", lambda d: open(f6(d, "state"), "ab").write(b"\0" * 8), "state_00000006")
damaged("truncated_state_file", lambda d: os.truncate(f6(d, "state"), 2000), "state_00000006")
damaged("a_flipped_bit_in_the_optimizer_state", lambda d: flip(f6(d, "state"), 5000), "checksum")
damaged("a_flipped_bit_in_the_model", lambda d: flip(f6(d, "model"), 9000), "checksum")
damaged("model_of_step_4_copied_over_step_6", lambda d: shutil.copy(os.path.join(d, "model_00000004.bin"), f6(d, "model")), "step 4")
damaged("another_run's_model_of_step_1", lambda d: shutil.copy(init, f6(d, "model")), "step 1")
damaged("an_llm.c_model_without_a_stamp", lambda d: shutil.copy(model_with("plain.bin"), f6(d, "model")), "stamp")
damaged("state_file_missing", lambda d: os.remove(f6(d, "state")), "state_00000006")
damaged("DONE_of_a_step_without_files", lambda d: open(os.path.join(d, "DONE_00000008"), "w").close(), "00000008")
damaged("a_state_header_with_another_step_field", lambda d: (lambda p: open(p, "r+b").write(header(20241101, 2, 4)[:12]))(f6(d, "state")),
        "step 4")
d = copy_of_a("other_config")
expect_error("resume", "resuming with another -b", RUN + ["-b", "4", "-x", "8", "-o", d, "-y", "1"], "configuration", out_dir=d)

# A full disk, made with /dev/full: the error names the file, the partial .tmp is gone, step 6 survives.
if os.path.exists("/dev/full"):
    d = copy_of_a("disk_full")
    os.symlink("/dev/full", os.path.join(d, "model_00000008.bin.tmp"))
    before = {k: v for k, v in snapshot(d).items() if k != "model_00000008.bin.tmp"}
    rc, so, se = run(["./train_gpt2"] + RUN + ["-x", "8", "-n", "2", "-o", d, "-y", "1"], env=ENV1, timeout=60)
    errs = error_lines(se)
    after = snapshot(d)
    ok = rc == 1 and len(errs) == 1 and "model_00000008.bin.tmp" in errs[0] and not os.path.lexists(os.path.join(d, "model_00000008.bin.tmp")) \
        and all(after.get(k) == v for k, v in before.items() if k != "main.log") and "DONE_00000008" not in after
    counts["disk"] += 1
    checks.check(ok, "disk: a full disk while checkpointing: one line, .tmp removed, step 6 intact", f"exit {rc}: {errs[:1]}")
    d = path("log_full")
    os.makedirs(d)
    os.symlink("/dev/full", os.path.join(d, "main.log"))
    expect_error("disk", "a full disk under main.log", RUN + ["-x", "2", "-o", d], "main.log")
else:
    checks.skip("disk: full disk", "no /dev/full")
expect_error("disk", "-o names a file", RUN + ["-x", "2", "-n", "1", "-o", train], "train.bin")

# --- valid edge inputs train correctly -----------------------------------------------------------------
EDGES = [
    ("-x 0", ["-x", "0"], 0), ("-q 0 -u 1", ["-q", "0", "-u", "1"], 2), ("-u 5 beyond the run", ["-u", "5"], 2),
    ("-beta1 0 -beta2 0", ["-beta1", "0", "-beta2", "0"], 2), ("-clip 0", ["-clip", "0"], 2), ("-l 0", ["-l", "0"], 2),
    ("-eps 1e-30", ["-eps", "1e-30"], 2), ("-m beyond the validation set", ["-v", "1", "-m", "100000"], 2),
    ("-k_schedule 0:1,1:3", ["-k_schedule", "0:1,1:3"], 2), ("-x -1 (one epoch of 20 windows)", ["-x", "-1"], 20),
    ("-d equal to B*T", ["-d", "32"], 2), ("-seed -7", ["-seed", "-7"], 2), ("-overwrite 1 into a new directory",
                                                                            ["-overwrite", "1", "-o", path("new_dir"), "-n", "1"], 2),
]
for name, extra, steps in EDGES:
    expect_training("valid edges", name, BASE + extra, steps)

# --- under mpirun: ranks that disagree, and every failure on every rank --------------------------------
if HAS_MPI:
    MB = BASE[:]
    init2 = poisoned("init2.bin", 7, 0.5)
    cases = [
        ("shards of different sizes with -x -1", BASE + ["-x", "-1"], BASE + ["-x", "-1", "-i", train_half], "training rows"),
        ("shards of different sizes with -x 2", BASE, BASE + ["-i", train_half], "training rows"),
        ("validation data on one rank only", BASE + ["-v", "1"], BASE + ["-v", "1", "-j", ""], "-j"),
        ("different initial checkpoints", BASE + ["-e", init], BASE + ["-e", init2], "initial parameters"),
        ("a different -l", BASE, BASE + ["-l", "1e-3"], "-l"),
        ("a different -k_schedule", BASE + ["-k_schedule", "0:1,1:2"], BASE + ["-k_schedule", "0:1,1:3"], "-k_schedule"),
        ("-o on one rank only", BASE + ["-o", path("mpi_o")], BASE, "-o"),
        ("a bad token id in rank 1's shard", BASE, BASE + ["-i", path("s_late.bin")], "token id"),
        ("a bad flag on every rank", BASE + ["-beta1", "2"], BASE + ["-beta1", "2"], "-beta1"),
        ("-l 1e30: a NaN window", BASE + ["-l", "1e30", "-x", "6"], BASE + ["-l", "1e30", "-x", "6"], "non-finite"),
        ("a NaN checkpoint on one rank", BASE + ["-e", init], BASE + ["-e", path("c_nan.bin")], "c_nan.bin"),
    ]
    cases += [(f"rank 1's -i: {name}", BASE, BASE + ["-i", p], needle) for name, p, needle in SHARDS[:3] + SHARDS[10:12]]
    cases += [(f"rank 1's -e: {name}", BASE, BASE + ["-e", p], needle) for name, p, needle in CKPTS[:3] + CKPTS[9:10]]
    cases += [(f"every rank's -e: {name}", BASE + ["-e", p], BASE + ["-e", p], needle) for name, p, needle in CKPTS[2:4] + CKPTS[6:7]]
    cases += [("-t past max_seq_len on every rank", BASE + ["-t", "65"], BASE + ["-t", "65"], "max_seq_len"),
              ("an unknown flag on every rank", BASE + ["-frobnicate", "1"], BASE + ["-frobnicate", "1"], "-frobnicate")]
    cases += [(f"rank 1's flag {flag} {value}", BASE, BASE + [flag, value], flag)
              for flag, value in [("-eps", "0"), ("-beta1", "1"), ("-q", "-5"), ("-clip", "-1"), ("-x", "-2"), ("-y", "2")]]
    for name, a0, a1, needle in cases:
        expect_error("mpi", name, None, needle, mpi_cmd=mpirun2(a0, a1), timeout=90)
    out = path("mpi_nan")
    so, se = expect_error("mpi", "-l 1e30 with checkpoints every step", None, "non-finite", timeout=90,
                          mpi_cmd=["mpirun", "--oversubscribe", "-np", "2", "./train_gpt2"] + BASE + ["-l", "1e30", "-x", "6", "-n", "1", "-o", out])
    counts["mpi"] += 1
    checks.check(all_checkpoints_finite(out) and len([l for l in se.splitlines() if "error:" in l]) == 1,
                 "mpi: a NaN window under P=2: one line for the job, every checkpoint finite",
                 f"{len(glob.glob(os.path.join(out, 'model_*.bin')))} checkpoint(s)")
    d = copy_of_a("mpi_stale")
    expect_error("mpi", "a fresh P=2 run into another run's directory", None, "-o", out_dir=d,
                 mpi_cmd=["mpirun", "--oversubscribe", "-np", "2", "./train_gpt2"] + RUN + ["-x", "2", "-n", "2", "-o", d], timeout=90)
    # -m counts rows over all ranks: the same validation loss for any P and B.
    vals = {}
    for P, B in [(1, 4), (1, 3), (2, 2), (2, 1), (2, 3)]:
        args = BASE + ["-x", "0", "-v", "1", "-m", "10", "-b", str(B)]
        cmd = ["mpirun", "--oversubscribe", "-np", str(P), "./train_gpt2"] + args
        rc, so, se = run(cmd, env=dict(MPI_ENV, **ENV1), timeout=90)
        v = [float(l.split()[2]) for l in so.splitlines() if l.startswith("val loss ")]
        vals[(P, B)] = v[0] if rc == 0 and v else None
    ref = vals[(1, 4)]
    ok = ref is not None and all(v is not None and abs(v - ref) <= 1e-6 * abs(ref) for v in vals.values())
    counts["mpi"] += 1
    checks.check(ok, "mpi: -m 10 validates the same 10 rows for any P and B (relative 1e-6)",
                 ", ".join(f"P={p} B={b}: {v}" for (p, b), v in vals.items()))
else:
    checks.skip("mpi", "mpirun not found")

# --- the CUDA trainer, executed on the CPU emulation (dev/cpucuda): the same host code checks flags and
# checkpoints, and its device math must stop on non-finite numbers the same way --------------------------
cu = os.path.join(REPO, "build", "cpucuda", "train_gpt2cu")
rc = run([cu, "-h"], timeout=30)[0] if os.path.exists(cu) else -1
if rc == 0:
    for name, args, needle in FLAG_CASES + [(f"-e {n}", BASE + ["-e", p] + (["-t", "65"] if n == "T > max_seq_len" else []), nd)
                                            for n, p, nd in CKPTS]:
        expect_error("train_gpt2cu", name, args, needle, binary=cu)
    for name, extra in NONFINITE_SETTINGS:
        expect_nonfinite_stop("train_gpt2cu", name, extra, binary=cu, timeout=300)
else:
    checks.check(False, "train_gpt2cu on the CPU emulation", "build/cpucuda/train_gpt2cu is not built or does not start (make cpucuda)")

total = sum(counts.values())
print(f"     fuzz cases: {total} in {time.time() - t_start:.0f} s; by category: "
      + ", ".join(f"{k} {v}" for k, v in counts.items()))
checks.exit()
