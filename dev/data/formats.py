"""The project's file formats, written once for every Python script (see doc/formats.md).

The C side names the same constants in llmc/format.h; keep the two in step.
"""
import os
import numpy as np

HEADER_INTS = 256
EOT_TOKEN = 50256          # GPT-2's <|endoftext|>
GPT2_VOCAB_SIZE = 50257

MODEL_MAGIC = 20240326
MODEL_VERSION_FP32 = 3
MODEL_VERSION_BF16 = 5
DATA_MAGIC = 20240520
DATA_VERSION_TOKENS = 1     # llm.c: uint16 tokens
DATA_VERSION_MASKED = 2     # this project: uint16 tokens, then uint8 loss mask
TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2
EVAL_MAGIC = 20240522       # llm.c's multiple-choice eval file (HellaSwag)
EVAL_VERSION = 1
EVAL_EXAMPLE_START = 65535  # uint16 delimiter opening each example
EVAL_MAX_ENDINGS = 16
DEBUG_STATE_MAGIC = 20240327
DEBUG_STATE_VERSION = 3


def _header(*values):
    h = np.zeros(HEADER_INTS, dtype=np.int32)
    h[:len(values)] = values
    return h


def write_atomic(path, chunks):
    """Write byte chunks to path via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c if isinstance(c, bytes) else c.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(path, tokens, mask=None):
    """Token shard: version 1 without a mask (llm.c's format), version 2 with a uint8 mask per token."""
    tokens = np.asarray(tokens)
    assert tokens.ndim == 1 and (tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < 2**16)), \
        "token ids must fit uint16"
    if mask is None:
        write_atomic(path, [_header(DATA_MAGIC, DATA_VERSION_TOKENS, tokens.size), tokens.astype(np.uint16)])
    else:
        mask = np.asarray(mask)
        assert mask.shape == tokens.shape, f"mask has {mask.size} entries for {tokens.size} tokens"
        write_atomic(path, [_header(DATA_MAGIC, DATA_VERSION_MASKED, tokens.size),
                            tokens.astype(np.uint16), (mask != 0).astype(np.uint8)])


def read_shard(path):
    """Returns (tokens uint16 array, mask uint8 array or None); raises ValueError naming the file."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype=np.int32)
        if header.size != HEADER_INTS or header[0] != DATA_MAGIC:
            raise ValueError(f"{path}: not a token shard (bad magic)")
        version, n = int(header[1]), int(header[2])
        if version not in (DATA_VERSION_TOKENS, DATA_VERSION_MASKED):
            raise ValueError(f"{path}: unsupported shard version {version}")
        tokens = np.frombuffer(f.read(2 * n), dtype=np.uint16)
        mask = np.frombuffer(f.read(n), dtype=np.uint8) if version == DATA_VERSION_MASKED else None
    if tokens.size != n or (mask is not None and mask.size != n):
        raise ValueError(f"{path}: truncated, header says {n} tokens")
    return tokens, mask


def write_tokenizer(path, token_bytes, eot_token=EOT_TOKEN):
    """llm.c's tokenizer file: header, then per token a uint8 length and the raw bytes."""
    body = bytearray()
    for b in token_bytes:
        assert 0 < len(b) < 256
        body.append(len(b))
        body += b
    write_atomic(path, [_header(TOKENIZER_MAGIC, TOKENIZER_VERSION, len(token_bytes), eot_token), bytes(body)])


def read_tokenizer(path):
    """Returns (list of token byte strings, eot_token); raises ValueError naming the file."""
    with open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data[:HEADER_INTS * 4], dtype=np.int32)
    if header.size != HEADER_INTS or header[0] != TOKENIZER_MAGIC or header[1] != TOKENIZER_VERSION:
        raise ValueError(f"{path}: not a version-{TOKENIZER_VERSION} tokenizer file")
    token_bytes, pos = [], HEADER_INTS * 4
    for _ in range(int(header[2])):
        if pos >= len(data) or pos + 1 + data[pos] > len(data):
            raise ValueError(f"{path}: truncated after {len(token_bytes)} tokens")
        token_bytes.append(data[pos + 1:pos + 1 + data[pos]])
        pos += 1 + data[pos]
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} bytes after the last token")
    return token_bytes, int(header[3])

def gpt2_token_bytes(encoder_json_path):
    """Raw bytes of each GPT-2 token from the BPE table encoder.json (undoing GPT-2's byte-to-unicode map)."""
    import json
    # GPT-2 maps every byte to a printable unicode character; invert that map.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    byte_of_char, extra = {}, 0
    for b in range(256):
        if b in printable:
            byte_of_char[chr(b)] = b
        else:
            byte_of_char[chr(256 + extra)] = b
            extra += 1
    with open(encoder_json_path, "r", encoding="utf-8") as f:
        encoder = json.load(f)
    token_bytes = [b""] * len(encoder)
    for text, idx in encoder.items():
        token_bytes[idx] = bytes(byte_of_char[c] for c in text)
    return token_bytes


def write_model(path, params, max_seq_len, vocab_size, num_layers, num_heads, channels, padded_vocab_size,
                version=MODEL_VERSION_FP32):
    """Model checkpoint: header, then the flat parameter buffer in checkpoint order.
    Version 3: params are float32. Version 5: params are the uint16 bit patterns of bf16 values."""
    dtype = np.float32 if version == MODEL_VERSION_FP32 else np.uint16
    assert version in (MODEL_VERSION_FP32, MODEL_VERSION_BF16), f"unknown checkpoint version {version}"
    params = np.ascontiguousarray(params, dtype=dtype)
    write_atomic(path, [_header(MODEL_MAGIC, version, max_seq_len, vocab_size, num_layers,
                                num_heads, channels, padded_vocab_size), params])


def read_model_version(path):
    """The version slot of a checkpoint's header (3 fp32, 5 bf16); read_model checks the rest."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(8), dtype=np.int32)
    return int(header[1]) if header.size == 2 else -1


def read_model(path):
    """Returns (config dict, flat float32 parameters); bf16 checkpoints (version 5) are widened to fp32."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype=np.int32)
        if header.size != HEADER_INTS or header[0] != MODEL_MAGIC:
            raise ValueError(f"{path}: not a model checkpoint (bad magic)")
        version = int(header[1])
        if version not in (MODEL_VERSION_FP32, MODEL_VERSION_BF16):
            raise ValueError(f"{path}: unsupported checkpoint version {version}")
        body = f.read()
    config = dict(max_seq_len=int(header[2]), vocab_size=int(header[3]), num_layers=int(header[4]),
                  num_heads=int(header[5]), channels=int(header[6]), padded_vocab_size=int(header[7]))
    if version == MODEL_VERSION_FP32:
        if len(body) % 4:
            raise ValueError(f"{path}: truncated fp32 parameters")
        params = np.frombuffer(body, dtype=np.float32).copy()
    else:
        if len(body) % 2:
            raise ValueError(f"{path}: truncated bf16 parameters")
        # bf16 is the top half of an fp32: shift the 16 bits up to get the exact fp32 value.
        params = (np.frombuffer(body, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return config, params


def read_debug_state(path):
    """Parses a debug state file (doc/formats.md "Debug state") into a dict of numpy arrays and numbers."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_INTS * 4), dtype=np.int32)
        if header.size != HEADER_INTS or header[0] != DEBUG_STATE_MAGIC:
            raise ValueError(f"{path}: not a debug state (bad magic)")
        if header[1] != DEBUG_STATE_VERSION:
            raise ValueError(f"{path}: unsupported debug state version {int(header[1])}")
        B, T, K, S, P = (int(v) for v in header[2:7])
        hyper = header[8:14].copy().view(np.float32)
        body = f.read()
    V = GPT2_VOCAB_SIZE
    sizes = [("x", np.int32, K * B * T), ("y", np.int32, K * B * T), ("logits", np.float32, B * T * V),
             ("loss0", np.float32, 1), ("grads0", np.float32, P), ("window_grads", np.float32, P),
             ("losses", np.float32, S)]
    expected = sum(n for _, _, n in sizes) * 4
    if len(body) != expected:
        raise ValueError(f"{path}: body has {len(body)} bytes, expected {expected}")
    out, pos = {}, 0
    for name, dt, n in sizes:
        out[name] = np.frombuffer(body, dtype=dt, count=n, offset=pos)
        pos += n * 4
    out["x"] = out["x"].reshape(K * B, T)
    out["y"] = out["y"].reshape(K * B, T)
    out["logits"] = out["logits"].reshape(B, T, V)
    out["loss0"] = float(out["loss0"][0])
    out.update(B=B, T=T, K=K, num_steps=S, num_params=P, lr=float(hyper[0]), beta1=float(hyper[1]),
               beta2=float(hyper[2]), eps=float(hyper[3]), weight_decay=float(hyper[4]),
               grad_clip=float(hyper[5]))
    return out


# The parameter tensors in checkpoint order (llmc/gpt2.h's GPT2_PARAMETER_TENSORS): name, element count.
def parameter_tensors(config):
    Vp, C, L, maxT = config["padded_vocab_size"], config["channels"], config["num_layers"], config["max_seq_len"]
    return [("wte", Vp * C), ("wpe", maxT * C), ("ln1w", L * C), ("ln1b", L * C), ("qkvw", L * 3 * C * C),
            ("qkvb", L * 3 * C), ("attprojw", L * C * C), ("attprojb", L * C), ("ln2w", L * C), ("ln2b", L * C),
            ("fcw", L * 4 * C * C), ("fcb", L * 4 * C), ("fcprojw", L * C * 4 * C), ("fcprojb", L * C),
            ("lnfw", C), ("lnfb", C)]


def write_eval_file(path, examples):
    """llm.c's multiple-choice eval file (HellaSwag). examples: dicts with "label", "ctx_tokens" (list of
    ids) and "ending_tokens" (list of lists). Per example a uint16 stream: 65535, its size in bytes,
    its index, label, number of endings, context length + tokens, then each ending's length + tokens."""
    stream, longest = [], 0
    for idx, ex in enumerate(examples):
        endings = ex["ending_tokens"]
        body = [EVAL_EXAMPLE_START, 0, idx, ex["label"], len(endings), len(ex["ctx_tokens"])] + list(ex["ctx_tokens"])
        for end in endings:
            body += [len(end)] + list(end)
        assert all(0 <= t < EVAL_EXAMPLE_START for t in body[2:]), f"example {idx}: a value does not fit uint16"
        body[1] = 2 * len(body)
        assert body[1] < 2**16, f"example {idx} is {body[1]} bytes, the format's limit is 65535"
        longest = max(longest, body[1])
        stream += body
    assert len(examples) < 2**16, "the example index is a uint16"
    write_atomic(path, [_header(EVAL_MAGIC, EVAL_VERSION, len(examples), longest), np.array(stream, dtype=np.uint16)])
