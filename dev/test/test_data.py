#!/usr/bin/env python3
"""Tests of the dataset scripts in dev/data: each script is run as a user would run it, and its shards are
checked against expectations computed here directly from tiktoken (not from the scripts' own functions).

Prints one line per check, PASS name / FAIL name: reason / SKIP name: reason, and exits 1 if any failed.
Offline: uses ../shared (tinyshakespeare text, GPT-2 BPE cache). Takes a few seconds.

    python3 dev/test/test_data.py
"""
import importlib.util
import json
import os
import random
import shutil
import sys
import tarfile

import numpy as np

from harness import BUILD, PYTHON, REPO, SHARED, Skip, Suite, tail  # noqa: E402  (dev/test/harness.py)
import harness  # noqa: E402

DATA = os.path.join(REPO, "dev", "data")
SHAKESPEARE = os.path.join(SHARED, "data", "tinyshakespeare", "input.txt")
sys.path.insert(0, DATA)
import formats  # noqa: E402  (the shard and tokenizer readers)

EOT = 50256
CACHE = os.path.join(SHARED, "gpt2", "tiktoken-cache")
if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(CACHE):
    os.environ["TIKTOKEN_CACHE_DIR"] = CACHE


suite = Suite(__file__)
check = suite.case   # each check below is one case, named after its function


_enc = None


def gpt2():
    global _enc
    if _enc is None:
        try:
            import tiktoken
            _enc = tiktoken.get_encoding("gpt2")
        except Exception as e:   # no tiktoken, or no BPE files offline
            raise Skip(f"tiktoken's gpt2 encoding is not available ({e})")
    return _enc


def enc(text):
    return gpt2().encode_ordinary(text)


def run(script, *args, expect_rc=0):
    """Run dev/data/<script> with this interpreter; returns (stdout, stderr); checks the exit status."""
    rc, stdout, stderr = harness.run([PYTHON, os.path.join(DATA, script), *map(str, args)], timeout=120)
    if expect_rc is not None and rc != expect_rc:
        raise AssertionError(f"{script} exited {rc}, expected {expect_rc}; stderr: {tail(stderr)}")
    return stdout, stderr


def header(path):
    with open(path, "rb") as f:
        return np.frombuffer(f.read(256 * 4), dtype=np.int32)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def write_jsonl(path, lines):
    """lines: dicts (written as JSON) or raw strings (written as they are)."""
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def expected_sft(examples):
    """Tokens and mask of a version-2 shard of (prompt, completion) examples, from doc/formats.md."""
    tokens, mask = [EOT], [0]
    for prompt, completion in examples:
        p, c = enc(prompt), enc(completion)
        tokens += p + c + [EOT]
        mask += [0] * len(p) + [1] * len(c) + [1]
    return tokens, mask


def shard_files(out_dir, prefix, split):
    return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.startswith(f"{prefix}_{split}_"))


TMP = os.path.join(BUILD, "data")   # outputs stay there for a look after a failure; the next run starts afresh
_tmp_cleared = []


def tmp(*parts):
    if not _tmp_cleared:
        shutil.rmtree(TMP, ignore_errors=True)
        _tmp_cleared.append(True)
    path = os.path.join(TMP, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------
# tinyshakespeare.py and the tokenizer file

_shakespeare = {}


def shakespeare():
    """Run tinyshakespeare.py once (offline, --input) and hand out its output dir and stdout."""
    if not os.path.isfile(SHAKESPEARE):
        raise Skip(f"{SHAKESPEARE} not found")
    if not _shakespeare:
        out = tmp("shakespeare")
        stdout, _ = run("tinyshakespeare.py", "--input", SHAKESPEARE, "--out_dir", out)
        _shakespeare.update(out=out, stdout=stdout)
    return _shakespeare["out"], _shakespeare["stdout"]


@check
def tinyshakespeare_headers_and_sizes():
    out, _ = shakespeare()
    for name, version in (("tiny_shakespeare_val.bin", 1), ("tiny_shakespeare_train.bin", 1)):
        path = os.path.join(out, name)
        h = header(path)
        expect(h[0] == 20240520 and h[1] == version, f"{name}: header {h[:3]}")
        expect(os.path.getsize(path) == 1024 + 2 * h[2], f"{name}: size {os.path.getsize(path)}, n={h[2]}")
        expect(not h[3:].any(), f"{name}: header slots 3.. not zero")
    nv, nt = (header(os.path.join(out, f"tiny_shakespeare_{s}.bin"))[2] for s in ("val", "train"))
    expect(nv == 32768, f"val is {nv} tokens, not 32768")
    return f"version 1, val {nv} tokens, train {nt} tokens, sizes 1024 + 2n"


@check
def tinyshakespeare_decodes_to_text():
    out, _ = shakespeare()
    val, mask_v = formats.read_shard(os.path.join(out, "tiny_shakespeare_val.bin"))
    train, mask_t = formats.read_shard(os.path.join(out, "tiny_shakespeare_train.bin"))
    expect(mask_v is None and mask_t is None, "version-1 shards have no mask")
    tokens = np.concatenate([val, train])
    with open(SHAKESPEARE, "rb") as f:
        text = f.read()
    sections = text.split(b"\n\n")
    eots = np.flatnonzero(tokens == EOT)
    expect(tokens[0] == EOT, "the first document is not preceded by EOT")
    expect(len(eots) == len(sections), f"{len(eots)} EOTs for {len(sections)} blank-line separated documents")
    expect(gpt2().decode_bytes(tokens[tokens != EOT].tolist()) == text, "decoded tokens differ from the text")
    # each EOT opens one document: the tokens up to the next EOT decode to that document
    bounds = list(eots) + [len(tokens)]
    for k in (0, 1, len(sections) // 2, len(sections) - 1):
        doc = gpt2().decode_bytes(tokens[bounds[k] + 1:bounds[k + 1]].tolist())
        want = sections[k] + (b"\n\n" if k < len(sections) - 1 else b"")
        expect(doc == want, f"document {k} decodes to {doc[:40]!r}, expected {want[:40]!r}")
    return f"{len(sections)} documents, each after an EOT, decode to the {len(text):,}-byte text"


@check
def tokenizer_file_entries_and_roundtrip():
    out, stdout = shakespeare()
    path = os.path.join(out, "gpt2_tokenizer.bin")
    h = header(path)
    expect(list(h[:4]) == [20240328, 2, 50257, 50256], f"header {h[:4]}")
    token_bytes, eot = formats.read_tokenizer(path)
    expect(len(token_bytes) == 50257 and eot == EOT, f"{len(token_bytes)} entries, eot {eot}")
    expect(token_bytes[EOT] == b"<|endoftext|>", f"token 50256 is {token_bytes[EOT]!r}")
    bad = [i for i in range(50257) if token_bytes[i] != gpt2().decode_single_token_bytes(i)]
    expect(not bad, f"{len(bad)} entries differ from tiktoken, first {bad[:5]}")
    text = "First Citizen:\nBefore we proceed any further, hear me speak. Ünïcødé ✓ 日本"
    ids = enc(text)
    expect(b"".join(token_bytes[i] for i in ids) == text.encode("utf-8"), "tokens do not round-trip")
    expect("encoder.json" in stdout, f"did not say it used encoder.json: {stdout.strip()}")
    return "50257 entries equal tiktoken's token bytes; text round-trips"


@check
def tokenizer_tiktoken_fallback_is_identical():
    out, _ = shakespeare()
    out2 = tmp("shakespeare_fallback")
    stdout, _ = run("tinyshakespeare.py", "--input", SHAKESPEARE, "--out_dir", out2,
                    "--encoder", os.path.join(TMP, "no_such_encoder.json"))
    expect("tiktoken" in stdout.splitlines()[-1], f"did not say it used tiktoken: {stdout.splitlines()[-1]}")
    with open(os.path.join(out, "gpt2_tokenizer.bin"), "rb") as a, \
            open(os.path.join(out2, "gpt2_tokenizer.bin"), "rb") as b:
        expect(a.read() == b.read(), "tokenizer from tiktoken differs from the one from encoder.json")
    return "without encoder.json: says tiktoken, identical file"


# ----------------------------------------------------------------------------------------------------
# sft.py

@check
def sft_exact_tokens_and_masks():
    examples = [("What is the capital of France?", " Paris."),
                ("Translate to French: good morning", " bonjour, et au revoir!\n")]
    src = write_jsonl(tmp("sft_exact", "two.jsonl"), [dict(prompt=p, completion=c) for p, c in examples])
    out = tmp("sft_exact", "out")
    run("sft.py", src, "--out_dir", out, "--workers", "2")
    files = os.listdir(out)
    expect(files == ["two_train_000000.bin"], f"wrote {files}")
    path = os.path.join(out, "two_train_000000.bin")
    want_tokens, want_mask = expected_sft(examples)
    h = header(path)
    expect(list(h[:3]) == [20240520, 2, len(want_tokens)], f"header {h[:3]}, expected n={len(want_tokens)}")
    expect(os.path.getsize(path) == 1024 + 3 * len(want_tokens), f"size {os.path.getsize(path)}")
    tokens, mask = formats.read_shard(path)
    expect(tokens.tolist() == want_tokens, f"tokens {tokens.tolist()} != {want_tokens}")
    expect(mask.tolist() == want_mask, f"mask {mask.tolist()} != {want_mask}")
    return f"{len(want_tokens)} tokens, mask {''.join(map(str, want_mask))}"


@check
def sft_text_examples_and_val_split():
    lines = [dict(prompt="Q: 1+1?", completion=" 2"), dict(text="A plain document, all trained."),
             dict(prompt="Q: 2+2?", completion=" 4", source="extra keys are ignored")]
    src = write_jsonl(tmp("sft_val", "mix.jsonl"), lines)
    out = tmp("sft_val", "out")
    run("sft.py", src, "--out_dir", out, "--prefix", "m", "--val_examples", "1", "--workers", "1")
    val, vmask = formats.read_shard(os.path.join(out, "m_val_000000.bin"))
    train, tmask = formats.read_shard(os.path.join(out, "m_train_000000.bin"))
    t = enc("A plain document, all trained.")
    want_val = expected_sft([("Q: 1+1?", " 2")])
    want_train = ([EOT] + t + [EOT] + enc("Q: 2+2?") + enc(" 4") + [EOT],
                  [0] + [1] * len(t) + [1] + [0] * len(enc("Q: 2+2?")) + [1] * len(enc(" 4")) + [1])
    expect((val.tolist(), vmask.tolist()) == want_val, f"val shard {val.tolist()} {vmask.tolist()}")
    expect((train.tolist(), tmask.tolist()) == want_train, f"train shard {train.tolist()} {tmask.tolist()}")
    return "val = first example; text example all trained"


@check
def sft_malformed_line_fails_naming_file_and_line():
    src = write_jsonl(tmp("sft_bad", "bad.jsonl"), [dict(prompt="a", completion=" b"), '{"prompt": "x", ',
                                                    dict(prompt="c", completion=" d")])
    out = tmp("sft_bad", "out")
    _, stderr = run("sft.py", src, "--out_dir", out, expect_rc=1)
    lines = stderr.strip().splitlines()
    expect(len(lines) == 1, f"expected a one-line error, got {lines}")
    expect(f"{src}:2:" in lines[0] and "malformed JSON" in lines[0], f"error does not name {src}:2: {lines[0]}")
    expect(not os.path.exists(out) or not os.listdir(out), "wrote shards despite the error")
    return lines[0].replace(src, "FILE")


@check
def sft_missing_keys_fails_naming_line():
    src = write_jsonl(tmp("sft_keys", "keys.jsonl"), [dict(prompt="a", completion=" b"), dict(text="t"),
                                                      dict(prompt="no completion")])
    _, stderr = run("sft.py", src, "--out_dir", tmp("sft_keys", "out"), expect_rc=1)
    expect(f"{src}:3:" in stderr and "missing keys" in stderr, f"error does not name {src}:3: {stderr.strip()}")
    return stderr.strip().replace(src, "FILE")


@check
def sft_on_error_skip_continues_and_reports():
    good = [("p1", " c1"), ("p2", " c2"), ("p3", " c3")]
    src = write_jsonl(tmp("sft_skip", "skip.jsonl"),
                      [dict(prompt=good[0][0], completion=good[0][1]), "not json", dict(completion=" x"),
                       dict(prompt=good[1][0], completion=good[1][1]), '{"text": 3}',
                       dict(prompt=good[2][0], completion=good[2][1])])
    out = tmp("sft_skip", "out")
    stdout, stderr = run("sft.py", src, "--out_dir", out, "--on_error", "skip")
    for where in (":2:", ":3:", ":5:"):
        expect(src + where in stderr, f"no warning naming {src}{where}: {stderr.strip()}")
    summary = [l for l in stdout.splitlines() if l.startswith("examples:")]
    expect(summary and "6 read" in summary[0] and "3 written" in summary[0] and "3 skipped" in summary[0]
           and "malformed JSON 1" in summary[0] and "missing keys 1" in summary[0], f"summary: {summary}")
    tokens, mask = formats.read_shard(os.path.join(out, "skip_train_000000.bin"))
    expect((tokens.tolist(), mask.tolist()) == expected_sft(good), "shard is not the three good examples")
    return summary[0]


@check
def sft_empty_completion_reported_and_skipped():
    src = write_jsonl(tmp("sft_empty", "empty.jsonl"), [dict(prompt="a", completion=" b"),
                                                        dict(prompt="nothing follows", completion=""),
                                                        dict(prompt="c", completion=" d")])
    out = tmp("sft_empty", "out")
    stdout, stderr = run("sft.py", src, "--out_dir", out)   # not an error, even with --on_error fail
    expect(f"{src}:2:" in stderr and "empty completion" in stderr, f"no warning for line 2: {stderr.strip()}")
    expect("empty completion 1" in stdout and "2 written" in stdout, f"summary: {stdout.strip()}")
    tokens, mask = formats.read_shard(os.path.join(out, "empty_train_000000.bin"))
    expect((tokens.tolist(), mask.tolist()) == expected_sft([("a", " b"), ("c", " d")]), "wrong shard content")
    return "warning names line 2; " + [l for l in stdout.splitlines() if l.startswith("examples:")][0]


@check
def sft_max_len_counts_long_examples_keeps_them():
    short, long_ = ("Hi", " there"), ("A much longer prompt with many words in it", " and a completion too")
    src = write_jsonl(tmp("sft_len", "len.jsonl"), [dict(prompt=p, completion=c) for p, c in (short, long_)])
    out = tmp("sft_len", "out")
    T = 1 + len(enc(short[0])) + len(enc(short[1]))   # the short example just fits a row of T
    stdout, _ = run("sft.py", src, "--out_dir", out, "--max_len", T)
    line = [l for l in stdout.splitlines() if l.startswith("too long:")]
    expect(line and line[0].startswith("too long: 1 examples") and f"T={T}" in line[0], f"report: {line}")
    tokens, mask = formats.read_shard(os.path.join(out, "len_train_000000.bin"))
    expect((tokens.tolist(), mask.tolist()) == expected_sft([short, long_]), "the long example was changed")
    return f"1 of 2 examples reported longer than T={T}, kept whole"


@check
def sft_shards_hold_whole_examples():
    rng = random.Random(0)
    examples = [(f"prompt {i}" + " x" * rng.randint(0, 9), " y" * rng.randint(1, 9)) for i in range(60)]
    src = write_jsonl(tmp("sft_shards", "many.jsonl"), [dict(prompt=p, completion=c) for p, c in examples])
    out = tmp("sft_shards", "out")
    run("sft.py", src, "--out_dir", out, "--shard_size", 64, "--val_fraction", 0.1, "--workers", 2)
    for split, part in (("val", examples[:6]), ("train", examples[6:])):
        files = shard_files(out, "many", split)
        expect(len(files) > 1 or split == "val", f"{split}: expected several shards of <= 64 tokens, got {files}")
        tokens, mask = [], []
        for i, path in enumerate(files):
            expect(path.endswith(f"many_{split}_{i:06d}.bin"), f"unexpected name {path}")
            t, m = formats.read_shard(path)
            expect(t.size <= 64 and t[0] == EOT and t[-1] == EOT and m[0] == 0, f"{path}: not whole examples")
            tokens += t.tolist() if not tokens else t.tolist()[1:]   # shards share no EOT: drop the opening one
            mask += m.tolist() if not mask else m.tolist()[1:]
        expect((tokens, mask) == expected_sft(part), f"{split}: shards do not hold the examples in order")
    return f"{len(shard_files(out, 'many', 'train'))} train shards of <= 64 tokens, whole examples in order"


# ----------------------------------------------------------------------------------------------------
# synthetic.py

def synthetic(n, seed, name):
    path = tmp("synthetic", name)
    run("synthetic.py", "--n", n, "--seed", seed, "--out", path)
    with open(path, "rb") as f:
        return f.read()


def spaced_value(s):
    return "".join(s.split())


@check
def synthetic_variable_and_correct():
    rows = [json.loads(l) for l in synthetic(600, 1, "a.jsonl").decode().splitlines()]
    expect(len(rows) == 600, f"{len(rows)} lines")
    plen = [len(enc(r["prompt"])) for r in rows]
    clen = [len(enc(r["completion"])) for r in rows]
    expect(min(plen) >= 5 and max(plen) <= 25 and len(set(plen)) >= 10, f"prompt lengths {sorted(set(plen))}")
    expect(min(clen) >= 1 and max(clen) <= 10 and len(set(clen)) >= 5, f"completion lengths {sorted(set(clen))}")
    tasks = {r["task"] for r in rows}
    expect(tasks == {"add", "reverse", "count"}, f"tasks {tasks}")
    for r in rows:   # the answers are right
        p, c = r["prompt"], r["completion"]
        if r["task"] == "add":
            a, b = p[len("add"):-len("=")].split("+")
            ok = int(spaced_value(a)) + int(spaced_value(b)) == int(spaced_value(c))
        elif r["task"] == "reverse":
            ok = spaced_value(p[len("reverse:"):-len("->")])[::-1] == spaced_value(c)
        else:
            target, letters = p[len("count "):-len("->")].split(":")
            ok = spaced_value(letters).count(target) == int(c)
        expect(ok and c.startswith(" "), f"wrong example {r}")
    return (f"prompts {min(plen)}-{max(plen)} tokens, completions {min(clen)}-{max(clen)}, "
            "all three tasks, answers right")


@check
def synthetic_deterministic_for_a_seed():
    a, b, c = synthetic(200, 7, "s7a.jsonl"), synthetic(200, 7, "s7b.jsonl"), synthetic(200, 8, "s8.jsonl")
    expect(a == b, "same seed gave different files")
    expect(a != c, "different seeds gave the same file")
    return "same seed, same bytes; another seed, other bytes"


@check
def synthetic_shards_same_as_sft_on_its_jsonl():
    src = tmp("synthetic_sft", "syn.jsonl")
    run("synthetic.py", "--n", 300, "--seed", 3, "--out", src)
    out1, out2 = tmp("synthetic_sft", "direct"), tmp("synthetic_sft", "via_sft")
    run("synthetic.py", "--n", 300, "--seed", 3, "--shards", "--out_dir", out1, "--prefix", "syn",
        "--val_examples", 30)
    run("sft.py", src, "--out_dir", out2, "--val_examples", 30)
    for name in ("syn_train_000000.bin", "syn_val_000000.bin"):
        with open(os.path.join(out1, name), "rb") as a, open(os.path.join(out2, name), "rb") as b:
            expect(a.read() == b.read(), f"{name} differs between synthetic.py --shards and sft.py")
    expect(sorted(os.listdir(out1)) == ["syn_train_000000.bin", "syn_val_000000.bin"], f"{os.listdir(out1)}")
    return "--shards output byte-identical to sft.py on the JSONL"


# ----------------------------------------------------------------------------------------------------
# tinystories.py, fineweb.py

@check
def tinystories_local_tarball():
    stories = [[{"story": f"  Story {i}: once upon a time a cat named Tom{' ran' * i}.\n"} for i in range(12)],
               [{"story": f"Tale {i}, with a dog."} for i in range(9)]]
    src = os.path.dirname(tmp("tinystories", "src", "data00.json"))
    for i, part in enumerate(stories):
        with open(os.path.join(src, f"data{i:02d}.json"), "w") as f:
            json.dump(part, f)
    tarball = tmp("tinystories", "TinyStories_all_data.tar.gz")
    with tarfile.open(tarball, "w:gz") as tf:
        for name in sorted(os.listdir(src)):
            tf.add(os.path.join(src, name), arcname=name)
    out = tmp("tinystories", "out")
    run("tinystories.py", "--input", tarball, "--out_dir", out, "--shard_size", 50, "--workers", 2)
    want = []
    for s in (s for part in stories for s in part):
        want += [EOT] + enc(s["story"].strip())
    names = sorted(f for f in os.listdir(out) if f.endswith(".bin"))
    expect(names[0] == "tinystories_train_000001.bin" and "tinystories_val_000000.bin" in names,
           f"shard names {names}")
    files = [os.path.join(out, "tinystories_val_000000.bin")] + \
        [os.path.join(out, f"tinystories_train_{i:06d}.bin") for i in range(1, len(names))]
    got = []
    for i, path in enumerate(files):
        t, m = formats.read_shard(path)
        expect(m is None, f"{path} is not version 1")
        expect(t.size == 50 or i == len(files) - 1, f"{path}: {t.size} tokens, expected 50")
        got += t.tolist()
    expect(got == want, "shard tokens are not [EOT] + story for each story, in order")
    expect(len(files) == (len(want) + 49) // 50, f"{len(files)} shards for {len(want)} tokens")
    return f"{len(want)} tokens in {len(files)} version-1 shards of 50, first one val"


@check
def tinystories_help_offline():
    stdout, _ = run("tinystories.py", "--help")
    expect(stdout.startswith("usage: tinystories.py"), stdout[:80])


@check
def fineweb_help_offline():
    stdout, _ = run("fineweb.py", "--help")
    expect(stdout.startswith("usage: fineweb.py"), stdout[:80])


@check
def fineweb_without_datasets_says_what_to_install():
    if importlib.util.find_spec("datasets") is not None:
        raise Skip("the datasets package is installed here (running would go to the network)")
    _, stderr = run("fineweb.py", "--out_dir", tmp("fineweb"), expect_rc=1)
    expect("pip install datasets" in stderr, f"stderr: {stderr.strip()}")
    return stderr.strip()


if __name__ == "__main__":
    suite.main()
