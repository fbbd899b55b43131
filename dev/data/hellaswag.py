#!/usr/bin/env python3
"""HellaSwag validation set -> llm.c's multiple-choice eval file, for the trainers' -h 1.

    python3 dev/data/hellaswag.py                           # downloads hellaswag_val.jsonl (10,042 examples)
    python3 dev/data/hellaswag.py --input my.jsonl --out x.bin   # any file of HellaSwag-shaped JSON lines

Each JSON line has "ctx" (the context), "endings" (the candidate endings) and "label" (the index of
the right one). As in llm.c and nanoGPT, the context is tokenized alone and each ending with a
leading space (" " + ending), so an ending's tokens are what GPT-2 would write after the context.
Writes <out_dir>/hellaswag_val.bin in the format of doc/formats.md ("Multiple-choice eval file"),
the same bytes llm.c's dev/data/hellaswag.py writes, so the files load in either project.
"""
import argparse
import json
import os

import formats
import sharding

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def render(example):
    """Token ids of the context and of each ending (with its leading space)."""
    return dict(label=int(example["label"]), ctx_tokens=sharding.encode(example["ctx"]).tolist(),
                ending_tokens=[sharding.encode(" " + e).tolist() for e in example["endings"]])


def read_examples(path):
    """The JSON lines of path; one line naming the file and line when one is not a HellaSwag example."""
    out = []
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
                ok = isinstance(ex["ctx"], str) and isinstance(ex["endings"], list) and 0 <= int(ex["label"]) < len(ex["endings"])
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise SystemExit(f"hellaswag.py: error: {path} line {n}: not a HellaSwag example "
                                 "(needs ctx, endings, and a label indexing the endings)")
            out.append(ex)
    if not out:
        raise SystemExit(f"hellaswag.py: error: {path} holds no example")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", help="local HellaSwag .jsonl (offline); default: download the validation set")
    ap.add_argument("--out_dir", default=os.path.join(sharding.DATA_DIR, "hellaswag"),
                    help="where hellaswag_val.jsonl and hellaswag_val.bin go (default: %(default)s)")
    ap.add_argument("--out", help="output file (default: <out_dir>/hellaswag_val.bin)")
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    path = args.input or sharding.download(URL, os.path.join(args.out_dir, "hellaswag_val.jsonl"))
    examples = [render(ex) for ex in read_examples(path)]
    out = args.out or os.path.join(args.out_dir, "hellaswag_val.bin")
    formats.write_eval_file(out, examples)
    print(f"wrote {out}: {len(examples):,} examples")


if __name__ == "__main__":
    main()
