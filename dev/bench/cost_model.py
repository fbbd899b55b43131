#!/usr/bin/env python3
"""cost_model.py: a MODEL of what one micro-step of train_gpt2cu costs, kernel by kernel, with no GPU.

For a configuration (preset, B, T) it lists each kernel launch of the forward and the backward (per
layer kernels times L) with its FLOPs and the bytes it reads and writes, the attention both ways
(materialized, llmc/cuda_attention.cuh, and flash, llmc/cuda_flash_attention.cuh), and the time each
would take at a given peak compute and memory bandwidth by the roofline: max(FLOPs / peak, bytes / bw).

It is a MODEL, not a measurement, and every line it prints says so:
  - bytes are compulsory traffic: each operand read once and each result written once per launch
    (caches that help or tiles that re-read from DRAM are not modelled; flash attention re-reads K and V
    tiles once per query tile, which L2 absorbs in part: its figure is a lower bound);
  - FLOPs count a multiply-add as 2; the materialized attention's batched GEMMs compute the full T x T
    (cuBLASLt does not skip the masked half), flash attention only the causal half;
  - elementwise kernels count a few FLOPs per element (they are bandwidth-bound either way);
  - the optimizer (AdamW, once per window of K micro-steps) and communication are left out.
Usage:
  dev/bench/cost_model.py --preset d12 --B 16 --T 1024 --peak_tflops 989 --bandwidth_tbs 3.35
  dev/bench/cost_model.py --check      (self-consistency checks; exit 1 on failure)
"""
import argparse
import sys

PRESETS = {  # L, C, NH, as llmc/gpt2.h
    "tiny": (2, 64, 4), "small": (4, 128, 4),
    "d12": (12, 768, 12), "d24": (24, 1024, 16), "d36": (36, 1280, 20), "d48": (48, 1600, 25),
}
V, VP = 50257, 50304
BF16, F32 = 2, 4


class Kernel:
    def __init__(self, name, phase, flops, read, write, times=1, group="model"):
        self.name, self.phase, self.flops, self.read, self.write, self.times, self.group = name, phase, flops, read, write, times, group

    def total(self):
        return self.flops * self.times, self.read * self.times, self.write * self.times


def matmul(name, M, K, N, bias, extra_write=0, grad_bytes=F32):
    """out (M,N) = inp (M,K) . W^T (N,K) + b; its backward: dinp = dout . W, dW += dout^T . inp, db += sum dout."""
    fwd = Kernel(name, "forward", 2 * M * K * N, BF16 * (M * K + N * K + (N if bias else 0)), BF16 * M * N + extra_write)
    bwd = Kernel(name + " backward", "backward", 4 * M * K * N + (M * N if bias else 0),
                 BF16 * (2 * M * N + M * K + N * K) + grad_bytes * (N * K + (N if bias else 0)),   # dout (twice), inp, W, dW (+=)
                 BF16 * M * K + grad_bytes * (N * K + (N if bias else 0)))
    return fwd, bwd


def attention_ref(B, T, C, NH):
    hs, N, BTC = C // NH, B * NH, B * T * C
    tt = N * T * T
    f = [Kernel("attn ref: split heads x3", "forward", 0, BF16 * 3 * BTC, BF16 * 3 * BTC),
         Kernel("attn ref: Q.K^T (batched GEMM)", "forward", 2 * tt * hs, BF16 * 2 * BTC, BF16 * tt),
         Kernel("attn ref: causal softmax", "forward", 5 * tt, BF16 * tt, BF16 * tt),
         Kernel("attn ref: att.V (batched GEMM)", "forward", 2 * tt * hs, BF16 * (tt + BTC), BF16 * BTC),
         Kernel("attn ref: merge heads", "forward", 0, BF16 * BTC, BF16 * BTC)]
    b = [Kernel("attn ref: split dy", "backward", 0, BF16 * BTC, BF16 * BTC),
         Kernel("attn ref: datt = dy.V^T", "backward", 2 * tt * hs, BF16 * 2 * BTC, BF16 * tt),
         Kernel("attn ref: dv = att^T.dy", "backward", 2 * tt * hs, BF16 * (tt + BTC), BF16 * BTC),
         Kernel("attn ref: softmax backward", "backward", 4 * tt, BF16 * 2 * tt, BF16 * tt),
         Kernel("attn ref: dq = dpre.K", "backward", 2 * tt * hs, BF16 * (tt + BTC), BF16 * BTC),
         Kernel("attn ref: dk = dpre^T.Q", "backward", 2 * tt * hs, BF16 * (tt + BTC), BF16 * BTC),
         Kernel("attn ref: merge heads x3", "backward", 0, BF16 * 3 * BTC, BF16 * 3 * BTC)]
    return f, b


def attention_flash(B, T, C, NH):
    hs, N, BTC = C // NH, B * NH, B * T * C
    half = N * T * T * hs   # one causal T x T x hs matmul: 2 * (T^2 / 2) * hs per head
    f = [Kernel("attn flash: forward", "forward", 2 * half + 6 * N * T * T // 2, BF16 * 3 * BTC, BF16 * BTC + F32 * N * T)]
    b = [Kernel("attn flash: D = dout.out", "backward", 2 * BTC, BF16 * 2 * BTC, F32 * N * T),
         Kernel("attn flash: dk, dv pass", "backward", 4 * half + 5 * N * T * T // 2, BF16 * 4 * BTC + 2 * F32 * N * T, BF16 * 2 * BTC),
         Kernel("attn flash: dq pass", "backward", 3 * half + 5 * N * T * T // 2, BF16 * 4 * BTC + 2 * F32 * N * T, BF16 * BTC)]
    return f, b


def micro_step(preset, B, T, attn):
    L, C, NH = PRESETS[preset]
    BT, BTC = B * T, B * T * C
    ks = []
    ks.append(Kernel("encoder", "forward", BTC, BF16 * 2 * BTC + 4 * BT, BF16 * BTC))
    ks.append(Kernel("layernorm (ln1 of layer 0)", "forward", 8 * BTC, BF16 * BTC, BF16 * BTC + F32 * 2 * BT))
    per_layer = []
    qkv_f, qkv_b = matmul("matmul qkv", BT, C, 3 * C, True)
    ap_f, ap_b = matmul("matmul attproj", BT, C, C, True)
    fc_f, fc_b = matmul("matmul fc + gelu", BT, C, 4 * C, True, extra_write=BF16 * BT * 4 * C)  # writes fch and gelu(fch)
    fp_f, fp_b = matmul("matmul fcproj", BT, 4 * C, C, True)
    att_f, att_b = attention_flash(B, T, C, NH) if attn == "flash" else attention_ref(B, T, C, NH)
    res_ln = Kernel("residual + layernorm", "forward", 9 * BTC, BF16 * 2 * BTC, BF16 * 2 * BTC + F32 * 2 * BT)
    ln_b = Kernel("layernorm backward", "backward", 12 * BTC, BF16 * 3 * BTC + F32 * 2 * BT, BF16 * BTC + F32 * 2 * C)
    fwd = [qkv_f] + att_f + [ap_f, res_ln, fc_f, fp_f, res_ln]
    # the GELU backward is fused into fcproj's backward (it reads fch): one more BT*4C read
    fp_b.read += BF16 * BT * 4 * C
    bwd = [fp_b, fc_b, ln_b, ap_b] + att_b + [qkv_b, ln_b]
    for k in fwd + bwd:
        per_layer.append(Kernel(k.name, k.phase, k.flops, k.read, k.write, times=L))
    ks += [k for k in per_layer if k.phase == "forward"]
    lm_f, lm_b = matmul("matmul LM head (wte)", BT, C, VP, False)
    ks.append(lm_f)
    ks.append(Kernel("fused classifier (softmax, loss, dlogits)", "forward", 6 * BT * VP, BF16 * BT * VP + 4 * BT, BF16 * BT * VP + F32 * BT))
    ks.append(lm_b)
    ks.append(Kernel("layernorm backward (final)", "backward", 12 * BTC, BF16 * 3 * BTC + F32 * 2 * BT, BF16 * BTC + F32 * 2 * C))
    ks += [k for k in per_layer if k.phase == "backward"]
    ks.append(Kernel("encoder backward", "backward", 2 * BTC, BF16 * BTC + 4 * BT + F32 * 2 * BTC, F32 * 2 * BTC))
    for k in ks:
        k.group = "attention" if k.name.startswith("attn") else "other"
    return ks


def seconds(flops, nbytes, peak, bw):
    return max(flops / peak, nbytes / bw)


def report(preset, B, T, peak_tflops, bw_tbs):
    peak, bw = peak_tflops * 1e12, bw_tbs * 1e12
    print(f"MODEL (not a measurement): one micro-step (forward + backward) of train_gpt2cu, {preset} B={B} T={T}, "
          f"roofline at {peak_tflops:g} TFLOP/s and {bw_tbs:g} TB/s; compulsory traffic, AdamW and communication left out")
    sums = {}
    for attn in ("ref", "flash"):
        ks = micro_step(preset, B, T, attn)
        print(f"\nMODEL, attention = {attn}")
        print(f"  {'kernel':44s} {'x':>3s} {'GFLOP':>10s} {'read MB':>10s} {'write MB':>10s} {'model ms':>9s}")
        tot = [0, 0, 0, 0.0]
        att = [0, 0, 0, 0.0]
        for k in ks:
            f, r, w = k.total()
            t = seconds(k.flops, k.read + k.write, peak, bw) * k.times
            print(f"  {k.name:44s} {k.times:3d} {f / 1e9:10.2f} {r / 1e6:10.1f} {w / 1e6:10.1f} {t * 1e3:9.3f}")
            for acc in ([tot] + ([att] if k.group == "attention" else [])):
                acc[0] += f; acc[1] += r; acc[2] += w; acc[3] += t
        print(f"  {'MODEL total':44s} {'':3s} {tot[0] / 1e9:10.2f} {tot[1] / 1e6:10.1f} {tot[2] / 1e6:10.1f} {tot[3] * 1e3:9.3f}")
        print(f"  {'MODEL attention only':44s} {'':3s} {att[0] / 1e9:10.2f} {att[1] / 1e6:10.1f} {att[2] / 1e6:10.1f} {att[3] * 1e3:9.3f}")
        sums[attn] = (tot, att)
    (tr, ar), (tf, af) = sums["ref"], sums["flash"]
    print(f"\nMODEL side by side (attention kernels): ref {ar[0] / 1e9:.1f} GFLOP, {(ar[1] + ar[2]) / 1e9:.2f} GB moved, {ar[3] * 1e3:.2f} ms"
          f" | flash {af[0] / 1e9:.1f} GFLOP, {(af[1] + af[2]) / 1e9:.2f} GB moved, {af[3] * 1e3:.2f} ms")
    print(f"MODEL micro-step: ref {tr[3] * 1e3:.2f} ms, flash {tf[3] * 1e3:.2f} ms at the roofline (a lower bound on time, not a prediction)")
    L, C, NH = PRESETS[preset]
    att_bytes = L * B * NH * T * T * BF16
    lse_bytes = L * B * NH * T * F32
    print(f"MODEL activation memory: the materialized attention keeps (L,B,NH,T,T) bf16 = {att_bytes / 2**20:.0f} MiB; "
          f"flash keeps the logsumexp (L,B,NH,T) fp32 = {lse_bytes / 2**20:.0f} MiB")
    return sums


def check():
    ok = True

    def expect(cond, what):
        nonlocal ok
        print(("PASS " if cond else "FAIL ") + what)
        ok = ok and cond

    for preset, B, T in (("d12", 16, 1024), ("d24", 4, 1024), ("tiny", 4, 64)):
        L, C, NH = PRESETS[preset]
        for attn in ("ref", "flash"):
            ks = micro_step(preset, B, T, attn)
            f = sum(k.total()[0] for k in ks)
            # independent estimate: the matmuls are 6 FLOPs per parameter per token (2 forward, 4 backward),
            # the parameters that multiply activations being 12 C^2 per layer and the LM head C*Vp
            six_n = 6 * B * T * (12 * C * C * L + C * VP)
            attn_f = sum(k.total()[0] for k in ks if k.group == "attention")
            mm_f = sum(k.total()[0] for k in ks if k.name.startswith("matmul"))
            expect(abs(mm_f - six_n) / six_n < 0.01, f"{preset} B={B} T={T} {attn}: matmul FLOPs {mm_f:.4g} within 1% of 6 N tokens {six_n:.4g}")
            expect(f >= mm_f + attn_f, f"{preset} {attn}: total FLOPs {f:.4g} >= matmuls + attention")
    for T in (1024,):
        r = micro_step("d12", 16, T, "ref")
        fl = micro_step("d12", 16, T, "flash")
        br = sum(k.total()[1] + k.total()[2] for k in r if k.group == "attention")
        bf = sum(k.total()[1] + k.total()[2] for k in fl if k.group == "attention")
        expect(bf < br / 5, f"d12 B=16 T={T}: flash attention traffic {bf / 1e9:.2f} GB < 1/5 of materialized {br / 1e9:.2f} GB")
        fr = sum(k.total()[0] for k in r if k.group == "attention")
        ff = sum(k.total()[0] for k in fl if k.group == "attention")
        # materialized: 6 full T x T x hs matmuls (2 N T^2 hs each, 12 in all); flash: 9 causal halves (N T^2 hs
        # each, 9 in all), plus the softmax terms: about 9/12
        expect(0.70 < ff / fr < 0.80, f"d12 B=16 T={T}: flash attention FLOPs / materialized = {ff / fr:.3f} (about 9/12)")
        # the rest of the micro-step is the same kernels
        rest_r = [k.total() for k in r if k.group != "attention"]
        rest_f = [k.total() for k in fl if k.group != "attention"]
        expect(rest_r == rest_f, "the non-attention kernels are the same in both")
    return ok


def main():
    ap = argparse.ArgumentParser(description="MODEL of per-kernel FLOPs, bytes and roofline time of one micro-step (no GPU)")
    ap.add_argument("--preset", default="d12", choices=sorted(PRESETS))
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak, TFLOP/s (989: H100 SXM datasheet)")
    ap.add_argument("--bandwidth_tbs", type=float, default=3.35, help="memory bandwidth, TB/s (3.35: H100 SXM datasheet)")
    ap.add_argument("--check", action="store_true", help="self-consistency checks instead of the table")
    a = ap.parse_args()
    if a.check:
        sys.exit(0 if check() else 1)
    if a.B <= 0 or a.T <= 0 or a.peak_tflops <= 0 or a.bandwidth_tbs <= 0:
        ap.error("--B, --T, --peak_tflops and --bandwidth_tbs must be positive")
    report(a.preset, a.B, a.T, a.peak_tflops, a.bandwidth_tbs)


if __name__ == "__main__":
    main()
