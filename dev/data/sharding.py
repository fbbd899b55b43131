"""What the dataset scripts share: the GPT-2 tokenizer (offline when ../shared has its cache), downloads,
tokenization in a process pool with a progress bar, and the two shard writers.

- PackedShardWriter: version-1 shards (llm.c's format) of exactly shard_size tokens; documents run across
  shard boundaries, which the packed loader does not mind. Used by tinystories.py and fineweb.py.
- ExampleShardWriter: version-2 shards (tokens + loss mask) holding whole examples, each shard opening and
  closing with end-of-text, as the padded loader needs. Used by sft.py and synthetic.py.

The file formats themselves are written by formats.py; see doc/formats.md.
"""
import multiprocessing
import os
import sys
import urllib.request

import numpy as np

import formats

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared")   # <repo>/../shared, see its README
DATA_DIR = os.path.join(REPO_ROOT, "dev", "data")                 # default home of generated data
DEFAULT_SHARD_SIZE = 10**8                                        # tokens per shard, as llm.c
EOT = formats.EOT_TOKEN


# ----------------------------------------------------------------------------------------------------
# tokenizer

_encoding = None


def gpt2_encoding():
    """tiktoken's GPT-2 BPE. Uses ../shared/gpt2/tiktoken-cache when TIKTOKEN_CACHE_DIR is unset, so it works
    offline; otherwise tiktoken downloads the two BPE files on first use."""
    global _encoding
    if _encoding is None:
        cache = os.path.join(SHARED_DIR, "gpt2", "tiktoken-cache")
        if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(cache):
            os.environ["TIKTOKEN_CACHE_DIR"] = cache
        import tiktoken
        _encoding = tiktoken.get_encoding("gpt2")
    return _encoding


def encode(text):
    """Token ids of text as uint16. Special-token strings such as "<|endoftext|>" in the text are encoded
    as ordinary text: only the scripts insert end-of-text tokens."""
    return np.array(gpt2_encoding().encode_ordinary(text), dtype=np.uint16)


def document_tokens(text):
    """One document of a version-1 shard: [EOT] + tokens(text)."""
    ids = gpt2_encoding().encode_ordinary(text)
    out = np.empty(len(ids) + 1, dtype=np.uint16)
    out[0] = EOT
    out[1:] = ids
    return out


def gpt2_token_bytes(encoder_json):
    """Bytes of each of the 50257 GPT-2 tokens, for formats.write_tokenizer, and where they came from:
    the BPE table encoder.json when it exists, else tiktoken (the same bytes, checked by test_data.py)."""
    if encoder_json and os.path.isfile(encoder_json):
        return formats.gpt2_token_bytes(encoder_json), encoder_json
    enc = gpt2_encoding()
    return [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)], "tiktoken"


# ----------------------------------------------------------------------------------------------------
# downloads and progress

def progress(total=None, desc=None, unit="it", unit_scale=False):
    """A tqdm bar on stderr; silent when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr, disable=None,
                dynamic_ncols=True)


def say(msg):
    """Print a line to stdout without tearing a progress bar."""
    from tqdm import tqdm
    tqdm.write(msg, file=sys.stdout)


def download(url, path):
    """Download url to path (skipped when path exists), via path.part so an interrupted download is retried."""
    if os.path.exists(path):
        print(f"{path} exists, not downloading {url}")
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    print(f"downloading {url} -> {path}")
    part = path + ".part"
    with urllib.request.urlopen(url) as r, open(part, "wb") as f:
        size = r.headers.get("Content-Length")
        with progress(int(size) if size else None, os.path.basename(path), "B", True) as bar:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
    os.replace(part, path)
    return path


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def map_parallel(fn, items, workers, total=None, desc="tokenizing", unit="doc", block=8192):
    """Yields fn(item) for each item, in order, computed by `workers` processes (in-process when workers <= 1).

    items may be a stream (a generator over a remote dataset): it is consumed block by block, with one block
    being computed while the previous one is handed out, so memory stays bounded. fn must be a module-level
    function (it is pickled by name)."""
    with progress(total, desc, unit) as bar:
        if workers <= 1:
            for item in items:
                yield fn(item)
                bar.update(1)
            return
        with multiprocessing.Pool(workers) as pool:
            pending = None
            for batch in _batches(items, block):
                nxt = pool.map_async(fn, batch, chunksize=max(1, len(batch) // (4 * workers)))
                if pending is not None:
                    yield from _drain(pending, bar)
                pending = nxt
            if pending is not None:
                yield from _drain(pending, bar)


def _drain(async_result, bar):
    results = async_result.get()
    bar.update(len(results))
    yield from results


# ----------------------------------------------------------------------------------------------------
# shard writers

def shard_path(out_dir, prefix, split, index):
    return os.path.join(out_dir, f"{prefix}_{split}_{index:06d}.bin")


class PackedShardWriter:
    """Version-1 shards of exactly shard_size tokens (the last one shorter). Shard 0 is the validation shard
    and the rest are training shards, numbered on: <prefix>_val_000000.bin, <prefix>_train_000001.bin, ..."""

    def __init__(self, out_dir, prefix, shard_size):
        assert 0 < shard_size < 2**31, "num_tokens is an int32 in the shard header"
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.prefix, self.shard_size = out_dir, prefix, shard_size
        self.buf = np.empty(shard_size, dtype=np.uint16)
        self.fill = 0
        self.written = []        # (path, num_tokens) per shard
        self.total_tokens = 0

    def add(self, tokens):
        while len(tokens):
            take = min(len(tokens), self.shard_size - self.fill)
            self.buf[self.fill:self.fill + take] = tokens[:take]
            self.fill += take
            self.total_tokens += take
            tokens = tokens[take:]
            if self.fill == self.shard_size:
                self._flush()

    def close(self):
        if self.fill:
            self._flush()
        return self.written

    def _flush(self):
        index = len(self.written)
        path = shard_path(self.out_dir, self.prefix, "val" if index == 0 else "train", index)
        formats.write_shard(path, self.buf[:self.fill])
        say(f"wrote {path}: {self.fill:,} tokens")
        self.written.append((path, self.fill))
        self.fill = 0


class ExampleShardWriter:
    """Version-2 shards of whole examples for one split, <prefix>_<split>_000000.bin, ...

    A shard is EOT (mask 0), then per example its tokens and a closing EOT (mask 1), so example k is
    tokens[b_k .. b_k+1] with b_k the end-of-text positions (doc/formats.md). A shard is closed before an
    example that would take it past shard_size tokens; an example longer than that gets a shard of its own."""

    def __init__(self, out_dir, prefix, split, shard_size):
        assert 0 < shard_size < 2**31, "num_tokens is an int32 in the shard header"
        self.out_dir, self.prefix, self.split, self.shard_size = out_dir, prefix, split, shard_size
        self.tokens, self.masks = [], []
        self.fill = 1            # the opening EOT
        self.written = []        # dicts: path, examples, tokens, targets (tokens with mask 1)

    def add(self, tokens, mask):
        """One example without its end-of-text tokens: tokens and their 0/1 mask."""
        n = len(tokens) + 1
        if self.tokens and self.fill + n > self.shard_size:
            self._flush()
        self.tokens += [tokens, np.array([EOT], np.uint16)]
        self.masks += [mask, np.ones(1, np.uint8)]
        self.fill += n

    def close(self):
        if self.tokens:
            self._flush()
        return self.written

    def _flush(self):
        os.makedirs(self.out_dir, exist_ok=True)
        tokens = np.concatenate([np.array([EOT], np.uint16)] + self.tokens)
        mask = np.concatenate([np.zeros(1, np.uint8)] + self.masks)
        path = shard_path(self.out_dir, self.prefix, self.split, len(self.written))
        formats.write_shard(path, tokens, mask)
        info = dict(path=path, examples=len(self.tokens) // 2, tokens=int(tokens.size), targets=int(mask.sum()))
        say(f"wrote {path}: {info['examples']:,} examples, {info['tokens']:,} tokens, "
            f"{info['targets']:,} trained")
        self.written.append(info)
        self.tokens, self.masks, self.fill = [], [], 1
