/*
Test of attention_backward (llmc/cuda_attention.cuh).

Version
  llmc : attention_backward at several block sizes for its non-GEMM kernels (there is no naive GPU
         version: the CPU reference plays that role)
Setup: q, k, v and att (the bf16 softmax probabilities) are computed on the CPU and uploaded, so the
GPU backward and the reference start from the same bits; dinp starts as NaN (it must be overwritten).
Two runs must give the same bits.
Cases cover both paths of each non-GEMM kernel (the harness checks the launchers' choice):
  head split/merge 128-bit (hs = 64, 32, 16) and scalar (hs = 15, 18; every buffer at + 1 element);
  causal softmax backward 128-bit (T = 256, 72, 40) and scalar (T = 63, 38; att, datt at + 1 element).
Reference: double precision, with datt rounded to bf16 as the GPU stores it.
Tolerance, u = 2^-24 (derivation as in attention_forward.cu: a stored bf16 intermediate can differ
from the reference's by one bf16 ulp, <= 2^-7 relative):
  dv   : 2^-7 |ref| + accum_tol(T, sum_t |att dy|)
  dpre (not compared, used to bound the next step): E[t,s] = scale att (2^-7 |datt_s| +
         2^-7 sum_k att_k |datt_k| + accum_tol(T, sum_k att_k |datt_k|)) + 2^-7 |dpre|
  dq   : 2^-7 |ref| + sum_s E[t,s] |k_s| + accum_tol(T, sum_s |dpre k|)
  dk   : 2^-7 |ref| + sum_t E[t,s] |q_t| + accum_tol(T, sum_t |dpre q|)
*/
#include "common.h"
#include "../../llmc/cuda_attention.cuh"

struct AttBwdRef { std::vector<float> qkvr, att, dinp, tol_dinp; };

static AttBwdRef attention_backward_cpu(const std::vector<float>& inp, const std::vector<float>& dout, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const double scale = 1.0 / sqrt((double)hs);
    const size_t BTC = (size_t)B * T * C;
    AttBwdRef r;
    // q, k, v split by head
    r.qkvr.resize(3 * BTC);
    for (int which = 0; which < 3; which++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++)
                    for (int d = 0; d < hs; d++)
                        r.qkvr[which * BTC + (((size_t)b * NH + h) * T + t) * hs + d] = inp[((size_t)b * T + t) * 3 * C + which * C + h * hs + d];
    // forward probabilities, rounded to bf16 (what the GPU forward would have stored)
    r.att.assign((size_t)B * NH * T * T, 0.0f);
    for (int bh = 0; bh < B * NH; bh++) {
        const float* q = &r.qkvr[(size_t)bh * T * hs];
        const float* k = &r.qkvr[BTC + (size_t)bh * T * hs];
        for (int t = 0; t < T; t++) {
            std::vector<double> z(t + 1);
            double maxz = -1e300, sum = 0.0;
            for (int s = 0; s <= t; s++) {
                double dot = 0.0;
                for (int d = 0; d < hs; d++) { dot += (double)q[t * hs + d] * k[s * hs + d]; }
                z[s] = scale * bf16_round(dot);
                maxz = fmax(maxz, z[s]);
            }
            for (int s = 0; s <= t; s++) { z[s] = exp(z[s] - maxz); sum += z[s]; }
            for (int s = 0; s <= t; s++) { r.att[((size_t)bh * T + t) * T + s] = bf16_round(z[s] / sum); }
        }
    }
    // backward
    r.dinp.assign(3 * BTC, 0.0f);
    r.tol_dinp.assign(3 * BTC, 0.0f);
    std::vector<double> dy((size_t)T * hs), datt((size_t)T * T), dpre((size_t)T * T), E((size_t)T * T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const int bh = b * NH + h;
            const float* q = &r.qkvr[(size_t)bh * T * hs];
            const float* k = &r.qkvr[BTC + (size_t)bh * T * hs];
            const float* v = &r.qkvr[2 * BTC + (size_t)bh * T * hs];
            const float* A = &r.att[(size_t)bh * T * T];
            for (int t = 0; t < T; t++)
                for (int d = 0; d < hs; d++) { dy[t * hs + d] = dout[((size_t)b * T + t) * C + h * hs + d]; }
            // datt (bf16 as stored), dpre and its error bound E, row by row
            for (int t = 0; t < T; t++) {
                double dot = 0.0, mag = 0.0;
                for (int s = 0; s <= t; s++) {
                    double acc = 0.0;
                    for (int d = 0; d < hs; d++) { acc += dy[t * hs + d] * v[s * hs + d]; }
                    datt[(size_t)t * T + s] = bf16_round(acc);
                    dot += A[(size_t)t * T + s] * datt[(size_t)t * T + s];
                    mag += A[(size_t)t * T + s] * fabs(datt[(size_t)t * T + s]);
                }
                for (int s = 0; s < T; s++) {
                    size_t i = (size_t)t * T + s;
                    if (s > t) { dpre[i] = 0.0; E[i] = 0.0; continue; }
                    dpre[i] = scale * A[i] * (datt[i] - dot);
                    E[i] = scale * A[i] * (BF16_RTOL * fabs(datt[i]) + BF16_RTOL * mag + accum_tol(T, mag)) + BF16_RTOL * fabs(dpre[i]);
                }
            }
            for (int t = 0; t < T; t++) {
                for (int d = 0; d < hs; d++) {
                    // dq[t][d] = sum_s dpre[t][s] k[s][d]
                    double dq = 0.0, mq = 0.0, eq = 0.0;
                    for (int s = 0; s <= t; s++) {
                        size_t i = (size_t)t * T + s;
                        dq += dpre[i] * k[s * hs + d]; mq += fabs(dpre[i] * k[s * hs + d]); eq += E[i] * fabs(k[s * hs + d]);
                    }
                    // dk[t][d] = sum_{t' >= t} dpre[t'][t] q[t'][d]   (here t plays the role of s)
                    double dk = 0.0, mk = 0.0, ek = 0.0;
                    // dv[t][d] = sum_{t' >= t} att[t'][t] dy[t'][d]
                    double dv = 0.0, mv = 0.0;
                    for (int t2 = t; t2 < T; t2++) {
                        size_t i = (size_t)t2 * T + t;
                        dk += dpre[i] * q[t2 * hs + d]; mk += fabs(dpre[i] * q[t2 * hs + d]); ek += E[i] * fabs(q[t2 * hs + d]);
                        dv += A[i] * dy[t2 * hs + d]; mv += fabs(A[i] * dy[t2 * hs + d]);
                    }
                    size_t o = ((size_t)b * T + t) * 3 * C + h * hs + d;
                    r.dinp[o] = (float)dq;          r.tol_dinp[o] = (float)eq + accum_tol(T, mq);
                    r.dinp[o + C] = (float)dk;      r.tol_dinp[o + C] = (float)ek + accum_tol(T, mk);
                    r.dinp[o + 2 * C] = (float)dv;  r.tol_dinp[o + 2 * C] = accum_tol(T, mv);
                }
            }
        }
    }
    return r;
}

// offset: every buffer starts that many elements past an aligned allocation (1: nothing 16-byte aligned).
// heads_vec, softmax_vec: the elements per access the launchers must choose (x128::size or 1).
static void run_case(const char* label, MatmulContext* ctx, Rng* rng, int B, int T, int C, int NH, int offset,
                     int heads_vec, int softmax_vec) {
    const size_t BTC = (size_t)B * T * C, BNHTT = (size_t)B * NH * T * T;
    const int hs = C / NH;
    std::vector<float> inp = rand_bf16(3 * BTC, -1.0f, 1.0f, rng);
    std::vector<float> dout = rand_bf16(BTC, -1.0f, 1.0f, rng);
    AttBwdRef ref = attention_backward_cpu(inp, dout, B, T, C, NH);
    floatX* b_qkvr = dmalloc<floatX>(3 * BTC + offset);
    floatX* b_att = dmalloc<floatX>(BNHTT + offset);
    floatX* b_dout = dmalloc<floatX>(BTC + offset);
    floatX* b_dinp = dmalloc<floatX>(3 * BTC + offset);
    floatX* b_dqkvr = dmalloc<floatX>(3 * BTC + offset);
    floatX* b_datt = dmalloc<floatX>(BNHTT + offset);
    floatX *d_qkvr = b_qkvr + offset, *d_att = b_att + offset, *d_dout = b_dout + offset;
    floatX *d_dinp = b_dinp + offset, *d_dqkvr = b_dqkvr + offset, *d_datt = b_datt + offset;
    upload(d_qkvr, ref.qkvr); upload(d_att, ref.att); upload(d_dout, dout);
    char name[192];
    // the paths the launchers will take: split of dout (row stride C), merges into dinp (stride 3C)
    const int split = attention_heads_vec(d_dinp, d_dout, C, 0, hs), merge = attention_heads_vec(d_dqkvr, d_dinp, 3 * C, C, hs);
    const int soft = attention_softmax_vec(d_datt, d_att, T);
    const bool paths_ok = split == heads_vec && merge == heads_vec && soft == softmax_vec;
    printf("  %-44s %s  split %d, merge %d, softmax %d element(s) per access (expected %d, %d, %d)\n", label,
           paths_ok ? "ok  " : "FAIL", split, merge, soft, heads_vec, heads_vec, softmax_vec);
    if (!paths_ok) { exit(EXIT_FAILURE); }
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        cudaCheck(cudaMemset(d_dinp, 0xff, 3 * BTC * sizeof(floatX)));   // NaN: must be overwritten
        attention_backward(d_dinp, d_dqkvr, d_datt, d_dout, d_qkvr, d_att, B, T, C, NH, ctx, bs);
        snprintf(name, sizeof(name), "%s llmc block %d dinp (dq|dk|dv)", label, bs);
        validate(name, d_dinp, ref.dinp, BF16_RTOL, 0.0f, &ref.tol_dinp);
    }
    // the same bits twice
    floatX* b_dinp2 = dmalloc<floatX>(3 * BTC + offset);
    attention_backward(d_dinp, d_dqkvr, d_datt, d_dout, d_qkvr, d_att, B, T, C, NH, ctx);
    attention_backward(b_dinp2 + offset, d_dqkvr, d_datt, d_dout, d_qkvr, d_att, B, T, C, NH, ctx);
    snprintf(name, sizeof(name), "%s determinism dinp", label);
    check_bitwise_equal(name, d_dinp, b_dinp2 + offset, 3 * BTC * sizeof(floatX));
    cudaCheck(cudaFree(b_qkvr)); cudaCheck(cudaFree(b_att)); cudaCheck(cudaFree(b_dout));
    cudaCheck(cudaFree(b_dinp)); cudaCheck(cudaFree(b_dqkvr)); cudaCheck(cudaFree(b_datt)); cudaCheck(cudaFree(b_dinp2));
}

int main() {
    print_device_info();
    MatmulContext ctx = matmul_context_create(0, 32 << 20);
    Rng rng = rng_create(4242);

    printf("validation\n");
    const int P = x128::size;
    if (!quick_mode()) { run_case("B=4 T=256 C=768 NH=12", &ctx, &rng, 4, 256, 768, 12, 0, P, P); }
    run_case("B=2 T=72 C=128 NH=4", &ctx, &rng, 2, 72, 128, 4, 0, P, P);
    run_case("B=2 T=63 C=64 NH=4 (odd T: 2-byte-aligned rows of att)", &ctx, &rng, 2, 63, 64, 4, 0, P, 1);
    run_case("B=2 T=40 C=60 NH=4 (hs=15: scalar split/merge)", &ctx, &rng, 2, 40, 60, 4, 0, 1, P);
    run_case("B=2 T=38 C=72 NH=4 (hs=18, T=38: both scalar)", &ctx, &rng, 2, 38, 72, 4, 0, 1, 1);
    run_case("B=2 T=64 C=128 NH=4 (buffers + 1: both scalar)", &ctx, &rng, 2, 64, 128, 4, 1, 1, 1);

    const int B = 8, T = 1024, C = 768, NH = 12, hs = C / NH;
    if (skip_benchmarks("attention_backward")) { return 0; }
    printf("benchmark (B=%d T=%d C=%d NH=%d; FLOPs of the four batched GEMMs, full T x T)\n", B, T, C, NH);
    const size_t BTC = (size_t)B * T * C;
    floatX* d_qkvr = dmalloc<floatX>(3 * BTC);
    floatX* d_att = dmalloc<floatX>((size_t)B * NH * T * T);
    floatX* d_dout = dmalloc<floatX>(BTC);
    floatX* d_dinp = dmalloc<floatX>(3 * BTC);
    floatX* d_dqkvr = dmalloc<floatX>(3 * BTC);
    floatX* d_datt = dmalloc<floatX>((size_t)B * NH * T * T);
    upload(d_qkvr, rand_bf16(3 * BTC, -1.0f, 1.0f, &rng));
    upload(d_dout, rand_bf16(BTC, -1.0f, 1.0f, &rng));
    // plausible probabilities: run the forward once on random qkv
    {
        floatX* d_tmp_in = dmalloc<floatX>(3 * BTC);
        floatX* d_tmp_out = dmalloc<floatX>(BTC);
        upload(d_tmp_in, rand_bf16(3 * BTC, -1.0f, 1.0f, &rng));
        attention_forward(d_tmp_out, d_qkvr, d_att, d_tmp_in, B, T, C, NH, &ctx);
        cudaCheck(cudaFree(d_tmp_in)); cudaCheck(cudaFree(d_tmp_out));
    }
    const double flops = 8.0 * B * NH * (double)T * T * hs;
    const int block_sizes[] = {64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() { attention_backward(d_dinp, d_dqkvr, d_datt, d_dout, d_qkvr, d_att, B, T, C, NH, &ctx, bs); });
        print_benchmark("llmc", bs, ms, 0, flops);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_qkvr)); cudaCheck(cudaFree(d_att)); cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_dinp)); cudaCheck(cudaFree(d_dqkvr)); cudaCheck(cudaFree(d_datt));
    matmul_context_destroy(&ctx);
    printf("attention_backward: ALL OK\n");
    return 0;
}
