/*
Test of attention_forward (llmc/cuda_attention.cuh): causal multi-head self-attention from qkv (B,T,3C).

Versions
  naive : one thread per (b, t, head), everything in fp32 registers, no stored intermediates (this file)
  llmc  : attention_forward (split heads, cuBLASLt batched Q.K^T, causal softmax kernel, batched A.V,
          merge heads) at several block sizes for its non-GEMM kernels
Checks: out (B,T,C); for llmc also qkvr (an exact copy, tolerance 0) and att (B,NH,T,T) including exact
zeros above the diagonal (att starts as NaN), and that two runs give the same bits. inp is re-uploaded
before every llmc run (the launcher clobbers it).
Cases cover both paths of each non-GEMM kernel (the harness checks the launchers' choice):
  head split/merge 128-bit (hs = 64, 32, 16) and scalar (hs = 15, 18; every buffer at + 1 element);
  causal softmax 128-bit (T = 256, 72, 40) and scalar (T = 63, 38; att at + 1 element).
Reference: double precision, with preatt rounded to bf16 as the GPU stores it.
Tolerance: if the GPU's fp32 Q.K^T lands on the other side of a bf16 rounding boundary, its preatt is
one bf16 ulp (<= 2^-7 relative) away from the reference's, so each scaled logit z moves by at most
dz = scale 2^-7 |preatt|, and the softmax probabilities by at most 2 max_row(dz) relative. So
  att : 2^-7 |p| (its own rounding) + p (2 max_row(dz) + 2 (T + 8) 2^-24)
  out : 2^-7 |y| + rel_row * sum_s p_s |v_s| + accum_tol(T, sum_s p_s |v_s|), rel_row = att's relative bound
*/
#include "common.h"
#include "../../llmc/cuda_attention.cuh"

// naive: one thread per (b, t, h); needs hs <= 128
static __global__ void attention_forward_naive_kernel(floatX* out, const floatX* inp, int B, int T, int C, int NH) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * T * NH) { return; }
    const int h = idx % NH, t = (idx / NH) % T, b = idx / (NH * T);
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const floatX* q = inp + ((size_t)b * T + t) * C3 + h * hs;
    float maxval = -FLT_MAX;
    for (int s = 0; s <= t; s++) {
        const floatX* k = inp + ((size_t)b * T + s) * C3 + C + h * hs;
        float dot = 0.0f;
        for (int d = 0; d < hs; d++) { dot += to_float(q[d]) * to_float(k[d]); }
        maxval = fmaxf(maxval, dot * scale);
    }
    float sum = 0.0f;
    float acc[128];
    for (int d = 0; d < hs; d++) { acc[d] = 0.0f; }
    for (int s = 0; s <= t; s++) {
        const floatX* k = inp + ((size_t)b * T + s) * C3 + C + h * hs;
        const floatX* v = inp + ((size_t)b * T + s) * C3 + 2 * C + h * hs;
        float dot = 0.0f;
        for (int d = 0; d < hs; d++) { dot += to_float(q[d]) * to_float(k[d]); }
        float e = expf(dot * scale - maxval);
        sum += e;
        for (int d = 0; d < hs; d++) { acc[d] += e * to_float(v[d]); }
    }
    floatX* o = out + ((size_t)b * T + t) * C + h * hs;
    for (int d = 0; d < hs; d++) { o[d] = from_float<floatX>(acc[d] / sum); }
}

struct AttRef { std::vector<float> qkvr, att, out, tol_att, tol_out; };

static AttRef attention_forward_cpu(const std::vector<float>& inp, int B, int T, int C, int NH) {
    const int hs = C / NH;
    const double scale = 1.0 / sqrt((double)hs);
    const size_t BTC = (size_t)B * T * C;
    AttRef r;
    r.qkvr.resize(3 * BTC);
    for (int which = 0; which < 3; which++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++)
                    for (int d = 0; d < hs; d++)
                        r.qkvr[which * BTC + (((size_t)b * NH + h) * T + t) * hs + d] = inp[((size_t)b * T + t) * 3 * C + which * C + h * hs + d];
    r.att.assign((size_t)B * NH * T * T, 0.0f);
    r.tol_att.assign((size_t)B * NH * T * T, 0.0f);
    r.out.resize(BTC);
    r.tol_out.resize(BTC);
    std::vector<double> z(T), p(T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* q = &r.qkvr[(((size_t)b * NH + h) * T) * hs];
            const float* k = &r.qkvr[BTC + (((size_t)b * NH + h) * T) * hs];
            const float* v = &r.qkvr[2 * BTC + (((size_t)b * NH + h) * T) * hs];
            for (int t = 0; t < T; t++) {
                double maxz = -1e300, maxdz = 0.0;
                for (int s = 0; s <= t; s++) {
                    double dot = 0.0;
                    for (int d = 0; d < hs; d++) { dot += (double)q[t * hs + d] * k[s * hs + d]; }
                    double pre = bf16_round(dot);   // stored as bf16 by the GPU
                    z[s] = scale * pre;
                    maxz = fmax(maxz, z[s]);
                    maxdz = fmax(maxdz, scale * BF16_RTOL * fabs(pre));
                }
                double sum = 0.0;
                for (int s = 0; s <= t; s++) { p[s] = exp(z[s] - maxz); sum += p[s]; }
                const double rel = 2.0 * maxdz + 2.0 * (T + 8) * FP32_EPS;
                float* att_row = &r.att[(((size_t)b * NH + h) * T + t) * T];
                float* tol_row = &r.tol_att[(((size_t)b * NH + h) * T + t) * T];
                for (int s = 0; s <= t; s++) {
                    p[s] /= sum;
                    att_row[s] = (float)p[s];
                    tol_row[s] = (float)(p[s] * rel);
                }
                const double rel_y = rel + BF16_RTOL;   // the GPU's att is also rounded to bf16
                for (int d = 0; d < hs; d++) {
                    double y = 0.0, mag = 0.0;
                    for (int s = 0; s <= t; s++) { y += p[s] * v[s * hs + d]; mag += p[s] * fabs(v[s * hs + d]); }
                    size_t o = ((size_t)b * T + t) * C + h * hs + d;
                    r.out[o] = (float)y;
                    r.tol_out[o] = (float)(rel_y * mag) + accum_tol(T, mag);
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
    const size_t BTC = (size_t)B * T * C;
    const int hs = C / NH;
    std::vector<float> inp = rand_bf16(3 * BTC, -1.0f, 1.0f, rng);
    AttRef ref = attention_forward_cpu(inp, B, T, C, NH);
    floatX* b_inp = dmalloc<floatX>(3 * BTC + offset);
    floatX* b_out = dmalloc<floatX>(BTC + offset);
    floatX* b_qkvr = dmalloc<floatX>(3 * BTC + offset);
    floatX* b_att = dmalloc<floatX>((size_t)B * NH * T * T + offset);
    floatX *d_inp = b_inp + offset, *d_out = b_out + offset, *d_qkvr = b_qkvr + offset, *d_att = b_att + offset;
    upload(d_inp, inp);
    char name[192];
    // the paths the launchers will take: splits from inp (row stride 3C), merge into out (stride C)
    const int split = attention_heads_vec(d_qkvr, d_inp, 3 * C, C, hs), merge = attention_heads_vec(d_inp, d_out, C, 0, hs);
    const int soft = attention_softmax_vec(d_att, d_att, T);
    const bool paths_ok = split == heads_vec && merge == heads_vec && soft == softmax_vec;
    printf("  %-44s %s  split %d, merge %d, softmax %d element(s) per access (expected %d, %d, %d)\n", label,
           paths_ok ? "ok  " : "FAIL", split, merge, soft, heads_vec, heads_vec, softmax_vec);
    if (!paths_ok) { exit(EXIT_FAILURE); }
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        cudaCheck(cudaMemset(d_out, 0, BTC * sizeof(floatX)));
        attention_forward_naive_kernel<<<CEIL_DIV(B * T * NH, bs), bs>>>(d_out, d_inp, B, T, C, NH);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "%s naive block %d out", label, bs);
        validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
    }
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        upload(d_inp, inp);   // attention_forward clobbers inp
        cudaCheck(cudaMemset(d_out, 0, BTC * sizeof(floatX)));
        cudaCheck(cudaMemset(d_att, 0xff, (size_t)B * NH * T * T * sizeof(floatX)));   // NaNs: every entry must be written
        attention_forward(d_out, d_qkvr, d_att, d_inp, B, T, C, NH, ctx, bs);
        snprintf(name, sizeof(name), "%s llmc block %d qkvr", label, bs); validate(name, d_qkvr, ref.qkvr, 0.0f, 0.0f);
        snprintf(name, sizeof(name), "%s llmc block %d att", label, bs);  validate(name, d_att, ref.att, BF16_RTOL, 0.0f, &ref.tol_att);
        snprintf(name, sizeof(name), "%s llmc block %d out", label, bs);  validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
    }
    // the same bits twice
    floatX* d_out2 = dmalloc<floatX>(BTC + offset);
    floatX* d_att2 = dmalloc<floatX>((size_t)B * NH * T * T + offset);
    upload(d_inp, inp);
    attention_forward(d_out, d_qkvr, d_att, d_inp, B, T, C, NH, ctx);
    upload(d_inp, inp);
    attention_forward(d_out2 + offset, d_qkvr, d_att2 + offset, d_inp, B, T, C, NH, ctx);
    snprintf(name, sizeof(name), "%s determinism out", label); check_bitwise_equal(name, d_out, d_out2 + offset, BTC * sizeof(floatX));
    snprintf(name, sizeof(name), "%s determinism att", label); check_bitwise_equal(name, d_att, d_att2 + offset, (size_t)B * NH * T * T * sizeof(floatX));
    cudaCheck(cudaFree(b_inp)); cudaCheck(cudaFree(b_out)); cudaCheck(cudaFree(b_qkvr)); cudaCheck(cudaFree(b_att));
    cudaCheck(cudaFree(d_out2)); cudaCheck(cudaFree(d_att2));
}

int main() {
    print_device_info();
    MatmulContext ctx = matmul_context_create(0, 32 << 20);
    Rng rng = rng_create(31337);

    printf("validation\n");
    const int P = x128::size;
    if (!quick_mode()) { run_case("B=4 T=256 C=768 NH=12", &ctx, &rng, 4, 256, 768, 12, 0, P, P); }
    run_case("B=2 T=72 C=128 NH=4", &ctx, &rng, 2, 72, 128, 4, 0, P, P);
    run_case("B=2 T=63 C=64 NH=4 (odd T: 2-byte-aligned rows of att)", &ctx, &rng, 2, 63, 64, 4, 0, P, 1);
    run_case("B=2 T=40 C=60 NH=4 (hs=15: scalar split/merge)", &ctx, &rng, 2, 40, 60, 4, 0, 1, P);
    run_case("B=2 T=38 C=72 NH=4 (hs=18, T=38: both scalar)", &ctx, &rng, 2, 38, 72, 4, 0, 1, 1);
    run_case("B=2 T=64 C=128 NH=4 (buffers + 1: both scalar)", &ctx, &rng, 2, 64, 128, 4, 1, 1, 1);

    const int B = 8, T = 1024, C = 768, NH = 12, hs = C / NH;
    if (skip_benchmarks("attention_forward")) { return 0; }
    printf("benchmark (B=%d T=%d C=%d NH=%d; FLOPs of the two batched GEMMs, full T x T)\n", B, T, C, NH);
    const size_t BTC = (size_t)B * T * C;
    floatX* d_inp = dmalloc<floatX>(3 * BTC);
    floatX* d_out = dmalloc<floatX>(BTC);
    floatX* d_qkvr = dmalloc<floatX>(3 * BTC);
    floatX* d_att = dmalloc<floatX>((size_t)B * NH * T * T);
    upload(d_inp, rand_bf16(3 * BTC, -1.0f, 1.0f, &rng));
    const double flops = 4.0 * B * NH * (double)T * T * hs;
    const int block_sizes[] = {64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() { attention_forward(d_out, d_qkvr, d_att, d_inp, B, T, C, NH, &ctx, bs); });
        print_benchmark("llmc", bs, ms, 0, flops);
    }
    float ms = benchmark_ms(2, [&]() { attention_forward_naive_kernel<<<CEIL_DIV(B * T * NH, 256), 256>>>(d_out, d_inp, B, T, C, NH); });
    print_benchmark("naive", 256, ms, 0, flops);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_qkvr)); cudaCheck(cudaFree(d_att));
    matmul_context_destroy(&ctx);
    printf("attention_forward: ALL OK\n");
    return 0;
}
