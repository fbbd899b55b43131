#!/usr/bin/env python3
"""FineWeb-edu (or FineWeb) sample -> GPT-2 token shards (version 1, llm.c compatible).

Streams a sample of HuggingFaceFW/fineweb-edu (or HuggingFaceFW/fineweb) with the Hugging Face `datasets`
package (pip install datasets), so nothing but the shards is kept on disk. Each document is preceded by
end-of-text (50256). Shards hold --shard_size tokens; the first one is the validation shard:
    <out_dir>/fineweb_edu_val_000000.bin, <out_dir>/fineweb_edu_train_000001.bin, ...

    python3 dev/data/fineweb.py --sample 10BT                 # about 10B tokens, 100 shards
    python3 dev/data/fineweb.py --max_tokens 500000000        # stop after 500M tokens
"""
import argparse
import os
import sys

import sharding

DATASETS = {"edu": "HuggingFaceFW/fineweb-edu", "classic": "HuggingFaceFW/fineweb"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", choices=sorted(DATASETS), default="edu",
                    help="edu: fineweb-edu, classic: fineweb (default: %(default)s)")
    ap.add_argument("--sample", default="10BT", choices=("10BT", "100BT", "350BT"),
                    help="which sample of the dataset (default: %(default)s)")
    ap.add_argument("--out_dir", help="where the shards go (default: dev/data/fineweb_<version>_<sample>)")
    ap.add_argument("--shard_size", type=int, default=sharding.DEFAULT_SHARD_SIZE,
                    help="tokens per shard; the first shard is validation (default: %(default)s)")
    ap.add_argument("--max_tokens", type=int,
                    help="stop once this many tokens are collected, the last document whole (default: all)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="tokenizer processes (default: %(default)s)")
    args = ap.parse_args()
    prefix = "fineweb_edu" if args.version == "edu" else "fineweb"
    out_dir = args.out_dir or os.path.join(sharding.DATA_DIR, f"{prefix}_{args.sample}")

    try:
        import datasets   # imported here so that --help works without it
    except ImportError:
        sys.exit("fineweb.py: error: needs the Hugging Face datasets package: pip install datasets")
    name = DATASETS[args.version]
    print(f"streaming {name}, sample-{args.sample} -> {out_dir}")
    ds = datasets.load_dataset(name, name=f"sample-{args.sample}", split="train", streaming=True)

    writer = sharding.PackedShardWriter(out_dir, prefix, args.shard_size)
    docs = 0
    for tokens in sharding.map_parallel(sharding.document_tokens, (row["text"] for row in ds), args.workers):
        writer.add(tokens)
        docs += 1
        if args.max_tokens is not None and writer.total_tokens >= args.max_tokens:
            print(f"stopping at --max_tokens {args.max_tokens:,}")
            break
    shards = writer.close()
    print(f"{docs:,} documents, {writer.total_tokens:,} tokens in {len(shards)} shards")


if __name__ == "__main__":
    main()
