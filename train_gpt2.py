#!/usr/bin/env python3
"""PyTorch oracle for the C/CUDA GPT-2 trainer.

This script is the reference the C code is tested against, so it favours being obviously right
over being fast. Everything it reads or writes follows doc/formats.md:

  * the model is GPT-2 (pre-LayerNorm, learned positions, tied LM head, tanh GELU, biases everywhere);
  * one optimizer step is a *window* of K micro-steps of (B, T); the loss is summed over the valid
    (unmasked) targets of the whole window and divided by their count N, so the gradient does not
    depend on how the window is split into micro-steps;
  * the data loader yields the same rows as the C loader (packed or padded rows, global row index);
  * checkpoints, gradient dumps and the debug state are written in the C trainer's layouts.

Typical uses:
  write the files the C tests start from:
    train_gpt2.py --model tiny --B 4 --T 32 --K 3 --write_checkpoint m.bin --write_debug_state d.bin
  train and dump gradients for a C comparison:
    train_gpt2.py --init_checkpoint m.bin --input_bin 'data/*.bin' --B 2 --T 32 --K 4 \
                  --num_iterations 3 --dump_grads g.bin
"""
import argparse
import bisect
import contextlib
import copy
import glob
import math
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(REPO_DIR, "dev", "data"))
import formats  # noqa: E402  (the one place the file formats are written down in Python)

IGNORE = -1  # target id meaning "not trained on": adds nothing to the loss or the gradient

# name: (num_layers, channels, num_heads, max_seq_len)
PRESETS = {
    "tiny": (2, 64, 4, 64),
    "small": (4, 128, 4, 256),
    "d12": (12, 768, 12, 1024),
    "d24": (24, 1024, 16, 1024),
    "d36": (36, 1280, 20, 1024),
    "d48": (48, 1600, 25, 1024),
}

# Debug-state optimizer settings (written into its header so the C test uses the same ones).
DEBUG_LR, DEBUG_BETA1, DEBUG_BETA2, DEBUG_EPS, DEBUG_WD, DEBUG_CLIP = 1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0


class Fatal(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def padded_vocab(V):
    """V rounded up to a multiple of 128 (50257 -> 50304), the row count of wte in files."""
    return (V + 127) // 128 * 128


# ----------------------------------------------------------------------------------------------
# Model

class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t sees only positions <= t.

    q, k and v come from one Linear of width 3C (the checkpoint stores them as one (3C, C) matrix).
    The explicit path (softmax of q k^T / sqrt(head_size) with future positions at -inf) is the
    reference; PyTorch's fused scaled_dot_product_attention computes the same thing faster and is
    used only when asked for with --flash 1 and available.
    """

    def __init__(self, C, NH, maxT):
        super().__init__()
        self.NH = NH
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.use_flash = False
        causal = torch.tril(torch.ones(maxT, maxT, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, NH, T, hs): every head attends independently over its own slice.
        q, k, v = (t.view(B, T, self.NH, hs).transpose(1, 2) for t in (q, k, v))
        if self.use_flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            att = att.masked_fill(~self.causal[:T, :T], float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh approximation, as GPT-2) -> C."""

    def __init__(self, C):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, C, NH, maxT):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = CausalSelfAttention(C, NH, maxT)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2. The embedding holds the V real tokens; the padding to Vp rows exists only in files."""

    def __init__(self, L, C, NH, maxT, V=formats.GPT2_VOCAB_SIZE, Vp=None):
        super().__init__()
        if C % NH:
            raise Fatal(f"channels {C} not divisible by heads {NH}")
        self.L, self.C, self.NH, self.maxT, self.V = L, C, NH, maxT, V
        self.Vp = Vp if Vp is not None else padded_vocab(V)
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.h = nn.ModuleList(Block(C, NH, maxT) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)

    def set_flash(self, on):
        for b in self.h:
            b.attn.use_flash = on

    def init_weights(self, seed):
        """GPT-2 init: N(0, 0.02) weights; the two projections that add into the residual stream get
        0.02/sqrt(2L) so the stream's variance does not grow with depth; biases 0; LayerNorm 1, 0."""
        g = torch.Generator().manual_seed(seed)
        std_res = 0.02 / math.sqrt(2 * self.L)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("ln_") or ".ln_" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    std = std_res if name.endswith("c_proj.weight") else 0.02
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def forward(self, idx):
        """idx (B, T) int64 -> logits (B, T, V). The LM head is wte itself (weight tying)."""
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight)

    # --- the checkpoint layout ------------------------------------------------------------------
    def checkpoint_tensors(self):
        """[(name, [tensors stacked along a new first axis, or one tensor], weight_decay)] in file order.

        The file stacks each per-layer tensor over the L layers; the weight-decay column is the one
        in doc/formats.md (2-D matrices and embeddings decay; biases and LayerNorm do not)."""
        hs = self.h
        per_layer = [
            ("ln1w", [b.ln_1.weight for b in hs], False), ("ln1b", [b.ln_1.bias for b in hs], False),
            ("qkvw", [b.attn.c_attn.weight for b in hs], True), ("qkvb", [b.attn.c_attn.bias for b in hs], False),
            ("attprojw", [b.attn.c_proj.weight for b in hs], True),
            ("attprojb", [b.attn.c_proj.bias for b in hs], False),
            ("ln2w", [b.ln_2.weight for b in hs], False), ("ln2b", [b.ln_2.bias for b in hs], False),
            ("fcw", [b.mlp.c_fc.weight for b in hs], True), ("fcb", [b.mlp.c_fc.bias for b in hs], False),
            ("fcprojw", [b.mlp.c_proj.weight for b in hs], True),
            ("fcprojb", [b.mlp.c_proj.bias for b in hs], False),
        ]
        return ([("wte", [self.wte.weight], True), ("wpe", [self.wpe.weight], True)] + per_layer +
                [("lnfw", [self.ln_f.weight], False), ("lnfb", [self.ln_f.bias], False)])

    def num_file_params(self):
        """Floats in the file's parameter buffer (wte padded to Vp rows)."""
        n = sum(p.numel() for p in self.parameters())
        return n + (self.Vp - self.V) * self.C

    def flat(self, grads=False):
        """Parameters (or their gradients, None counted as 0) as one float32 numpy buffer in file order,
        wte padded with zero rows to Vp."""
        parts = []
        for name, tensors, _ in self.checkpoint_tensors():
            for t in tensors:
                src = t.grad if grads else t
                a = (torch.zeros_like(t) if src is None else src).detach().float().cpu().numpy().ravel()
                parts.append(a)
            if name == "wte":
                parts.append(np.zeros((self.Vp - self.V) * self.C, dtype=np.float32))
        out = np.concatenate(parts).astype(np.float32, copy=False)
        assert out.size == self.num_file_params()
        return out

    def load_flat(self, buf):
        """Inverse of flat(): copy a file-order buffer into the parameters (dropping wte's padding)."""
        if buf.size != self.num_file_params():
            raise Fatal(f"checkpoint has {buf.size} parameters, the model needs {self.num_file_params()}")
        pos = 0
        with torch.no_grad():
            for name, tensors, _ in self.checkpoint_tensors():
                for t in tensors:
                    n = t.numel()
                    t.copy_(torch.from_numpy(buf[pos:pos + n].copy()).view_as(t))
                    pos += n
                if name == "wte":
                    pos += (self.Vp - self.V) * self.C

    def write_checkpoint(self, path):
        formats.write_model(path, self.flat(), self.maxT, self.V, self.L, self.NH, self.C, self.Vp)


def build_model(args):
    """A model from --init_checkpoint (its header is the config) or from a preset and --seed."""
    if args.init_checkpoint:
        if not os.path.isfile(args.init_checkpoint):
            raise Fatal(f"--init_checkpoint {args.init_checkpoint}: no such file")
        try:
            cfg, buf = formats.read_model(args.init_checkpoint)
        except ValueError as e:
            raise Fatal(str(e))
        if args.model is not None:
            print(f"note: --model {args.model} ignored, the config comes from {args.init_checkpoint}")
        model = GPT(cfg["num_layers"], cfg["channels"], cfg["num_heads"], cfg["max_seq_len"],
                    cfg["vocab_size"], cfg["padded_vocab_size"])
        model.load_flat(buf)
    else:
        L, C, NH, maxT = PRESETS[args.model or "tiny"]
        model = GPT(L, C, NH, maxT)
        model.init_weights(args.seed)
    return model


def make_optimizer(model, lr, weight_decay, beta1, beta2, eps):
    """torch's AdamW with decay only on the tensors doc/formats.md marks (embeddings and matrices)."""
    decay, no_decay = [], []
    for _, tensors, wd in model.checkpoint_tensors():
        (decay if wd else no_decay).extend(tensors)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps)


def lr_at(step, max_lr, warmup, total, final_frac):
    """Linear warmup over `warmup` steps, then cosine from max_lr down to final_frac*max_lr at `total`."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if total <= warmup:
        return max_lr * final_frac
    decay = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    return max_lr * (final_frac + (1.0 - final_frac) * decay)


def loss_sum(model, x, y):
    """Summed cross-entropy over valid targets (y != -1), computed in fp32 even under autocast."""
    logits = model(x)
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                           ignore_index=IGNORE, reduction="sum")


# ----------------------------------------------------------------------------------------------
# Data

class RowLoader:
    """The rows of doc/formats.md "Rows", addressed by a global row index that wraps around.

    packed: shard s holds (n_s - 1) // T rows of T consecutive tokens (targets shifted by one).
    padded: row j of a shard is its example j, from the j-th end-of-text token up to (and predicting)
            the next one, cut at T; the rest of the row is inputs 50256 / targets -1.
    A target whose mask is 0 becomes -1. Only one shard is kept in memory at a time.
    """

    def __init__(self, pattern, T, pad, flag="--input_bin"):
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise Fatal(f"{flag} {pattern}: no such file")
        self.T, self.pad = T, pad
        self.bounds = []   # per shard: end-of-text positions (padded) or None (packed)
        counts = []
        for path in self.files:
            tokens, _ = self._read(path)
            if pad:
                b = np.flatnonzero(tokens == formats.EOT_TOKEN)
                self.bounds.append(b)
                counts.append(max(len(b) - 1, 0))
            else:
                self.bounds.append(None)
                counts.append(max((tokens.size - 1) // T, 0))
        self.start = np.concatenate([[0], np.cumsum(counts)]).tolist()
        self.num_rows = self.start[-1]
        if self.num_rows == 0:
            raise Fatal(f"{flag} {pattern}: no complete row of T={T}"
                        + (" (padded rows need two end-of-text tokens)" if pad else ""))
        self._cached = (None, None, None)

    @staticmethod
    def _read(path):
        try:
            return formats.read_shard(path)
        except ValueError as e:
            raise Fatal(str(e))

    def _shard(self, s):
        if self._cached[0] != s:
            self._cached = (s,) + self._read(self.files[s])
        return self._cached[1], self._cached[2]

    def row(self, g):
        """(inputs, targets), each int64 (T,), of global row g (taken modulo the number of rows)."""
        g %= self.num_rows
        s = bisect.bisect_right(self.start, g) - 1
        j = g - self.start[s]
        tokens, mask = self._shard(s)
        T = self.T
        x = np.full(T, formats.EOT_TOKEN, dtype=np.int64)
        y = np.full(T, IGNORE, dtype=np.int64)
        if self.pad:
            b0, b1 = self.bounds[s][j], self.bounds[s][j + 1]
            L = min(b1 - b0, T)
            lo = b0
        else:
            L, lo = T, j * T
        x[:L] = tokens[lo:lo + L]
        y[:L] = tokens[lo + 1:lo + L + 1]
        if mask is not None:
            y[:L][mask[lo + 1:lo + L + 1] == 0] = IGNORE
        return x, y

    def rows(self, g, n):
        """n consecutive rows starting at g, stacked to (n, T)."""
        xs, ys = zip(*(self.row(g + i) for i in range(n)))
        return np.stack(xs), np.stack(ys)


# ----------------------------------------------------------------------------------------------
# Debug state

def debug_window(args, model, B, T, K):
    """The window the debug state trains on: K*B rows, targets masked so micro-steps differ.

    Micro-step k masks a deterministic random fraction of its targets, from 10% (k=0) to 70% (k=K-1),
    so the valid counts N_k differ and a wrong (mean-of-means) accumulation would show. At least one
    target per micro-step stays valid, and (when B >= 2) the last row of the last micro-step is fully
    masked, the case where a row contributes nothing at all."""
    rng = np.random.RandomState(args.seed)
    if args.input_bin:
        x, y = RowLoader(args.input_bin, T, args.pad).rows(0, K * B)
    else:
        x = rng.randint(0, model.V, size=(K * B, T)).astype(np.int64)
        y = np.concatenate([x[:, 1:], rng.randint(0, model.V, size=(K * B, 1))], axis=1)
    y = y.copy()
    original = y.copy()
    fracs = np.linspace(0.1, 0.7, K) if K > 1 else [0.4]
    for k in range(K):
        yk = y[k * B:(k + 1) * B].reshape(-1)     # view into y
        n_mask = int(round(fracs[k] * yk.size))
        yk[rng.permutation(yk.size)[:n_mask]] = IGNORE
        if k == K - 1 and B >= 2:
            yk[(B - 1) * T:] = IGNORE
        if not (yk != IGNORE).any():
            # keep one target valid: unmask the first target the data had valid (or invent one)
            ok = np.flatnonzero(original[k * B:(k + 1) * B].reshape(-1) != IGNORE)
            yk[ok[0] if ok.size else 0] = original[k * B:(k + 1) * B].reshape(-1)[ok[0]] if ok.size else 0
    return x, y


def write_debug_state(args, model, path, B, T, K, steps):
    """Everything test_gpt2.c needs to check one window, computed in fp32 on the CPU, deterministic."""
    torch.use_deterministic_algorithms(True)
    m = copy.deepcopy(model).cpu().float()
    m.set_flash(False)
    x_np, y_np = debug_window(args, m, B, T, K)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    xs, ys = x.view(K, B, T), y.view(K, B, T)
    counts = [(ys[k] != IGNORE).sum().item() for k in range(K)]
    N = sum(counts)

    # micro-step 0 on its own: logits, its mean loss, the gradient of that mean
    m.zero_grad(set_to_none=True)
    logits = m(xs[0])
    loss0 = F.cross_entropy(logits.view(-1, m.V), ys[0].reshape(-1), ignore_index=IGNORE,
                            reduction="sum") / counts[0]
    loss0.backward()
    logits_np = logits.detach().numpy().astype(np.float32)
    grads0 = m.flat(grads=True)

    # the whole window: gradient of (sum over all micro-steps) / N
    def window_backward():
        m.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(K):
            ls = loss_sum(m, xs[k], ys[k])
            (ls / N).backward()
            total += ls.item()
        return total / N

    window_backward()
    window_grads = m.flat(grads=True)

    # a short trajectory on the same window
    opt = make_optimizer(m, DEBUG_LR, DEBUG_WD, DEBUG_BETA1, DEBUG_BETA2, DEBUG_EPS)
    losses = []
    for _ in range(steps):
        losses.append(window_backward())
        torch.nn.utils.clip_grad_norm_(m.parameters(), DEBUG_CLIP)
        opt.step()
    torch.use_deterministic_algorithms(False)

    header = np.zeros(formats.HEADER_INTS, dtype=np.int32)
    header[:7] = [formats.DEBUG_STATE_MAGIC, formats.DEBUG_STATE_VERSION, B, T, K, steps, m.num_file_params()]
    header[8:14] = np.array([DEBUG_LR, DEBUG_BETA1, DEBUG_BETA2, DEBUG_EPS, DEBUG_WD, DEBUG_CLIP],
                            dtype=np.float32).view(np.int32)
    formats.write_atomic(path, [header, x_np.astype(np.int32), y_np.astype(np.int32), logits_np,
                                np.array([loss0.item()], dtype=np.float32), grads0, window_grads,
                                np.array(losses, dtype=np.float32)])
    print(f"wrote debug state {path}: B={B} T={T} K={K} valid counts {counts} (N={N}), "
          f"loss0 {loss0.item():.6f}, losses {' '.join(f'{v:.6f}' for v in losses)}")


# ----------------------------------------------------------------------------------------------
# Training

def evaluate(model, loader, B, steps, device, autocast):
    """Token-weighted validation loss over `steps` batches of B rows from row 0: total sum / total count."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(steps):
            x, y = loader.rows(i * B, B)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            with autocast():
                total += loss_sum(model, x, y).item()
            count += int((y != IGNORE).sum().item())
    return (total / count if count else float("nan")), count


def train(args, model, device, autocast):
    B, T, K = args.B, args.T, args.K
    loader = RowLoader(args.input_bin, T, args.pad)
    val_loader = RowLoader(args.input_val_bin, T, args.pad, "--input_val_bin") if args.input_val_bin else None
    print(f"train rows: {loader.num_rows} in {len(loader.files)} shard(s); window = K {K} x B {B} x T {T}")
    opt = make_optimizer(model, args.learning_rate, args.weight_decay, 0.9, 0.95, args.eps)
    fwd = model
    if args.compile:
        if hasattr(torch, "compile"):
            fwd = torch.compile(model)
        else:
            print("note: --compile 1 ignored, this PyTorch has no torch.compile")
    params = list(model.parameters())
    grads_file = open(args.dump_grads, "wb") if args.dump_grads else None
    loss_file = open(args.log_losses, "w") if args.log_losses else None
    times = []
    g = 0  # global row index of the window's first row
    S = args.num_iterations
    for step in range(S):
        if val_loader and args.val_every > 0 and step % args.val_every == 0:
            vl, vn = evaluate(fwd, val_loader, B, args.val_max_steps, device, autocast)
            print(f"val after {step} steps | loss {vl:.6f} | N {vn}")
        sync(device)
        t0 = time.perf_counter()
        x_np, y_np = loader.rows(g, B * K)
        g += B * K
        x = torch.from_numpy(x_np).to(device).view(K, B, T)
        y = torch.from_numpy(y_np).to(device).view(K, B, T)
        counts = (y != IGNORE).view(K, -1).sum(dim=1).tolist()   # valid targets per micro-step
        N = sum(counts)
        lr = lr_at(step, args.learning_rate, args.warmup_iters, S, args.lr_final_frac)
        opt.zero_grad(set_to_none=True)
        if N == 0:
            print(f"warning: step {step}: window has no valid targets, update skipped")
            if grads_file:
                np.zeros(model.num_file_params(), dtype=np.float32).tofile(grads_file)
            if loss_file:
                loss_file.write(f"{step} nan 0\n")
            continue
        total = torch.zeros((), dtype=torch.float64, device=device)
        for k in range(K):
            with autocast():
                ls = loss_sum(fwd, x[k], y[k])
            if args.naive_mean:
                # the common, biased recipe: every micro-step weighs the same whatever its count
                if counts[k] > 0:
                    (ls / counts[k] / K).backward()
            else:
                (ls / N).backward()
            total += ls.detach().double()
        loss = total.item() / N
        if grads_file:
            model.flat(grads=True).tofile(grads_file)
        if args.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip).item()
        else:
            norm = torch.norm(torch.stack([p.grad.detach().float().norm() for p in params])).item()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        sync(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        if loss_file:
            loss_file.write(f"{step} {loss:.6f} {N}\n")
            loss_file.flush()
        print(f"step {step + 1}/{S} | loss {loss:.6f} | N {N} | norm {norm:.4f} | lr {lr:.2e} | "
              f"{dt * 1000:.1f} ms | {B * T * K / dt:.0f} tok/s", flush=True)
    if val_loader and args.val_every > 0 and S > 0:
        vl, vn = evaluate(fwd, val_loader, B, args.val_max_steps, device, autocast)
        print(f"val after {S} steps | loss {vl:.6f} | N {vn}")
    for f in (grads_file, loss_file):
        if f:
            f.close()
    if times:
        med = statistics.median(times[1:] if len(times) > 1 else times)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"summary: median_ms={med * 1000:.3f} tok_per_s={B * T * K / med:.0f} peak_mem_mb={peak:.1f}")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# CLI

class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Fatal(message)


def parse_args(argv):
    p = Parser(description="PyTorch GPT-2 oracle (see doc/formats.md)")
    p.add_argument("--model", choices=sorted(PRESETS), default=None, help="preset (default tiny)")
    p.add_argument("--init_checkpoint", default=None, help="start from this checkpoint (version 3 or 5)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--input_bin", default=None, help="training shard glob pattern")
    p.add_argument("--input_val_bin", default=None, help="validation shard glob pattern")
    p.add_argument("--val_every", type=int, default=0, help="evaluate every N steps (0: never)")
    p.add_argument("--val_max_steps", type=int, default=20, help="batches of B rows per evaluation")
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--K", type=int, default=None, help="micro-steps per window (default 1)")
    p.add_argument("--total_batch_size", type=int, default=None, help="tokens per window = K*B*T")
    p.add_argument("--num_iterations", type=int, default=0, help="optimizer steps (0: no training)")
    p.add_argument("--learning_rate", type=float, default=3e-4)
    p.add_argument("--warmup_iters", type=int, default=0)
    p.add_argument("--lr_final_frac", type=float, default=1.0, help="final lr / max lr (1.0: constant)")
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--grad_clip", type=float, default=1.0, help="max global grad norm (0: no clipping)")
    p.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon")
    p.add_argument("--pad", type=int, choices=[0, 1], default=0, help="1: one example per row")
    p.add_argument("--naive_mean", type=int, choices=[0, 1], default=0,
                   help="1: average per-micro-step means (biased; for demonstrations)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--compile", type=int, choices=[0, 1], default=0)
    p.add_argument("--flash", type=int, choices=[0, 1], default=0)
    p.add_argument("--write_checkpoint", default=None, help="write the initial model (fp32, version 3)")
    p.add_argument("--write_final_checkpoint", default=None, help="write the model after training")
    p.add_argument("--write_tokenizer", default=None, help="write the GPT-2 tokenizer file")
    p.add_argument("--encoder", default=os.path.join(REPO_DIR, "..", "shared", "gpt2", "encoder.json"))
    p.add_argument("--write_debug_state", default=None, help="write the debug state for test_gpt2")
    p.add_argument("--debug_steps", type=int, default=5, help="trajectory steps in the debug state")
    p.add_argument("--dump_grads", default=None, help="append each window's normalized gradient")
    p.add_argument("--log_losses", default=None, help="write 'step loss N' per step")
    args = p.parse_args(argv)

    for name in ("B", "T"):
        if getattr(args, name) < 1:
            raise Fatal(f"--{name} must be >= 1, got {getattr(args, name)}")
    BT = args.B * args.T
    if args.total_batch_size is not None:
        if args.total_batch_size < 1 or args.total_batch_size % BT:
            raise Fatal(f"--total_batch_size {args.total_batch_size} is not a positive multiple of "
                        f"B*T = {BT}")
        K = args.total_batch_size // BT
        if args.K is not None and args.K != K:
            raise Fatal(f"--K {args.K} disagrees with --total_batch_size {args.total_batch_size} "
                        f"(which gives K = {K})")
        args.K = K
    elif args.K is None:
        args.K = 1
    if args.K < 1:
        raise Fatal(f"--K must be >= 1, got {args.K}")
    checks = [("num_iterations", args.num_iterations >= 0, ">= 0"),
              ("warmup_iters", args.warmup_iters >= 0, ">= 0"),
              ("learning_rate", args.learning_rate >= 0, ">= 0"),
              ("lr_final_frac", 0.0 <= args.lr_final_frac <= 1.0, "in [0, 1]"),
              ("weight_decay", args.weight_decay >= 0, ">= 0"),
              ("grad_clip", args.grad_clip >= 0, ">= 0"),
              ("eps", args.eps > 0, "> 0"),
              ("threads", args.threads >= 0, ">= 0"),
              ("val_every", args.val_every >= 0, ">= 0"),
              ("val_max_steps", args.val_max_steps >= 1, ">= 1"),
              ("debug_steps", args.debug_steps >= 0, ">= 0")]
    for name, ok, what in checks:
        if not ok:
            raise Fatal(f"--{name} must be {what}, got {getattr(args, name)}")
    if args.num_iterations > 0 and not args.input_bin:
        raise Fatal("--num_iterations > 0 needs --input_bin")
    if args.input_bin and not glob.glob(args.input_bin):
        raise Fatal(f"--input_bin {args.input_bin}: no such file")
    if args.input_val_bin and not glob.glob(args.input_val_bin):
        raise Fatal(f"--input_val_bin {args.input_val_bin}: no such file")
    return args


def main(argv):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise Fatal("--device cuda: no CUDA device available")
        device = torch.device(args.device)
    if args.dtype == "bfloat16" and device.type != "cuda":
        raise Fatal("--dtype bfloat16 needs CUDA (the CPU oracle is fp32)")

    model = build_model(args)
    if args.T > model.maxT:
        raise Fatal(f"--T {args.T} exceeds the model's max_seq_len {model.maxT}")
    print(f"model: L={model.L} C={model.C} NH={model.NH} maxT={model.maxT} V={model.V} Vp={model.Vp} "
          f"params={model.num_file_params()} (file, padded)")

    if args.write_tokenizer:
        if not os.path.isfile(args.encoder):
            raise Fatal(f"--encoder {args.encoder}: no such file")
        formats.write_tokenizer(args.write_tokenizer, formats.gpt2_token_bytes(args.encoder))
        print(f"wrote tokenizer {args.write_tokenizer}")
    if args.write_checkpoint:
        model.write_checkpoint(args.write_checkpoint)
        print(f"wrote checkpoint {args.write_checkpoint}")
    if args.write_debug_state:
        t0 = time.perf_counter()
        write_debug_state(args, model, args.write_debug_state, args.B, args.T, args.K, args.debug_steps)
        print(f"debug state took {time.perf_counter() - t0:.2f} s")

    if args.num_iterations > 0:
        model.to(device)
        if args.flash:
            if hasattr(F, "scaled_dot_product_attention"):
                model.set_flash(True)
            else:
                print("note: --flash 1 ignored, this PyTorch has no scaled_dot_product_attention")
        if args.dtype == "bfloat16":
            def autocast():
                return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        else:
            autocast = contextlib.nullcontext
        train(args, model, device, autocast)
        if args.write_final_checkpoint:
            model.write_checkpoint(args.write_final_checkpoint)
            print(f"wrote final checkpoint {args.write_final_checkpoint}")
    elif args.write_final_checkpoint:
        model.write_checkpoint(args.write_final_checkpoint)
        print(f"wrote final checkpoint {args.write_final_checkpoint} (no training: the initial model)")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Fatal as e:
        print(f"train_gpt2.py: error: {e}", file=sys.stderr)
        sys.exit(1)
