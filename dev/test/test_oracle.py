#!/usr/bin/env python3
"""Self-checks of the PyTorch oracle train_gpt2.py against doc/formats.md.

Prints `PASS name` / `FAIL name: reason` per check and exits non-zero on any failure.
Runs in well under a minute on 2 CPU cores:  /usr/bin/python3 dev/test/test_oracle.py [--list] [--only CASE]
"""
import contextlib
import io
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "dev", "data"))
import formats  # noqa: E402
import train_gpt2 as tg  # noqa: E402
from harness import BUILD, Suite, fixture, fresh_dir  # noqa: E402  (dev/test/harness.py)

SCRIPT = os.path.join(REPO, "train_gpt2.py")
SHAKESPEARE = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare", "input.txt")
EOT = formats.EOT_TOKEN
suite = Suite(__file__)


def check(name, ok, reason=""):
    return suite.check(ok, name, "" if ok else reason)


@fixture
def work():
    """A fresh directory for this run's files."""
    d = os.path.join(BUILD, "oracle")
    fresh_dir(d)
    return d


@fixture
def shards():
    return make_shards(work())


@fixture
def debug_state_files():
    """The oracle's debug-state command, run once: (rc, stdout, stderr, seconds, checkpoint, debug state, tokenizer)."""
    B, T, K = 4, 32, 3
    ck, ds, tok = (os.path.join(work(), n) for n in ("model.bin", "debug.bin", "tok.bin"))
    rc, out, err, secs = run(["--model", "tiny", "--seed", "1337", "--B", str(B), "--T", str(T), "--K", str(K),
                              "--write_checkpoint", ck, "--write_debug_state", ds, "--write_tokenizer", tok])
    return rc, out, err, secs, ck, ds, tok


@fixture
def checkpoint():
    """The tiny model the debug-state command wrote; the cases that train from it fail without it."""
    rc, out, err, _, ck, _, _ = debug_state_files()
    if rc:
        raise RuntimeError(f"the oracle's debug-state command failed (rc {rc}): {err.strip()[-300:]}")
    return ck


def run(args):
    """Run the oracle as the tests will: a fresh process; returns (rc, stdout, stderr, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


def oracle(args):
    """Run the oracle in this process (no second torch import); returns its stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tg.main(args + ["--device", "cpu"])
    return buf.getvalue()


def max_rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def gpt2_tokens(text):
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(REPO, "..", "shared", "gpt2", "tiktoken-cache"))
    import tiktoken
    return tiktoken.get_encoding("gpt2").encode_ordinary(text)


def make_shards(d):
    """A packed (version 1) shard of documents and a masked (version 2) shard of examples."""
    with open(SHAKESPEARE, encoding="utf-8") as f:
        text = f.read()[:20000]
    paras = [p for p in text.split("\n\n") if p.strip()]
    toks = []
    for p in paras:
        toks += [EOT] + gpt2_tokens(p)
    packed = os.path.join(d, "packed.bin")
    formats.write_shard(packed, np.array(toks))
    # examples: first line is the "prompt" (mask 0), the rest and the closing end-of-text are trained
    ex_toks, ex_mask = [], []
    for p in paras[:60]:
        lines = p.split("\n", 1)
        prompt = gpt2_tokens(lines[0])
        answer = gpt2_tokens("\n" + lines[1]) if len(lines) > 1 else []
        ex_toks += [EOT] + prompt + answer
        ex_mask += [1] + [0] * len(prompt) + [1] * len(answer)   # the opening EOT closes the previous one
    ex_toks.append(EOT)
    ex_mask.append(1)
    masked = os.path.join(d, "sft.bin")
    formats.write_shard(masked, np.array(ex_toks), np.array(ex_mask))
    return packed, masked


@suite.case
def loader():
    """Packed and padded rows, masks, several shards and wrap-around, against hand-built rows."""
    d = work()
    T = 4
    a = np.array([EOT, 1, 2, 3, 4, 5, 6, 7, 8, 9])          # 9 // 4 = 2 packed rows
    b = np.array([EOT, 11, 12, EOT, 13, 14, 15, 16, 17, EOT])  # 2 examples (padded), 2 packed rows
    mb = np.array([1, 1, 0, 1, 1, 0, 1, 1, 1, 1])
    formats.write_shard(os.path.join(d, "ld_b.bin"), b, mb)   # written first, sorted second
    formats.write_shard(os.path.join(d, "ld_a.bin"), a)
    pat = os.path.join(d, "ld_*.bin")
    L = tg.RowLoader(pat, T, pad=0)
    check("loader packed row count", L.num_rows == 4, f"{L.num_rows}")
    x, y = L.rows(0, 5)   # row 4 wraps to row 0
    want_x = [[EOT, 1, 2, 3], [4, 5, 6, 7], [EOT, 11, 12, EOT], [13, 14, 15, 16], [EOT, 1, 2, 3]]
    want_y = [[1, 2, 3, 4], [5, 6, 7, 8], [11, -1, EOT, 13], [-1, 15, 16, 17], [1, 2, 3, 4]]
    check("loader packed rows", x.tolist() == want_x and y.tolist() == want_y, f"{x.tolist()} {y.tolist()}")
    P = tg.RowLoader(pat, T, pad=1)
    # shard a has a single end-of-text: no complete example. Shard b holds [EOT 11 12] and
    # [EOT 13 .. 17] (cut at T); row 2 wraps around to row 0.
    x, y = P.rows(0, 3)
    want_x = [[EOT, 11, 12, EOT], [EOT, 13, 14, 15], [EOT, 11, 12, EOT]]
    want_y = [[11, -1, EOT, -1], [13, -1, 15, 16], [11, -1, EOT, -1]]
    check("loader padded rows", P.num_rows == 2 and x.tolist() == want_x and y.tolist() == want_y,
          f"{P.num_rows} {x.tolist()} {y.tolist()}")


@suite.case
def debug_state():
    """The checkpoint, the debug state (its window, gradients, trajectory) and the tokenizer file."""
    B, T, K, S = 4, 32, 3, 5
    rc, out, err, secs, ck, ds, tok = debug_state_files()
    check("debug-state command runs, no training", rc == 0 and "summary:" not in out,
          f"rc {rc}: {err.strip()[-300:]}")
    if rc:
        return None
    print(f"     (debug-state command took {secs:.1f} s)")
    check("debug-state command under 30 s", secs < 30, f"{secs:.1f} s")

    cfg, params = formats.read_model(ck)
    model = tg.GPT(cfg["num_layers"], cfg["channels"], cfg["num_heads"], cfg["max_seq_len"])
    model.load_flat(params)
    L, C, maxT, V, Vp = model.L, model.C, model.maxT, cfg["vocab_size"], cfg["padded_vocab_size"]
    P = Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C
    check("checkpoint header", (L, C, cfg["num_heads"], maxT, V, Vp) == (2, 64, 4, 64, 50257, 50304), str(cfg))
    check("checkpoint size", os.path.getsize(ck) == 1024 + 4 * P, f"{os.path.getsize(ck)} vs {1024 + 4 * P}")
    check("checkpoint padded wte rows zero", not params[V * C:Vp * C].any())
    check("checkpoint round trip", np.array_equal(model.flat(), params))
    fresh = tg.GPT(2, 64, 4, 64)
    fresh.init_weights(1337)
    check("init deterministic from seed", np.array_equal(fresh.flat(), params))
    w = fresh.h[0].mlp.c_proj.weight.detach().numpy()
    check("init residual std", abs(w.std() - 0.02 / math.sqrt(4)) < 0.001, f"{w.std()}")

    size = 1024 + 4 * (2 * K * B * T + B * T * V + 1 + 2 * P + S)
    check("debug-state size formula", os.path.getsize(ds) == size, f"{os.path.getsize(ds)} vs {size}")
    st = formats.read_debug_state(ds)
    check("debug-state header", (st["B"], st["T"], st["K"], st["num_steps"], st["num_params"]) == (B, T, K, S, P)
          and np.isclose(st["lr"], 1e-3) and st["grad_clip"] == 1.0 and np.isclose(st["weight_decay"], 0.1),
          str({k: st[k] for k in ("B", "T", "K", "num_steps", "num_params", "lr", "weight_decay")}))
    ys = st["y"].reshape(K, B, T)
    counts = [(ys[k] != -1).sum() for k in range(K)]
    N = sum(counts)
    check("debug-state counts differ, each > 0", len(set(counts)) == K and min(counts) > 0, str(counts))
    check("debug-state has a fully masked row", ((st["y"] != -1).sum(axis=1) == 0).any())

    x = torch.from_numpy(st["x"].astype(np.int64)).view(K, B, T)
    y = torch.from_numpy(st["y"].astype(np.int64)).view(K, B, T)
    model.zero_grad()
    logits = model(x[0])
    check("logits match", max_rel(logits.detach().numpy(), st["logits"]) < 1e-5)
    lg = st["logits"].astype(np.float64).reshape(-1, V)
    yy = st["y"][:B].reshape(-1)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    valid = yy != -1
    loss0 = (lse[valid] - lg[valid, yy[valid]]).sum() / valid.sum()
    check("loss0 = masked CE of logits / N0", abs(loss0 - st["loss0"]) < 1e-5, f"{loss0} vs {st['loss0']}")

    # the window gradient must be the N_k/N-weighted combination of per-micro-step mean gradients
    mean_grads = []
    for k in range(K):
        model.zero_grad(set_to_none=True)
        ls = F.cross_entropy(model(x[k]).view(-1, V), y[k].reshape(-1), ignore_index=-1, reduction="sum")
        (ls / counts[k]).backward()
        mean_grads.append(model.flat(grads=True).astype(np.float64))
    combo = sum(g * (n / N) for g, n in zip(mean_grads, counts))
    check("grads0 = gradient of micro-step 0's mean", max_rel(st["grads0"], mean_grads[0]) < 1e-5,
          f"{max_rel(st['grads0'], mean_grads[0])}")
    check("window grads = sum_k (N_k/N) grad_k", max_rel(st["window_grads"], combo) < 1e-5,
          f"{max_rel(st['window_grads'], combo)}")
    naive = sum(mean_grads) / K
    check("window grads differ from the naive mean of means", max_rel(naive, combo) > 1e-2,
          f"{max_rel(naive, combo)}")
    check("padded wte grad rows zero", not st["window_grads"][V * C:Vp * C].any())

    # replay the trajectory with a from-the-spec AdamW in numpy (formats.md formula), grads from torch
    decay = np.concatenate([np.full(sum(t.numel() for t in ts) + ((Vp - V) * C if n == "wte" else 0), wd)
                            for n, ts, wd in model.checkpoint_tensors()])
    p = params.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    b1, b2, eps, wd, lr, clip = 0.9, 0.95, 1e-8, 0.1, 1e-3, 1.0
    replay = []
    for t in range(1, S + 1):
        model.load_flat(p.astype(np.float32))
        model.zero_grad(set_to_none=True)
        tot = 0.0
        for k in range(K):
            ls = F.cross_entropy(model(x[k]).view(-1, V), y[k].reshape(-1), ignore_index=-1, reduction="sum")
            (ls / N).backward()
            tot += ls.item()
        replay.append(tot / N)
        g = model.flat(grads=True).astype(np.float64)
        g *= min(1.0, clip / (np.linalg.norm(g) + 1e-6))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * (wd * decay * p + mh / (np.sqrt(vh) + eps))
    check("trajectory matches a from-the-spec AdamW", np.allclose(replay, st["losses"], atol=2e-5, rtol=0),
          f"{replay} vs {st['losses'].tolist()}")
    check("trajectory loss decreases", st["losses"][-1] < st["losses"][0] - 0.1, str(st["losses"].tolist()))
    check("losses[0] = window loss", abs(st["losses"][0] - replay[0]) < 1e-5)

    tk = open(tok, "rb").read()
    hdr = np.frombuffer(tk[:1024], dtype=np.int32)
    pos, toks = 1024, []
    while pos < len(tk):
        n = tk[pos]
        toks.append(tk[pos + 1:pos + 1 + n])
        pos += 1 + n
    check("tokenizer file", hdr[:4].tolist() == [20240328, 2, 50257, EOT] and len(toks) == 50257
          and toks[EOT] == b"<|endoftext|>" and toks[31373] == b"hello" and toks[995] == b" world")


@suite.case
def training():
    """Training: the dumps, split-invariant gradients, validation, the padded masked window, naive_mean."""
    d, ck, (packed, masked) = work(), checkpoint(), shards()
    g1, l1 = os.path.join(d, "g1.bin"), os.path.join(d, "l1.txt")
    _, P = formats.read_model(ck)
    P = P.size
    rc, out, err, secs = run(["--input_bin", packed, "--K", "4", "--B", "2", "--T", "32", "--num_iterations", "3",
                              "--dump_grads", g1, "--init_checkpoint", ck, "--log_losses", l1])
    check("training command runs", rc == 0, f"rc {rc}: {err.strip()[-300:]}")
    if rc:
        return
    check("summary line", "summary: median_ms=" in out and "tok_per_s=" in out and "peak_mem_mb=" in out, out[-300:])
    check("dump_grads size", os.path.getsize(g1) == 3 * 4 * P, f"{os.path.getsize(g1)} vs {3 * 4 * P}")
    lines = open(l1).read().split()
    check("log_losses lines", len(lines) == 9 and lines[0] == "0" and lines[6] == "2", str(lines))
    G1 = np.fromfile(g1, dtype=np.float32).reshape(3, P)

    # the same rows split differently must give the same gradients (the window is K*B rows)
    for K, B in ((2, 4), (1, 8)):
        gk = os.path.join(d, f"g_{K}_{B}.bin")
        out = oracle(["--input_bin", packed, "--total_batch_size", str(K * B * 32), "--B", str(B), "--T", "32",
                      "--num_iterations", "3", "--dump_grads", gk, "--init_checkpoint", ck,
                      "--input_val_bin", packed, "--val_every", "2", "--val_max_steps", "2"])
        Gk = np.fromfile(gk, dtype=np.float32).reshape(3, P)
        check(f"split-invariant gradients K={K} B={B}", max_rel(Gk, G1) < 1e-4, f"{max_rel(Gk, G1)}")

    # direct check of window 0 on the masked, padded data; and naive_mean really differs there
    gp, gn = os.path.join(d, "gp.bin"), os.path.join(d, "gn.bin")
    common = ["--input_bin", masked, "--pad", "1", "--K", "4", "--B", "2", "--T", "32", "--num_iterations", "1",
              "--init_checkpoint", ck, "--device", "cpu"]
    oracle(common + ["--dump_grads", gp])
    oracle(common + ["--dump_grads", gn, "--naive_mean", "1"])
    cfg, params = formats.read_model(ck)
    model = tg.GPT(cfg["num_layers"], cfg["channels"], cfg["num_heads"], cfg["max_seq_len"])
    model.load_flat(params)

    # validation: token-weighted loss of the initial model over 2 batches of B=8 rows from row 0
    vx, vy = tg.RowLoader(packed, 32, 0).rows(0, 16)
    vx, vy = torch.from_numpy(vx), torch.from_numpy(vy)
    with torch.no_grad():
        vl = F.cross_entropy(model(vx).view(-1, model.V), vy.view(-1), ignore_index=-1, reduction="sum").item()
    vl /= int((vy != -1).sum())
    got = [float(line.split("| loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("val after 0")]
    check("validation loss", len(got) == 1 and abs(got[0] - vl) < 1e-5, f"{got} vs {vl}")
    check("validation runs at 0, 2 and the end", out.count("val after") == 3, out)
    x, y = tg.RowLoader(masked, 32, 1).rows(0, 8)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    N = int((y != -1).sum())
    ls = F.cross_entropy(model(x).view(-1, model.V), y.view(-1), ignore_index=-1, reduction="sum")
    (ls / N).backward()
    want = model.flat(grads=True)
    got = np.fromfile(gp, dtype=np.float32)
    check("padded masked window gradient", max_rel(got, want) < 1e-4, f"{max_rel(got, want)}")
    naive = np.fromfile(gn, dtype=np.float32)
    check("naive_mean gives a different gradient", max_rel(naive, want) > 1e-3, f"{max_rel(naive, want)}")


@suite.case
def debug_from_data():
    """A debug state whose window comes from a shard keeps the data's rows and adds masking on top."""
    d, (_, masked) = work(), shards()
    ds = os.path.join(d, "debug_data.bin")
    oracle(["--model", "tiny", "--B", "2", "--T", "32", "--K", "3", "--debug_steps", "1",
            "--input_bin", masked, "--pad", "1", "--write_debug_state", ds])
    st = formats.read_debug_state(ds)
    x, y = tg.RowLoader(masked, 32, 1).rows(0, 6)
    check("debug state from data: inputs are rows 0..", np.array_equal(st["x"], x))
    check("debug state from data: data masks kept", bool(np.all(st["y"][y == -1] == -1))
          and bool(np.all((st["y"] == -1) | (st["y"] == y))))
    counts = (st["y"] != -1).reshape(3, -1).sum(1)
    check("debug state from data: each micro-step has a valid target", counts.min() > 0, str(counts))


@suite.case
def misc():
    """The lr schedule, a bf16 checkpoint's widening, one-line errors."""
    d, (packed, _), ck = work(), shards(), checkpoint()
    lr = [tg.lr_at(s, 1.0, 10, 110, 0.1) for s in (0, 9, 10, 60, 109)]
    want = [0.1, 1.0, 1.0, 0.1 + 0.9 * 0.5, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 99 / 100))]
    check("lr schedule", np.allclose(lr, want), f"{lr} vs {want}")
    check("constant lr", tg.lr_at(50, 3e-4, 0, 100, 1.0) == 3e-4)

    # a bf16 (version 5) checkpoint loads as the bf16 values widened to fp32
    cfg, params = formats.read_model(ck)
    bf = (params.view(np.uint32) >> 16).astype(np.uint16)
    p5 = os.path.join(d, "model5.bin")
    hdr = np.zeros(256, dtype=np.int32)
    hdr[:8] = [formats.MODEL_MAGIC, formats.MODEL_VERSION_BF16, 64, 50257, 2, 4, 64, 50304]
    formats.write_atomic(p5, [hdr, bf])
    _, back = formats.read_model(p5)
    check("bf16 checkpoint widening", np.array_equal(back.view(np.uint32), bf.astype(np.uint32) << 16))

    def one_line_error(name, args):
        rc, out, err, _ = run(args)
        lines = err.strip().splitlines()
        check(name, rc == 1 and len(lines) == 1 and "error" in lines[0], f"rc {rc}, stderr {err!r}")

    one_line_error("error: missing --input_bin", ["--input_bin", os.path.join(d, "nope_*.bin"), "--num_iterations", "1"])
    one_line_error("error: total_batch_size not divisible",
                   ["--input_bin", packed, "--B", "4", "--T", "32", "--total_batch_size", "1000", "--num_iterations", "1"])
    one_line_error("error: unknown preset", ["--model", "d7"])
    one_line_error("error: missing --init_checkpoint", ["--init_checkpoint", os.path.join(d, "nope.bin")])
    bad = os.path.join(d, "bad.bin")
    with open(bad, "wb") as f:
        f.write(b"\0" * 2048)
    one_line_error("error: not a shard", ["--input_bin", bad, "--num_iterations", "1"])
    one_line_error("error: bad number", ["--B", "abc"])
    one_line_error("error: T above max_seq_len", ["--model", "tiny", "--T", "65"])


if __name__ == "__main__":
    torch.manual_seed(0)
    suite.main()
