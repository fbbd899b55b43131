#!/usr/bin/env python3
"""JSONL -> version-2 token shards with a loss mask, for supervised fine-tuning.

Each input line is one example, either {"prompt": P, "completion": C} or {"text": T} (other keys are
ignored). Prompt and completion are tokenized separately with GPT-2 BPE and an example is
    [EOT] tokens(P) tokens(C)        with loss mask   0 (first EOT)   0...0   1...1
and the shard ends with a final EOT. An example's closing EOT (the next one's opening EOT, or the final
one) has mask 1, so the model learns to stop; a "text" example is trained on all its tokens. See
doc/formats.md. Output: <out_dir>/<prefix>_train_000000.bin, ... and <prefix>_val_000000.bin, ...
(the validation split is the first examples of the input, see --val_fraction / --val_examples).

Nothing is dropped silently: bad lines stop the run (--on_error fail) or are skipped and counted
(--on_error skip), empty completions are skipped with a warning, and the summary lists examples read,
written, skipped by reason, and how many are longer than --max_len.

    python3 dev/data/sft.py data.jsonl --val_fraction 0.05 --max_len 256
"""
import argparse
import collections
import json
import os
import sys

import numpy as np

import sharding

Example = collections.namedtuple("Example", "source prompt completion")   # a "text" example has prompt ""
MAX_WARNINGS = 20   # per-line warnings printed before the rest are only counted


class BadLine(Exception):
    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def parse_line(raw):
    """One JSONL line -> (prompt, completion, kind), kind "prompt/completion" or "text"; raises BadLine."""
    try:
        obj = json.loads(raw.decode("utf-8").rstrip("\r\n"))
    except UnicodeDecodeError as e:
        raise BadLine("malformed JSON", f"not UTF-8 ({e.reason} at byte {e.start + 1})")
    except json.JSONDecodeError as e:
        raise BadLine("malformed JSON", f"{e.msg} at character {e.pos + 1}")
    if not isinstance(obj, dict):
        raise BadLine("malformed JSON", f"expected an object, got {type(obj).__name__}")
    has_text, has_prompt, has_completion = "text" in obj, "prompt" in obj, "completion" in obj
    if has_text and (has_prompt or has_completion):
        raise BadLine("bad keys", 'has both "text" and "prompt"/"completion"')
    if not has_text and not (has_prompt and has_completion):
        if has_prompt or has_completion:
            raise BadLine("missing keys", 'no "completion"' if has_prompt else 'no "prompt"')
        raise BadLine("missing keys", 'needs "prompt" and "completion", or "text"')
    keys = ("text",) if has_text else ("prompt", "completion")
    for k in keys:
        if not isinstance(obj[k], str):
            raise BadLine("bad value", f'"{k}" is {type(obj[k]).__name__}, not a string')
    if has_text:
        return "", obj["text"], "text"
    return obj["prompt"], obj["completion"], "prompt/completion"


class Report:
    """Counts for the end-of-run summary, and the rationed per-line warnings."""

    def __init__(self):
        self.blank = self.read = 0
        self.skipped = collections.Counter()   # reason -> examples
        self.warnings = 0

    def warn(self, msg):
        self.warnings += 1
        if self.warnings <= MAX_WARNINGS:
            print(f"warning: {msg}", file=sys.stderr)
        elif self.warnings == MAX_WARNINGS + 1:
            print(f"warning: more than {MAX_WARNINGS} warnings, the rest are only counted", file=sys.stderr)


def read_examples(paths, on_error, report):
    """All good examples of the JSONL files, in order. on_error "fail": the first bad line raises SystemExit
    naming file:line; "skip": bad lines are counted in report.skipped by reason."""
    examples = []
    for path in paths:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{path}:{lineno}"
                if not raw.strip():
                    report.blank += 1
                    continue
                report.read += 1
                try:
                    prompt, completion, kind = parse_line(raw)
                except BadLine as e:
                    if on_error == "fail":
                        raise SystemExit(f"sft.py: error: {where}: {e} (use --on_error skip to skip bad lines)")
                    report.skipped[e.reason] += 1
                    report.warn(f"{where}: {e}, skipped")
                    continue
                if completion == "":
                    reason = "empty text" if kind == "text" else "empty completion"
                    report.skipped[reason] += 1
                    report.warn(f"{where}: {reason}, skipped")
                    continue
                examples.append(Example(where, prompt, completion))
    return examples


def tokenize_example(ex):
    """(tokens, mask) of one example without its end-of-text tokens: prompt tokens mask 0, completion 1."""
    p, c = sharding.encode(ex.prompt), sharding.encode(ex.completion)
    mask = np.concatenate([np.zeros(p.size, np.uint8), np.ones(c.size, np.uint8)])
    return np.concatenate([p, c]), mask


def write_sft_shards(examples, out_dir, prefix, shard_size, num_val, workers, max_len=None):
    """Tokenize examples (the first num_val to the val split) and write version-2 shards.
    Returns stats: written shards per split, and the examples longer than max_len (see check_length)."""
    writers = {s: sharding.ExampleShardWriter(out_dir, prefix, s, shard_size) for s in ("val", "train")}
    stats = dict(too_long=0, longest=0, max_len=max_len)
    results = sharding.map_parallel(tokenize_example, examples, workers, total=len(examples), unit="ex",
                                    block=4096)
    for i, (tokens, mask) in enumerate(results):
        # The padded loader trains on tokens[b_k .. b_k + min(length, T)]: the opening EOT and the
        # example's tokens are inputs, so an example fits a row of T when 1 + len(tokens) <= T.
        length = 1 + tokens.size
        stats["longest"] = max(stats["longest"], length)
        if max_len is not None and length > max_len:
            stats["too_long"] += 1
        writers["val" if i < num_val else "train"].add(tokens, mask)
    for split, w in writers.items():
        stats[split] = w.close()
    return stats


def num_val_examples(n, val_fraction, val_examples):
    """How many of the n examples go to validation; at least one must stay for training."""
    num_val = val_examples if val_examples is not None else int(round(n * (val_fraction or 0.0)))
    if num_val >= n:
        raise SystemExit(f"error: {num_val} validation examples requested but only {n} examples were read; "
                         "at least one must remain for training")
    return num_val


def print_summary(report, stats):
    w = {s: sum(x["examples"] for x in stats[s]) for s in ("train", "val")}
    skipped = sum(report.skipped.values())
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(report.skipped.items()))
    print(f"examples: {report.read:,} read, {w['train'] + w['val']:,} written "
          f"(train {w['train']:,}, val {w['val']:,}), {skipped:,} skipped" + (f" ({reasons})" if reasons else "")
          + (f"; {report.blank:,} blank lines ignored" if report.blank else ""))
    if stats["max_len"] is not None:
        print(f"too long: {stats['too_long']:,} examples are longer than --max_len T={stats['max_len']} "
              f"(1 + prompt + completion tokens > T; longest {stats['longest']:,}); the padded loader "
              "truncates them to T")
    else:
        print(f"longest example: {stats['longest']:,} tokens (1 + prompt + completion)")


def add_output_args(ap, default_out_dir, default_prefix):
    """The output options sft.py and synthetic.py --shards share."""
    ap.add_argument("--out_dir", default=default_out_dir, help="where the shards go (default: %(default)s)")
    ap.add_argument("--prefix", default=default_prefix,
                    help="shard names <prefix>_train_000000.bin, <prefix>_val_000000.bin (default: %(default)s)")
    ap.add_argument("--shard_size", type=int, default=sharding.DEFAULT_SHARD_SIZE,
                    help="at most this many tokens per shard, whole examples only (default: %(default)s)")
    ap.add_argument("--max_len", type=int, metavar="T",
                    help="report examples that do not fit a row of T tokens (the trainer's -t) in padded mode")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="tokenizer processes (default: %(default)s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="FILE.jsonl", help="one example per line")
    add_output_args(ap, os.path.join(sharding.DATA_DIR, "sft"), None)
    val = ap.add_mutually_exclusive_group()
    val.add_argument("--val_fraction", type=float, help="fraction of the examples (the first ones) for val")
    val.add_argument("--val_examples", type=int, help="number of examples (the first ones) for val")
    ap.add_argument("--on_error", choices=("fail", "skip"), default="fail",
                    help="bad line (malformed JSON, missing keys): stop with its file:line, or skip and count it "
                         "(default: %(default)s)")
    args = ap.parse_args()
    if args.prefix is None:
        args.prefix = os.path.splitext(os.path.basename(args.inputs[0]))[0]

    report = Report()
    examples = read_examples(args.inputs, args.on_error, report)
    if not examples:
        print_summary(report, dict(train=[], val=[], max_len=None, longest=0))
        raise SystemExit("sft.py: error: no examples to write")
    num_val = num_val_examples(len(examples), args.val_fraction, args.val_examples)
    if num_val == 0:
        print("no validation split (use --val_fraction or --val_examples)")
    stats = write_sft_shards(examples, args.out_dir, args.prefix, args.shard_size, num_val, args.workers,
                             args.max_len)
    print_summary(report, stats)


if __name__ == "__main__":
    main()
