#!/usr/bin/env python3
"""A small synthetic instruction dataset, no download needed: a test bed for masked (SFT) training.

Three tasks, mixed evenly, with prompts and completions of varying length (GPT-2 tokens: prompts 5-24,
completions 1-8). Digits and letters are written with spaces between them so that each is one GPT-2 token
(" 3", " b"): the tasks are then about symbols a tiny model can learn, not about BPE's number chunks.
    add      "add 1 2 + 3 4 5 ="       -> " 3 5 7"       two numbers of 1-3 digits
    reverse  "reverse: a b c d ->"     -> " d c b a"     2-8 letters from a-h
    count    "count b: a b b c a ->"   -> " 2"           how often a letter occurs among 3-20 of a, b, c

    python3 dev/data/synthetic.py --out synthetic.jsonl --n 10000 --seed 1    # JSONL for sft.py
    python3 dev/data/synthetic.py --shards --n 10000 --val_examples 500      # shards directly
"""
import argparse
import collections
import json
import os
import random

import sharding
import sft

TASKS = ("add", "reverse", "count")


def spaced(symbols):
    return "".join(" " + s for s in symbols)


def number(rng):
    digits = rng.randint(1, 3)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def make_example(rng, task):
    """(prompt, completion) of one example of task."""
    if task == "add":
        a, b = number(rng), number(rng)
        return f"add{spaced(str(a))} +{spaced(str(b))} =", spaced(str(a + b))
    if task == "reverse":
        letters = [rng.choice("abcdefgh") for _ in range(rng.randint(2, 8))]
        return f"reverse:{spaced(letters)} ->", spaced(letters[::-1])
    if task == "count":
        letters = [rng.choice("abc") for _ in range(rng.randint(3, 20))]
        target = rng.choice("abc")
        return f"count {target}:{spaced(letters)} ->", f" {letters.count(target)}"
    raise ValueError(task)


def generate(n, seed):
    """n examples as dicts {"task", "prompt", "completion"}; the same for the same (n, seed)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        task = rng.choice(TASKS)
        prompt, completion = make_example(rng, task)
        out.append(dict(task=task, prompt=prompt, completion=completion))
    return out


def describe(examples):
    """Per task: count and the range of prompt and completion lengths in GPT-2 tokens."""
    lengths = collections.defaultdict(list)
    for ex in examples:
        lengths[ex["task"]].append((sharding.encode(ex["prompt"]).size, sharding.encode(ex["completion"]).size))
    for task in TASKS:
        p, c = zip(*lengths[task]) if lengths[task] else ((0,), (0,))
        print(f"  {task:8s} {len(lengths[task]):7,} examples, prompt {min(p)}-{max(p)} tokens, "
              f"completion {min(c)}-{max(c)} tokens")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="number of examples (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    ap.add_argument("--out", default=os.path.join(sharding.DATA_DIR, "synthetic", "synthetic.jsonl"),
                    help="the JSONL file to write (default: %(default)s)")
    ap.add_argument("--shards", action="store_true",
                    help="write train/val shards directly (as sft.py would from the JSONL) instead of JSONL")
    sft.add_output_args(ap, os.path.join(sharding.DATA_DIR, "synthetic"), "synthetic")
    ap.add_argument("--val_examples", type=int, default=500,
                    help="with --shards: the first this many examples are the val split (default: %(default)s)")
    args = ap.parse_args()

    examples = generate(args.n, args.seed)
    print(f"generated {len(examples):,} examples, seed {args.seed}:")
    describe(examples)
    if not args.shards:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps(ex) + "\n")
        print(f"wrote {args.out}: {len(examples):,} lines")
        return
    report = sft.Report()
    report.read = len(examples)
    rows = [sft.Example(f"synthetic:{i + 1}", ex["prompt"], ex["completion"]) for i, ex in enumerate(examples)]
    num_val = sft.num_val_examples(len(rows), None, args.val_examples)
    stats = sft.write_sft_shards(rows, args.out_dir, args.prefix, args.shard_size, num_val, args.workers,
                                 args.max_len)
    sft.print_summary(report, stats)


if __name__ == "__main__":
    main()
