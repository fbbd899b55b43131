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
import atexit
import collections
import glob
import itertools
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, REPO, Skip, Suite, ensure_tinyshakespeare, fixture, fresh_dir, logged, run, tail  # noqa: E402

suite = Suite(__file__)
counts = collections.Counter()
# The trainer under test and the work directory: dev/test/test_sanitize.py sets these to run the cases
# with train_gpt2 built with AddressSanitizer and UBSan, beside (not over) this suite's files.
TRAINER = os.environ.get("FUZZ_TRAINER", "./train_gpt2")
WORK = os.path.join(BUILD, os.environ.get("FUZZ_WORK", "fuzz"))
ENV1 = {"OMP_NUM_THREADS": "1"}
LOG_IDS = itertools.count()


def path(name):
    return os.path.join(WORK, name)


# Paths only: the files are written by the inputs() fixture, so that the flag cases can be listed here.
TRAIN, TRAIN_HALF, VAL = path("train.bin"), path("train_half.bin"), path("val.bin")
BASE = ["-e", "tiny", "-i", TRAIN, "-j", VAL, "-t", "16", "-b", "2", "-x", "2", "-v", "0", "-s", "0", "-m", "4"]
RUN = ["-e", "tiny", "-i", TRAIN, "-j", "", "-t", "16", "-b", "2", "-v", "0", "-s", "0"]


@fixture
def inputs():
    """A fresh work directory, tinyshakespeare's validation tokens and shards cut from them:
    dict(tokens, tok_file)."""
    fresh_dir(WORK)
    ts = ensure_tinyshakespeare()
    tokens, _ = formats.read_shard(os.path.join(ts, "tiny_shakespeare_val.bin"))
    formats.write_shard(TRAIN, np.asarray(tokens[:40 * 16 + 1], dtype=np.uint16))          # 40 rows of T=16
    formats.write_shard(TRAIN_HALF, np.asarray(tokens[:20 * 16 + 1], dtype=np.uint16))
    formats.write_shard(VAL, np.asarray(tokens[2000:2000 + 12 * 16 + 1], dtype=np.uint16))  # 12 rows of T=16
    return dict(tokens=tokens, tok_file=os.path.join(ts, "gpt2_tokenizer.bin"))


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


def expect_error(category, name, args, needle, binary=TRAINER, out_dir=None, mpi_cmd=None, timeout=60):
    """A bad input: one line naming `needle`, exit 1, nothing written to out_dir (its files unchanged)."""
    inputs()
    before = snapshot(out_dir) if out_dir else None
    if mpi_cmd is not None:
        rc, so, se = run(mpi_cmd, env=dict(MPI_ENV, **ENV1), timeout=timeout)
        errs = [l for l in se.splitlines() if "error:" in l]
        ok = rc not in (0, 124) and len(errs) == 1 and needle in errs[0]
    else:
        rc, so, se = run([binary] + args, env=ENV1, timeout=timeout)
        errs = error_lines(se)
        ok = rc == 1 and len(errs) == 1 and errs[0].startswith("error:") and needle in errs[0]
    # What a user reads: a NaN printed as a loss would be a bad input not caught.
    ok = ok and not crashed(se) and "loss nan" not in so and "loss inf" not in so
    written = ""
    if out_dir is not None and snapshot(out_dir) != before:
        ok, written = False, f"; {out_dir} changed"
    counts[category] += 1
    shown = errs[:2] if errs else tail(se + so, 3)
    suite.check(ok, f"{category}: {name}", f"exit {rc}{' (timed out)' if rc == 124 else ''}: {shown}{written}")
    return so, se


def expect_training(category, name, args, steps, extra_check=None, binary=TRAINER, timeout=120):
    """A valid edge input: exit 0, `steps` finite losses in the log."""
    inputs()
    log = path(f"training_{next(LOG_IDS)}.log")
    rc, so, se = run([binary] + args + ["-log", log], env=ENV1, timeout=timeout)
    losses = logged(log, "trl")
    ok = rc == 0 and len(losses) == steps and all(np.isfinite(losses)) and not crashed(se)
    detail = f"exit {rc}, {len(losses)} finite losses" if rc == 0 else tail(se, 2)
    if ok and extra_check is not None:
        ok, detail = extra_check(so, se)
    counts[category] += 1
    suite.check(ok, f"{category}: {name}", detail)
    return so, se


def mpirun2(args_rank0, args_rank1, binary=TRAINER):
    """Two ranks with their own arguments (MPMD: `mpirun -np 1 a : -np 1 b`)."""
    return ["mpirun", "--oversubscribe", "-np", "1", binary] + args_rank0 + [":", "-np", "1", binary] + args_rank1


def pick(cases, names):
    """The cases (tuples led by their name) whose name is in names, and the others."""
    return [c for c in cases if c[0] in names], [c for c in cases if c[0] not in names]


# --- flags: every flag's range, malformed values, combinations ------------------------------------------
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
QUICK_FLAGS = ("unknown flag", "flag without a value", "-b '0'", "-l 'nan'")


def expect_flag_error(name, args, needle):
    """Each with an output directory that must stay unwritten."""
    has_o = "-o" in args or name in NEEDS_NO_O
    expect_error("flags", name, args if has_o else ["-o", path("flag_out")] + args, needle, out_dir=path("flag_out"))


# --- shards and checkpoints: the broken files -------------------------------------------------------------
@fixture
def bad_shards():
    """Broken shards, bad token ids and mask bytes, found when the shard is opened: [(name, path, needle)]."""
    tokens = inputs()["tokens"]
    good = open(TRAIN, "rb").read()
    n_tok = (len(good) - 1024) // 2
    late = np.array(tokens[:40 * 16 + 1], dtype=np.uint16)
    late[-1] = 50257                                           # the very last token: the last row's target
    mask2 = np.ones(len(late), dtype=np.uint8)
    mask2[-3] = 2
    body = np.minimum(late, 50256).astype(np.uint16).tobytes()
    return [
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
        ("mask byte 2", raw("s_mask2.bin", header(formats.DATA_MAGIC, 2, len(late)) + body + mask2.tobytes()), "mask byte"),
        ("mask byte 255", raw("s_mask255.bin", header(formats.DATA_MAGIC, 2, len(late)) + body
                              + np.full(len(late), 255, np.uint8).tobytes()), "mask byte"),
        ("a directory", WORK, "'" + WORK),
        ("no file matches", path("nothing_*.bin"), "nothing_*.bin"),
    ]


QUICK_SHARDS = ("wrong magic", "truncated body", "negative token count")


@fixture
def init_model():
    """A checkpoint written by a one-step run (stamped): dict(path, bytes, cfg, params)."""
    inputs()
    init = path("init.bin")
    rc, so, se = run([TRAINER] + BASE + ["-x", "0", "-o", path("mk_init"), "-n", "1", "-x", "1", "-v", "0"], env=ENV1)
    if rc != 0:
        raise RuntimeError(f"a one-step run writing the initial checkpoint: {tail(se, 2)}")
    shutil.copy(path("mk_init/model_00000001.bin"), init)
    cfg, params = formats.read_model(init)
    return dict(path=init, bytes=open(init, "rb").read(), cfg=cfg, params=params)


def model_with(name, p=None, **cfg_changes):
    m = init_model()
    c = dict(m["cfg"], **cfg_changes)
    q = path(name)
    formats.write_model(q, m["params"] if p is None else p, c["max_seq_len"], c["vocab_size"], c["num_layers"],
                        c["num_heads"], c["channels"], c["padded_vocab_size"])
    return q


def poisoned(name, index, value):
    p = init_model()["params"].copy()
    p[index] = value
    return model_with(name, p)


@fixture
def bad_checkpoints():
    """Broken checkpoints given with -e: [(name, path, needle)]."""
    m = init_model()
    ckpt, n = m["bytes"], len(m["params"])
    return [
        ("wrong magic", raw("c_magic.bin", header(1, 3) + ckpt[1024:]), "magic"),
        ("version 4", raw("c_v4.bin", header(formats.MODEL_MAGIC, 4) + ckpt[8:1024] + ckpt[1024:]), "version"),
        ("truncated", raw("c_trunc.bin", ckpt[:-4]), "c_trunc.bin"),
        ("trailing bytes", raw("c_trail.bin", ckpt + b"\0" * 4), "c_trail.bin"),
        ("header only", raw("c_head.bin", ckpt[:1024]), "c_head.bin"),
        ("shorter than its header", raw("c_short.bin", ckpt[:500]), "c_short.bin"),
        ("NaN in wte", poisoned("c_nan.bin", 5, np.nan), "c_nan.bin"),
        ("+Inf in lnfb", poisoned("c_inf.bin", n - 1, np.inf), "c_inf.bin"),
        ("-Inf in qkvw", poisoned("c_minf.bin", 50304 * 64 + 64 * 64 + 500, -np.inf), "c_minf.bin"),
        ("NH not dividing C", model_with("c_nh.bin", num_heads=3), "c_nh.bin"),
        ("zero layers", raw("c_l0.bin", header(formats.MODEL_MAGIC, 3, 64, 50257, 0, 4, 64, 50304) + ckpt[1024:]), "c_l0.bin"),
        ("Vp < V", raw("c_vp.bin", header(formats.MODEL_MAGIC, 3, 64, 50257, 2, 4, 64, 50000) + ckpt[1024:]), "c_vp.bin"),
        ("negative maxT", raw("c_maxt.bin", header(formats.MODEL_MAGIC, 3, -64, 50257, 2, 4, 64, 50304) + ckpt[1024:]), "c_maxt.bin"),
        ("T > max_seq_len", m["path"], "max_seq_len"),
        ("a directory", WORK, "-e"),
        ("a missing file", path("no_model.bin"), "-e"),
    ]


QUICK_CHECKPOINTS = ("wrong magic", "truncated", "NaN in wte")


def checkpoint_args(name, p):
    return BASE + ["-e", p] + (["-t", "65"] if name == "T > max_seq_len" else [])


# --- non-finite numbers stop the run --------------------------------------------------------------------
def all_checkpoints_finite(directory):
    return all(np.all(np.isfinite(formats.read_model(m)[1])) for m in glob.glob(os.path.join(directory, "model_*.bin")))


NONFINITE_SETTINGS = [("-l 1e30", ["-l", "1e30"]), ("-c 1e30", ["-c", "1e30"]), ("-l 1e30 -clip 0", ["-l", "1e30", "-clip", "0"]),
                      ("-l 1e25 -beta2 0", ["-l", "1e25", "-beta2", "0"])]
QUICK_NONFINITE = ("-l 1e30",)


def expect_nonfinite_stop(category, name, extra, binary=TRAINER, timeout=60):
    inputs()
    out = path(f"nan_{os.path.basename(binary)}_" + name.replace(" ", "_"))
    rc, so, se = run([binary] + BASE + extra + ["-x", "6", "-n", "1", "-o", out], env=ENV1, timeout=timeout)
    errs = error_lines(se)
    ok = rc == 1 and len(errs) == 1 and "non-finite" in errs[0] and "step" in errs[0] and all_checkpoints_finite(out) \
        and not crashed(se)
    counts[category] += 1
    suite.check(ok, f"{category}: {name} stops with one line naming the step, every checkpoint finite",
                f"exit {rc}: {errs[:1]}; {len(glob.glob(os.path.join(out, 'model_*.bin')))} checkpoint(s)")


# --- the quick basics (make check) ------------------------------------------------------------------------
@suite.case
def quick_flags():
    """A few bad flags (unknown, without a value, out of range, NaN): one line, exit 1, -o unwritten."""
    for name, args, needle in pick(FLAG_CASES, QUICK_FLAGS)[0]:
        expect_flag_error(name, args, needle)


@suite.case
def quick_shards():
    """A shard with a wrong magic, a truncated body, a negative token count in its header."""
    for name, p, needle in pick(bad_shards(), QUICK_SHARDS)[0]:
        expect_error("shards", f"-i {name}", BASE + ["-i", p], needle)


@suite.case
def quick_checkpoints():
    """A checkpoint with a wrong magic, truncated, or holding a NaN."""
    for name, p, needle in pick(bad_checkpoints(), QUICK_CHECKPOINTS)[0]:
        expect_error("checkpoints", f"-e {name}", checkpoint_args(name, p), needle)


@suite.case
def quick_nonfinite():
    """-l 1e30 turns the window NaN: one line naming the step, every checkpoint finite."""
    for name, extra in pick(NONFINITE_SETTINGS, QUICK_NONFINITE)[0]:
        expect_nonfinite_stop("non-finite", name, extra)


# --- the rest, by category ----------------------------------------------------------------------------------
@suite.case
def flags():
    """Every flag's range, malformed values and combinations (but those of quick_flags)."""
    for name, args, needle in pick(FLAG_CASES, QUICK_FLAGS)[1]:
        expect_flag_error(name, args, needle)


@suite.case
def overflow():
    """Sizes from flags and headers that overflow int, 64 bits, or this machine's memory."""
    inputs()
    for name, args, needle in [
        ("-d 137438953472 (K past int)", BASE + ["-d", "137438953472"], "-d"),
        ("-d 9223372036854775807", BASE + ["-d", "9223372036854775807"], "-d"),
        ("-k_schedule 0:99999999999", BASE + ["-k_schedule", "0:99999999999"], "-k_schedule"),
        ("-k_schedule start 99999999999", BASE + ["-k_schedule", "0:2,99999999999:1"], "-k_schedule"),
        ("-k_schedule 0:99999999999999999999 (past 64 bits)", BASE + ["-k_schedule", "0:99999999999999999999"], "-k_schedule"),
        ("-d 99999999999999999999 (past 64 bits)", BASE + ["-d", "99999999999999999999"], "flag -d"),
    ]:
        expect_error("overflow", name, args, needle)
    # Checkpoint headers whose sizes multiply past 2^63 bytes (some wrap to a small number).
    for i, (name, cfg) in enumerate([("L*4*C*C", (64, 50257, 1 << 30, 1, 1 << 20, 50304)), ("Vp*C", (64, 50257, 1, 1, 1 << 30, 1 << 30)),
                                     ("maxT*C", (1 << 30, 50257, 1, 1, 1 << 30, 50304)),
                                     ("wrapping to 0 mod 2^64", (1, 1, 1 << 24, 1, 1 << 20, 1))]):
        p = raw(f"overflow_{i}.bin", header(formats.MODEL_MAGIC, 3, *cfg) + b"\0" * 4096)
        expect_error("overflow", f"checkpoint header: {name}", BASE + ["-e", p], p)
    expect_error("overflow", "-b 1000000 -t 64: activations past this machine's memory", BASE + ["-b", "1000000", "-t", "64"], "-b 1000000")
    p = raw("shard_count_huge.bin", header(formats.DATA_MAGIC, 1, 2**31 - 1) + b"\0" * 64)
    expect_error("overflow", "shard header: 2^31-1 tokens in a small file", BASE + ["-i", p], p)


@suite.case
def shards():
    """Broken shards given with -i, -j and -pad 1 -i (but those of quick_shards); a bad token id at the end found before step 1."""
    s = bad_shards()
    for name, p, needle in pick(s, QUICK_SHARDS)[1]:
        if name.startswith("token id 50257 at the last"):
            log = path("late_token.log")
            expect_error("shards", f"-i {name}", ["-log", log] + BASE + ["-i", p], needle)
            counts["shards"] += 1
            suite.check(not logged(log, "trl"), "shards: a bad token id at the end is found before step 1",
                        f"{len(logged(log, 'trl'))} step(s) logged")
        else:
            expect_error("shards", f"-i {name}", BASE + ["-i", p], needle)
    for name, p, needle in s[:4] + s[9:12]:
        expect_error("shards", f"-j {name}", BASE + ["-j", p, "-v", "1"], needle)
    for name, p, needle in s[:5] + s[9:13]:
        expect_error("shards", f"-pad 1 -i {name}", BASE + ["-i", p, "-pad", "1"], needle)
    no_eot = shard("s_noeot.bin", [t for t in inputs()["tokens"][:400] if t != formats.EOT_TOKEN])
    expect_error("shards", "-pad 1 on a shard without end-of-text tokens", BASE + ["-i", no_eot, "-pad", "1"], "s_noeot.bin")


@suite.case
def checkpoints():
    """Broken checkpoints given with -e (but those of quick_checkpoints)."""
    for name, p, needle in pick(bad_checkpoints(), QUICK_CHECKPOINTS)[1]:
        expect_error("checkpoints", f"-e {name}", checkpoint_args(name, p), needle)


@suite.case
def vocabulary():
    """Sampling and the model's own vocabulary: a V=1000 model, tokenizers that do not fit."""
    tokens, tok_file = inputs()["tokens"], inputs()["tok_file"]
    small_v = 1000
    rng = np.random.default_rng(0)
    small_n = sum(n for _, n in formats.parameter_tensors(dict(init_model()["cfg"], vocab_size=small_v, padded_vocab_size=1024)))
    small_params = (rng.standard_normal(small_n) * 0.02).astype(np.float32)
    small_model = path("small_vocab.bin")
    formats.write_model(small_model, small_params, 64, small_v, 2, 4, 64, 1024)
    small_train = shard("small_train.bin", np.asarray(tokens[:40 * 16 + 1]) % small_v)
    small_tok = path("small_tok.bin")
    formats.write_tokenizer(small_tok, [f"t{i} ".encode() for i in range(small_v)], eot_token=small_v - 1)
    small = ["-e", small_model, "-i", small_train, "-j", "", "-t", "16", "-b", "2", "-x", "2", "-v", "0"]
    expect_error("vocabulary", "V=1000 model sampling from GPT-2's end-of-text 50256", small + ["-s", "1", "-tk", tok_file], "-s")
    expect_error("vocabulary", "V=1000 model, no tokenizer file", small + ["-s", "1", "-tk", path("no_tok.bin")], "-s")
    expect_error("vocabulary", "V=1000 model with -pad 1", small + ["-s", "0", "-pad", "1"], "-pad")
    expect_error("vocabulary", "V=1000 model on GPT-2 token ids", small + ["-s", "0", "-i", TRAIN], "token id")
    expect_training("vocabulary", "V=1000 model samples from its tokenizer's end-of-text", small + ["-s", "1", "-g", "8", "-tk", small_tok], 2,
                    lambda so, se: (so.count("sample:") == 2, f"{so.count('sample:')} samples"))
    expect_training("vocabulary", "V=1000 model trains without samples", small + ["-s", "0"], 2)
    bad_tok = raw("tok_eot.bin", header(formats.TOKENIZER_MAGIC, formats.TOKENIZER_VERSION, 5, 9) + b"\x01a" * 5)
    expect_error("vocabulary", "tokenizer whose end-of-text is outside its vocabulary", BASE + ["-s", "1", "-tk", bad_tok], "tok_eot.bin")
    bad_tok = raw("tok_neg.bin", header(formats.TOKENIZER_MAGIC, formats.TOKENIZER_VERSION, -5, 0))
    expect_error("vocabulary", "tokenizer with a negative vocabulary", BASE + ["-s", "1", "-tk", bad_tok], "tok_neg.bin")
    bad_tok = raw("tok_trunc.bin", open(tok_file, "rb").read()[:5000])
    expect_error("vocabulary", "truncated tokenizer", BASE + ["-s", "1", "-tk", bad_tok], "tok_trunc.bin")


@suite.case
def nonfinite():
    """Numbers that turn NaN stop the run (but that of quick_nonfinite); a NaN validation loss too."""
    for name, extra in pick(NONFINITE_SETTINGS, QUICK_NONFINITE)[1]:
        expect_nonfinite_stop("non-finite", name, extra)
    inputs()
    rc, so, se = run([TRAINER] + BASE + ["-l", "1e30", "-v", "1", "-x", "6"], env=ENV1, timeout=60)
    errs = error_lines(se)
    # "printed as such": what the user reads, so the printed line.
    val_lines = [l for l in so.splitlines() if l.startswith("val loss")]
    ok = rc == 1 and len(errs) == 1 and "non-finite" in errs[0] and any(("nan" in l or "inf" in l) for l in val_lines)
    counts["non-finite"] += 1
    suite.check(ok, "non-finite: a NaN validation loss is printed as such and stops the run", f"exit {rc}: {val_lines[-1:]} {errs[:1]}")


# --- checkpoint directories: stale runs, copied and damaged files, full disks --------------------------------
@fixture
def run_a():
    """Run A: 6 steps, checkpoints at steps 2, 4 and 6."""
    inputs()
    d = path("run_a")
    rc, so, se = run([TRAINER] + RUN + ["-x", "6", "-n", "2", "-o", d], env=ENV1)
    if rc != 0 or not os.path.exists(os.path.join(d, "DONE_00000006")):
        raise RuntimeError(f"checkpoints: run A writes steps 2, 4, 6: {tail(se, 2)}")
    return d


def copy_of_a(name):
    d = path(name)
    shutil.copytree(run_a(), d)
    return d


def done_files(d):
    return sorted(n for n in os.listdir(d) if n.startswith("DONE"))


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


@suite.case
def resume():
    """Another run's directory, only incomplete steps, damaged or copied checkpoint files, another -b."""
    run_a()
    counts["checkpoints"] += 1
    suite.check(True, "checkpoints: run A writes steps 2, 4, 6", "")
    d = copy_of_a("stale")
    expect_error("resume", "a fresh run into another run's directory", RUN + ["-x", "3", "-n", "3", "-o", d], "-o", out_dir=d)
    expect_training("resume", "-overwrite 1 deletes the other run's checkpoints", RUN + ["-x", "3", "-n", "3", "-o", d, "-overwrite", "1"], 3,
                    lambda so, se: (done_files(d) == ["DONE_00000003"], f"DONE files {done_files(d)}"))
    expect_training("resume", "then resuming takes this run's step 3", RUN + ["-x", "4", "-n", "0", "-o", d, "-y", "1"], 1,
                    lambda so, se: ("resumed from step 3" in so, [l for l in so.splitlines() if "resumed" in l]))

    d = copy_of_a("incomplete_only")
    for n in done_files(d):
        os.remove(os.path.join(d, n))
    expect_training("resume", "a fresh run into a directory holding only incomplete steps (no DONE)", RUN + ["-x", "2", "-n", "2", "-o", d], 2,
                    lambda so, se: (os.path.exists(os.path.join(d, "DONE_00000002")), f"{sorted(os.listdir(d))[:3]}..."))

    init = init_model()["path"]
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


@suite.case
def disk():
    """A full disk (/dev/full) under a checkpoint or main.log, and -o naming a file."""
    if os.path.exists("/dev/full"):
        # The error names the file, the partial .tmp is gone, step 6 survives.
        d = copy_of_a("disk_full")
        os.symlink("/dev/full", os.path.join(d, "model_00000008.bin.tmp"))
        before = {k: v for k, v in snapshot(d).items() if k != "model_00000008.bin.tmp"}
        rc, so, se = run([TRAINER] + RUN + ["-x", "8", "-n", "2", "-o", d, "-y", "1"], env=ENV1, timeout=60)
        errs = error_lines(se)
        after = snapshot(d)
        ok = rc == 1 and len(errs) == 1 and "model_00000008.bin.tmp" in errs[0] and not os.path.lexists(os.path.join(d, "model_00000008.bin.tmp")) \
            and all(after.get(k) == v for k, v in before.items() if k != "main.log") and "DONE_00000008" not in after
        counts["disk"] += 1
        suite.check(ok, "disk: a full disk while checkpointing: one line, .tmp removed, step 6 intact", f"exit {rc}: {errs[:1]}")
        d = path("log_full")
        os.makedirs(d)
        os.symlink("/dev/full", os.path.join(d, "main.log"))
        expect_error("disk", "a full disk under main.log", RUN + ["-x", "2", "-o", d], "main.log")
    else:
        suite.skip("disk: full disk", "no /dev/full")
    expect_error("disk", "-o names a file", RUN + ["-x", "2", "-n", "1", "-o", TRAIN], "train.bin")


@suite.case
def valid_edges():
    """Valid edge inputs train: exit 0 and every window's loss finite."""
    for name, extra, steps in [
        ("-x 0", ["-x", "0"], 0), ("-q 0 -u 1", ["-q", "0", "-u", "1"], 2), ("-u 5 beyond the run", ["-u", "5"], 2),
        ("-beta1 0 -beta2 0", ["-beta1", "0", "-beta2", "0"], 2), ("-clip 0", ["-clip", "0"], 2), ("-l 0", ["-l", "0"], 2),
        ("-eps 1e-30", ["-eps", "1e-30"], 2), ("-m beyond the validation set", ["-v", "1", "-m", "100000"], 2),
        ("-k_schedule 0:1,1:3", ["-k_schedule", "0:1,1:3"], 2), ("-x -1 (one epoch of 20 windows)", ["-x", "-1"], 20),
        ("-d equal to B*T", ["-d", "32"], 2), ("-seed -7", ["-seed", "-7"], 2),
        ("-overwrite 1 into a new directory", ["-overwrite", "1", "-o", path("new_dir"), "-n", "1"], 2),
    ]:
        expect_training("valid edges", name, BASE + extra, steps)


# --- under mpirun: ranks that disagree, and every failure on every rank ------------------------------------
def need_mpirun():
    if shutil.which("mpirun") is None:
        raise Skip("mpirun not found")


@suite.case
def mpi():
    """Under mpirun: ranks that disagree, a failure on one rank or on every rank: one line for the job."""
    need_mpirun()
    s, c = bad_shards(), bad_checkpoints()
    init = init_model()["path"]
    init2 = poisoned("init2.bin", 7, 0.5)
    cases = [
        ("shards of different sizes with -x -1", BASE + ["-x", "-1"], BASE + ["-x", "-1", "-i", TRAIN_HALF], "training rows"),
        ("shards of different sizes with -x 2", BASE, BASE + ["-i", TRAIN_HALF], "training rows"),
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
    cases += [(f"rank 1's -i: {name}", BASE, BASE + ["-i", p], needle) for name, p, needle in s[:3] + s[10:12]]
    cases += [(f"rank 1's -e: {name}", BASE, BASE + ["-e", p], needle) for name, p, needle in c[:3] + c[9:10]]
    cases += [(f"every rank's -e: {name}", BASE + ["-e", p], BASE + ["-e", p], needle) for name, p, needle in c[2:4] + c[6:7]]
    cases += [("-t past max_seq_len on every rank", BASE + ["-t", "65"], BASE + ["-t", "65"], "max_seq_len"),
              ("an unknown flag on every rank", BASE + ["-frobnicate", "1"], BASE + ["-frobnicate", "1"], "-frobnicate")]
    cases += [(f"rank 1's flag {flag} {value}", BASE, BASE + [flag, value], flag)
              for flag, value in [("-eps", "0"), ("-beta1", "1"), ("-q", "-5"), ("-clip", "-1"), ("-x", "-2"), ("-y", "2")]]
    for name, a0, a1, needle in cases:
        expect_error("mpi", name, None, needle, mpi_cmd=mpirun2(a0, a1), timeout=90)
    out = path("mpi_nan")
    so, se = expect_error("mpi", "-l 1e30 with checkpoints every step", None, "non-finite", timeout=90,
                          mpi_cmd=["mpirun", "--oversubscribe", "-np", "2", TRAINER] + BASE + ["-l", "1e30", "-x", "6", "-n", "1", "-o", out])
    counts["mpi"] += 1
    suite.check(all_checkpoints_finite(out) and len([l for l in se.splitlines() if "error:" in l]) == 1,
                "mpi: a NaN window under P=2: one line for the job, every checkpoint finite",
                f"{len(glob.glob(os.path.join(out, 'model_*.bin')))} checkpoint(s)")
    d = copy_of_a("mpi_stale")
    expect_error("mpi", "a fresh P=2 run into another run's directory", None, "-o", out_dir=d,
                 mpi_cmd=["mpirun", "--oversubscribe", "-np", "2", TRAINER] + RUN + ["-x", "2", "-n", "2", "-o", d], timeout=90)


@suite.case
def mpi_validation_rows():
    """-m 10 validates the same 10 rows for any P and B (relative 1e-6)."""
    need_mpirun()
    inputs()
    vals = {}
    for P, B in [(1, 4), (1, 3), (2, 2), (2, 1), (2, 3)]:
        log = path(f"val_P{P}_B{B}.log")
        cmd = ["mpirun", "--oversubscribe", "-np", str(P), TRAINER] + BASE + ["-x", "0", "-v", "1", "-m", "10", "-b", str(B),
                                                                                   "-log", log]
        rc, so, se = run(cmd, env=dict(MPI_ENV, **ENV1), timeout=90)
        v = logged(log, "tel")
        vals[(P, B)] = v[0] if rc == 0 and v else None
    ref = vals[(1, 4)]
    ok = ref is not None and all(v is not None and abs(v - ref) <= 1e-6 * abs(ref) for v in vals.values())
    counts["mpi"] += 1
    suite.check(ok, "mpi: -m 10 validates the same 10 rows for any P and B (relative 1e-6)",
                ", ".join(f"P={p} B={b}: {v}" for (p, b), v in vals.items()))


# --- the CUDA trainer, executed on the CPU emulation (dev/cpucuda): the same host code checks flags and
# checkpoints, and its device math must stop on non-finite numbers the same way --------------------------------
@fixture
def cu():
    cu = os.path.join(REPO, "build", "cpucuda", "train_gpt2cu")
    if not os.path.exists(cu) or run([cu, "-h"], timeout=30)[0] != 0:
        raise RuntimeError("train_gpt2cu on the CPU emulation: build/cpucuda/train_gpt2cu is not built or does not start (make cpucuda)")
    return cu


@suite.case
def cu_flags():
    """train_gpt2cu (CPU emulation): every bad flag of the flags cases."""
    for name, args, needle in FLAG_CASES:
        expect_error("train_gpt2cu", name, args, needle, binary=cu())


@suite.case
def cu_checkpoints():
    """train_gpt2cu (CPU emulation): every broken checkpoint of the checkpoints cases."""
    for name, p, needle in bad_checkpoints():
        expect_error("train_gpt2cu", f"-e {name}", checkpoint_args(name, p), needle, binary=cu())


@suite.case
def cu_nonfinite():
    """train_gpt2cu (CPU emulation): its device math stops on non-finite numbers as train_gpt2 does."""
    for name, extra in NONFINITE_SETTINGS:
        expect_nonfinite_stop("train_gpt2cu", name, extra, binary=cu(), timeout=300)


def print_counts():
    if counts:
        print(f"     fuzz cases: {sum(counts.values())}; by category: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    atexit.register(print_counts)
    suite.main()
