/*
Test of flash_attention_forward / flash_attention_backward (llmc/cuda_flash_attention.cuh), side by side
with the materialized reference attention (attention_forward / attention_backward of
llmc/cuda_attention.cuh) on the same inputs and the same CPU reference.

Versions
  flash : the FlashAttention-2 style kernels (fixed block of 128 threads: the tiles are sized for it, so
          there is no block size to sweep)
  ref   : the materialized attention at block sizes 128 and 1024 for its non-GEMM kernels
Cases: head sizes 64 and 128, T in {64, 63, 100, 256} (63 and 100: the last tiles are partial), several
B and NH; and head sizes 16 and 32 (the tiny and small presets) at T 63 and 100. Outputs start as NaN (every element must be written). The flash backward runs twice and must
give the same bits (no atomics). Run time under the CPU emulation: well under a minute.

Reference: double precision from the bf16 inputs, no intermediate rounding: x[t,s] = scale q_t.k_s,
p = softmax over s <= t, out = sum p v, lse = logsumexp_s x; dP = dout.v, D = sum_s p dP,
dS = p (dP - D), dq = scale sum_s dS k, dk = scale sum_t dS q, dv = sum_t p dout.

Tolerances (u = 2^-24; "2^-7" is the bf16 rounding of 2^-8 with a factor 2 of margin, BF16_RTOL):
  a logit's error: flash computes q.k in fp32 (hs terms) and scales it:
      dx_t = scale accum_tol(hs, max_s sum_d |q k|) + 2u max_s |x|
  lse (flash): 2 dx_t + accum_tol(T, 1) + 2^-21 (|lse| + 1)           (fp32 sum of exps; expf, logf ulps)
  rho: the relative error of one stored probability (and of the intermediates after it):
      flash  2^-7 + 2 (dx_t + tol_lse_t + 2^-21)     P and dS rounded to bf16 for the tensor cores
      ref    2^-7 + 2 max_s(scale 2^-7 |q.k|) + 2 (T+8) u + 2 * 2^-7
             (preatt, att, datt and dpreatt are each stored in bf16; see attention_forward.cu)
  out  : 2^-7 |out| + rho_t sum_s p |v| + accum_tol(T, sum_s p |v|)
  dv_s : 2^-7 |dv| + sum_t rho_t p |dout_t| + accum_tol(T, sum_t p |dout_t|)
  per (t,s), the error of the scaled dS that feeds dq and dk:
      E = scale p (rho_t (|dP - D| + |dP| + sum_k p_k |dP_k|) + dD_t + accum_tol(hs, sum_d |dout v|))
      dD_t = sum_d |dout_td| tol_out_td + accum_tol(hs, sum_d |dout out|)   (flash: D from the bf16 out)
  dq_t : 2^-7 |dq| + sum_s E |k_s| + accum_tol(T, scale sum_s |dS k|); dk_s likewise over t with q_t.
*/
#include "common.h"
#include "../../llmc/cuda_attention.cuh"
#include "../../llmc/cuda_flash_attention.cuh"

struct Ref {
    std::vector<float> out, lse, dqkv;                         // exact (double, then float)
    std::vector<float> tol_out[2], tol_lse, tol_dqkv[2];       // [0] flash, [1] ref
};

static Ref reference(const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int NH, int hs) {
    const int C = NH * hs, C3 = 3 * C;
    const double scale = 1.0 / sqrt((double)hs), r7 = BF16_RTOL, u = FP32_EPS;
    Ref r;
    const size_t BTC = (size_t)B * T * C;
    r.out.assign(BTC, 0.0f); r.lse.assign((size_t)B * NH * T, 0.0f); r.dqkv.assign(3 * BTC, 0.0f);
    r.tol_lse.assign((size_t)B * NH * T, 0.0f);
    for (int i = 0; i < 2; i++) { r.tol_out[i].assign(BTC, 0.0f); r.tol_dqkv[i].assign(3 * BTC, 0.0f); }
    std::vector<double> p((size_t)T * T), dP((size_t)T * T), dS((size_t)T * T), E[2], D(T), rho[2];
    E[0].resize((size_t)T * T); E[1].resize((size_t)T * T); rho[0].resize(T); rho[1].resize(T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            auto Q = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * C3 + h * hs + d]; };
            auto K = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * C3 + C + h * hs + d]; };
            auto V = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * C3 + 2 * C + h * hs + d]; };
            auto dO = [&](int t, int d) { return (double)dout[((size_t)b * T + t) * C + h * hs + d]; };
            const size_t bh = (size_t)b * NH + h;
            // forward
            for (int t = 0; t < T; t++) {
                double m = -1e300, maxmag = 0.0, maxx = 0.0, maxpre = 0.0;
                for (int s = 0; s <= t; s++) {
                    double dot = 0.0, mag = 0.0;
                    for (int d = 0; d < hs; d++) { dot += Q(t, d) * K(s, d); mag += fabs(Q(t, d) * K(s, d)); }
                    p[(size_t)t * T + s] = scale * dot;
                    m = fmax(m, scale * dot); maxmag = fmax(maxmag, mag); maxx = fmax(maxx, fabs(scale * dot)); maxpre = fmax(maxpre, fabs(dot));
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) { sum += exp(p[(size_t)t * T + s] - m); }
                const double lse = m + log(sum);
                for (int s = 0; s < T; s++) { p[(size_t)t * T + s] = s <= t ? exp(p[(size_t)t * T + s] - lse) : 0.0; }
                const double dx = scale * accum_tol(hs, maxmag) + 2.0 * u * maxx;
                const double tl = 2.0 * dx + accum_tol(T, 1.0) + (fabs(lse) + 1.0) / 2097152.0;
                r.lse[bh * T + t] = (float)lse;
                r.tol_lse[bh * T + t] = (float)tl;
                rho[0][t] = r7 + 2.0 * (dx + tl + 1.0 / 2097152.0);
                rho[1][t] = r7 + 2.0 * scale * r7 * maxpre + 2.0 * (T + 8) * u + 2.0 * r7;
                for (int d = 0; d < hs; d++) {
                    double y = 0.0, mag = 0.0;
                    for (int s = 0; s <= t; s++) { y += p[(size_t)t * T + s] * V(s, d); mag += p[(size_t)t * T + s] * fabs(V(s, d)); }
                    size_t o = ((size_t)b * T + t) * C + h * hs + d;
                    r.out[o] = (float)y;
                    for (int i = 0; i < 2; i++) { r.tol_out[i][o] = (float)(rho[i][t] * mag + accum_tol(T, mag)); }
                }
            }
            // backward
            for (int t = 0; t < T; t++) {
                double Dt = 0.0, spd = 0.0, omag = 0.0, dD_out = 0.0;
                for (int d = 0; d < hs; d++) {
                    size_t o = ((size_t)b * T + t) * C + h * hs + d;
                    omag += fabs(dO(t, d) * r.out[o]);
                    dD_out += fabs(dO(t, d)) * (r7 * fabs(r.out[o]) + r.tol_out[0][o]);
                }
                for (int s = 0; s <= t; s++) {
                    double acc = 0.0;
                    for (int d = 0; d < hs; d++) { acc += dO(t, d) * V(s, d); }
                    dP[(size_t)t * T + s] = acc;
                    Dt += p[(size_t)t * T + s] * acc;
                    spd += p[(size_t)t * T + s] * fabs(acc);
                }
                const double dD[2] = {dD_out + accum_tol(hs, omag), 0.0};
                for (int s = 0; s < T; s++) {
                    size_t i = (size_t)t * T + s;
                    if (s > t) { dS[i] = 0.0; E[0][i] = E[1][i] = 0.0; continue; }
                    dS[i] = p[i] * (dP[i] - Dt);
                    double vmag = 0.0;
                    for (int d = 0; d < hs; d++) { vmag += fabs(dO(t, d) * V(s, d)); }
                    for (int k = 0; k < 2; k++) {
                        E[k][i] = scale * p[i] * (rho[k][t] * (fabs(dP[i] - Dt) + fabs(dP[i]) + spd) + dD[k] + accum_tol(hs, vmag));
                    }
                }
            }
            for (int t = 0; t < T; t++) {
                for (int d = 0; d < hs; d++) {
                    double dq = 0.0, mq = 0.0, eq[2] = {0.0, 0.0};
                    for (int s = 0; s <= t; s++) {
                        size_t i = (size_t)t * T + s;
                        dq += scale * dS[i] * K(s, d); mq += scale * fabs(dS[i] * K(s, d));
                        for (int k = 0; k < 2; k++) { eq[k] += E[k][i] * fabs(K(s, d)); }
                    }
                    // here t is the key: dk_t = scale sum_{t2 >= t} dS[t2,t] q_t2, dv_t = sum p[t2,t] dout_t2
                    double dk = 0.0, mk = 0.0, ek[2] = {0.0, 0.0}, dv = 0.0, mv = 0.0, ev[2] = {0.0, 0.0};
                    for (int t2 = t; t2 < T; t2++) {
                        size_t i = (size_t)t2 * T + t;
                        dk += scale * dS[i] * Q(t2, d); mk += scale * fabs(dS[i] * Q(t2, d));
                        dv += p[i] * dO(t2, d); mv += p[i] * fabs(dO(t2, d));
                        for (int k = 0; k < 2; k++) { ek[k] += E[k][i] * fabs(Q(t2, d)); ev[k] += rho[k][t2] * p[i] * fabs(dO(t2, d)); }
                    }
                    size_t o = ((size_t)b * T + t) * C3 + h * hs + d;
                    r.dqkv[o] = (float)dq; r.dqkv[o + C] = (float)dk; r.dqkv[o + 2 * C] = (float)dv;
                    for (int k = 0; k < 2; k++) {
                        r.tol_dqkv[k][o] = (float)(eq[k] + accum_tol(T, mq));
                        r.tol_dqkv[k][o + C] = (float)(ek[k] + accum_tol(T, mk));
                        r.tol_dqkv[k][o + 2 * C] = (float)(ev[k] + accum_tol(T, mv));
                    }
                }
            }
        }
    }
    return r;
}

static void run_case(MatmulContext* ctx, Rng* rng, int B, int T, int NH, int hs) {
    const int C = NH * hs;
    const size_t BTC = (size_t)B * T * C, N = (size_t)B * NH * T;
    char label[64], name[160];
    snprintf(label, sizeof(label), "hs=%d B=%d T=%d NH=%d", hs, B, T, NH);
    std::vector<float> qkv = rand_bf16(3 * BTC, -2.0f, 2.0f, rng);
    std::vector<float> dout = rand_bf16(BTC, -1.0f, 1.0f, rng);
    Ref ref = reference(qkv, dout, B, T, NH, hs);

    floatX* d_qkv = to_device_bf16(qkv);
    floatX* d_dout = to_device_bf16(dout);
    floatX* d_out = dmalloc<floatX>(BTC);
    floatX* d_dqkv = dmalloc<floatX>(3 * BTC);
    floatX* d_dqkv2 = dmalloc<floatX>(3 * BTC);
    float* d_lse = dmalloc<float>(N);
    float* d_D = dmalloc<float>(N);

    // flash
    cudaCheck(cudaMemset(d_out, 0xff, BTC * sizeof(floatX)));
    cudaCheck(cudaMemset(d_lse, 0xff, N * sizeof(float)));
    flash_attention_forward(d_out, d_lse, d_qkv, B, T, C, NH, 0);
    snprintf(name, sizeof(name), "%s flash out", label);  validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out[0]);
    snprintf(name, sizeof(name), "%s flash lse", label);  validate(name, d_lse, ref.lse, 0.0f, 0.0f, &ref.tol_lse);
    cudaCheck(cudaMemset(d_dqkv, 0xff, 3 * BTC * sizeof(floatX)));
    flash_attention_backward(d_dqkv, d_D, d_dout, d_qkv, d_out, d_lse, B, T, C, NH, 0);
    snprintf(name, sizeof(name), "%s flash dqkv", label); validate(name, d_dqkv, ref.dqkv, BF16_RTOL, 0.0f, &ref.tol_dqkv[0]);
    cudaCheck(cudaMemset(d_dqkv2, 0xff, 3 * BTC * sizeof(floatX)));
    flash_attention_backward(d_dqkv2, d_D, d_dout, d_qkv, d_out, d_lse, B, T, C, NH, 0);
    snprintf(name, sizeof(name), "%s flash dqkv, second run", label);
    check_bitwise_equal(name, d_dqkv, d_dqkv2, 3 * BTC * sizeof(floatX));

    // the materialized reference attention, same inputs
    floatX* d_inp = dmalloc<floatX>(3 * BTC);   // attention_forward clobbers its input
    floatX* d_qkvr = dmalloc<floatX>(3 * BTC);
    floatX* d_dqkvr = dmalloc<floatX>(3 * BTC);
    floatX* d_att = dmalloc<floatX>((size_t)B * NH * T * T);
    floatX* d_datt = dmalloc<floatX>((size_t)B * NH * T * T);
    const int block_sizes[] = {128, 1024};
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        upload(d_inp, qkv);
        cudaCheck(cudaMemset(d_out, 0xff, BTC * sizeof(floatX)));
        attention_forward(d_out, d_qkvr, d_att, d_inp, B, T, C, NH, ctx, bs);
        snprintf(name, sizeof(name), "%s ref block %d out", label, bs);  validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out[1]);
        cudaCheck(cudaMemset(d_dqkv, 0xff, 3 * BTC * sizeof(floatX)));
        attention_backward(d_dqkv, d_dqkvr, d_datt, d_dout, d_qkvr, d_att, B, T, C, NH, ctx, bs);
        snprintf(name, sizeof(name), "%s ref block %d dqkv", label, bs); validate(name, d_dqkv, ref.dqkv, BF16_RTOL, 0.0f, &ref.tol_dqkv[1]);
    }
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dqkv));
    cudaCheck(cudaFree(d_dqkv2)); cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_D)); cudaCheck(cudaFree(d_inp));
    cudaCheck(cudaFree(d_qkvr)); cudaCheck(cudaFree(d_dqkvr)); cudaCheck(cudaFree(d_att)); cudaCheck(cudaFree(d_datt));
}

int main() {
    print_device_info();
    MatmulContext ctx = matmul_context_create(0, 32 << 20);
    Rng rng = rng_create(20231);

    printf("validation\n");
    const int cases[][4] = {   // B, T, NH, hs
        {2, 64, 2, 64}, {1, 63, 3, 64}, {2, 100, 2, 64}, {1, 256, 2, 64},
        {1, 64, 2, 128}, {2, 63, 1, 128}, {1, 100, 2, 128}, {1, 256, 1, 128},
        {2, 63, 4, 16}, {1, 100, 4, 32},   // the test presets' head sizes (tiny: 16, small: 32)
    };
    const int quick_cases[][4] = {{1, 63, 3, 64}, {2, 63, 1, 128}, {2, 63, 4, 16}};   // each head size once, partial tiles
    if (quick_mode()) {
        for (const auto& c : quick_cases) { run_case(&ctx, &rng, c[0], c[1], c[2], c[3]); }
    } else {
        for (const auto& c : cases) { run_case(&ctx, &rng, c[0], c[1], c[2], c[3]); }
    }
    matmul_context_destroy(&ctx);   // the benchmark below times flash attention only

    if (skip_benchmarks("flash_attention")) { return 0; }
    const int B = 8, T = 1024, NH = 12, hs = 64, C = NH * hs;
    const size_t BTC = (size_t)B * T * C, N = (size_t)B * NH * T;
    printf("benchmark (B=%d T=%d C=%d NH=%d; causal FLOPs: forward 2 N T^2 hs, backward 7 N T^2 hs, N = B NH)\n", B, T, C, NH);
    floatX* d_qkv = dmalloc<floatX>(3 * BTC);
    floatX* d_dout = dmalloc<floatX>(BTC);
    floatX* d_out = dmalloc<floatX>(BTC);
    floatX* d_dqkv = dmalloc<floatX>(3 * BTC);
    float* d_lse = dmalloc<float>(N);
    float* d_D = dmalloc<float>(N);
    upload(d_qkv, rand_bf16(3 * BTC, -1.0f, 1.0f, &rng));
    upload(d_dout, rand_bf16(BTC, -1.0f, 1.0f, &rng));
    const double nt2h = (double)B * NH * T * T * hs;
    float ms = benchmark_ms(10, [&]() { flash_attention_forward(d_out, d_lse, d_qkv, B, T, C, NH, 0); });
    print_benchmark("flash forward", flash::THREADS, ms, 0, 2.0 * nt2h);
    ms = benchmark_ms(10, [&]() { flash_attention_backward(d_dqkv, d_D, d_dout, d_qkv, d_out, d_lse, B, T, C, NH, 0); });
    print_benchmark("flash backward", flash::THREADS, ms, 0, 7.0 * nt2h);
    cudaCheck(cudaFree(d_qkv)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_dqkv));
    cudaCheck(cudaFree(d_lse)); cudaCheck(cudaFree(d_D));
    printf("flash_attention: ALL OK\n");
    return 0;
}
