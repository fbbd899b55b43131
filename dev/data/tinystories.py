#!/usr/bin/env python3
"""TinyStories -> GPT-2 token shards (version 1, llm.c compatible).

Downloads TinyStories_all_data.tar.gz (about 1.5 GB) from Hugging Face into --out_dir and unpacks its
data*.json files (lists of {"story": ...}); or reads a local tarball or unpacked directory (--input,
offline). Each story, stripped of surrounding whitespace, is preceded by end-of-text (50256). Shards hold
--shard_size tokens; the first one is the validation shard:
    <out_dir>/tinystories_val_000000.bin, <out_dir>/tinystories_train_000001.bin, ...

    python3 dev/data/tinystories.py                                  # download, then tokenize
    python3 dev/data/tinystories.py --input TinyStories_all_data.tar.gz --shard_size 10000000
"""
import argparse
import glob
import json
import os
import tarfile

import sharding

URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories_all_data.tar.gz"


def unpack(tarball, dest):
    """Unpack tarball into dest once (a marker file records that it finished)."""
    done = os.path.join(dest, ".unpacked")
    if not os.path.exists(done):
        print(f"unpacking {tarball} -> {dest}")
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(tarball) as tf:
            if hasattr(tarfile, "data_filter"):      # Python >= 3.11.4: refuse links and paths outside dest
                tf.extractall(dest, filter="data")
            else:
                tf.extractall(dest)
        open(done, "w").close()
    return dest


def stories(json_files):
    """Every story of the files, in order, stripped."""
    for path in json_files:
        with open(path, "r", encoding="utf-8") as f:
            for item in json.load(f):
                yield item["story"].strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", help="local TinyStories_all_data.tar.gz, or a directory of its data*.json "
                                    "(offline); default: download into --out_dir")
    ap.add_argument("--out_dir", default=os.path.join(sharding.DATA_DIR, "tinystories"),
                    help="where the download and the shards go (default: %(default)s)")
    ap.add_argument("--shard_size", type=int, default=sharding.DEFAULT_SHARD_SIZE,
                    help="tokens per shard; the first shard is validation (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(),
                    help="tokenizer processes (default: %(default)s)")
    args = ap.parse_args()

    source = args.input or sharding.download(URL, os.path.join(args.out_dir, "TinyStories_all_data.tar.gz"))
    if os.path.isdir(source):
        data_dir = source
    else:
        data_dir = unpack(source, os.path.join(args.out_dir, "TinyStories_all_data"))
    json_files = sorted(glob.glob(os.path.join(data_dir, "**", "*.json"), recursive=True))
    if not json_files:
        raise SystemExit(f"tinystories.py: error: no .json files in {data_dir}")
    print(f"tokenizing {len(json_files)} files from {data_dir}")

    writer = sharding.PackedShardWriter(args.out_dir, "tinystories", args.shard_size)
    stories_read = 0
    for tokens in sharding.map_parallel(sharding.document_tokens, stories(json_files), args.workers,
                                        unit="story"):
        writer.add(tokens)
        stories_read += 1
    shards = writer.close()
    print(f"{stories_read:,} stories, {writer.total_tokens:,} tokens in {len(shards)} shards "
          f"(val: {shards[0][0]})" if shards else "no stories found")


if __name__ == "__main__":
    main()
