#!/usr/bin/env python3
"""tinyshakespeare -> GPT-2 token shards (version 1, llm.c compatible) and the GPT-2 tokenizer file.

The text is split into documents at blank lines ("\\n\\n", kept at the end of each document so the shards
decode back to the exact text), and each document is preceded by end-of-text (50256). The first 32768
tokens are the validation shard, the rest the training shard:
    <out_dir>/tiny_shakespeare_val.bin, <out_dir>/tiny_shakespeare_train.bin, <out_dir>/gpt2_tokenizer.bin

    python3 dev/data/tinyshakespeare.py                                   # downloads the text
    python3 dev/data/tinyshakespeare.py --input ../shared/data/tinyshakespeare/input.txt   # offline
"""
import argparse
import os

import numpy as np

import formats
import sharding

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
VAL_TOKENS = 32768


def documents(text):
    """Blank-line separated documents; joined together they are the text again."""
    parts = text.split("\n\n")
    return [p + "\n\n" for p in parts[:-1]] + [parts[-1]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", help="local copy of input.txt (offline); default: download it into --out_dir")
    ap.add_argument("--out_dir", default=os.path.join(sharding.DATA_DIR, "tinyshakespeare"),
                    help="where the shards and tokenizer go (default: %(default)s)")
    ap.add_argument("--encoder", default=os.path.join(sharding.SHARED_DIR, "gpt2", "encoder.json"),
                    help="GPT-2 encoder.json for the tokenizer file; if missing, tiktoken's tables are used "
                         "(default: %(default)s)")
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    path = args.input or sharding.download(URL, os.path.join(args.out_dir, "input.txt"))
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    docs = documents(text)
    tokens = np.concatenate([sharding.document_tokens(d) for d in docs])
    print(f"read {path}: {len(text):,} characters, {len(docs):,} documents, {tokens.size:,} tokens")
    if tokens.size <= VAL_TOKENS:
        raise SystemExit(f"tinyshakespeare.py: error: {path} has only {tokens.size} tokens, "
                         f"need more than {VAL_TOKENS} for the validation split")

    for name, part in (("tiny_shakespeare_val.bin", tokens[:VAL_TOKENS]),
                       ("tiny_shakespeare_train.bin", tokens[VAL_TOKENS:])):
        out = os.path.join(args.out_dir, name)
        formats.write_shard(out, part)
        print(f"wrote {out}: {part.size:,} tokens (version 1)")

    token_bytes, source = sharding.gpt2_token_bytes(args.encoder)
    out = os.path.join(args.out_dir, "gpt2_tokenizer.bin")
    formats.write_tokenizer(out, token_bytes)
    how = "from " + source if source != "tiktoken" else f"from tiktoken ({args.encoder} not found)"
    print(f"wrote {out}: {len(token_bytes):,} tokens, {how}")


if __name__ == "__main__":
    main()
