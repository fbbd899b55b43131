/*
Test of matmul_forward (llmc/cuda_matmul.cuh): out (N,OC) = inp (N,C) . weight (OC,C)^T + bias,
optionally with GELU (pre-activation written to gelu_preact_out).

Versions
  naive    : one thread per output element, fp32 sum (this file)
  cublaslt : matmul_forward: plain, with bias, with the GELU_AUX_BIAS epilogue, and with the GELU
             fallback (plain GEMM + gelu_forward, use_gelu_epilogue = false)
Cases: the GPT-2 layer shapes with N = 512 rows; an odd shape (N=37, C=72, OC=104); operands placed at
16-byte (not 256-byte) aligned offsets, as tensors inside one parameter buffer are.
Tolerance: the exact result in double. A result rounded once to bf16: 2^-7 |ref|; fp32 accumulation:
accum_tol(C + 1, sum |inp w| + |bias|). For GELU outputs also 2^-7 |pre|: covers the fallback, which
rounds the pre-activation to bf16 before the GELU (|gelu'| <= 1.13), and the difference between the
erf and tanh forms of GELU (< 1.8e-4 |x|) should cuBLASLt's epilogue use the other one.
*/
#include "common.h"
#include "../../llmc/cuda_matmul.cuh"

static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

static __global__ void matmul_forward_naive_kernel(floatX* out, floatX* pre, const floatX* inp, const floatX* weight,
                                                   const floatX* bias, int N, int C, int OC, int gelu) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * OC) { return; }
    int n = (int)(idx / OC), oc = (int)(idx % OC);
    float sum = bias ? to_float(bias[oc]) : 0.0f;
    for (int c = 0; c < C; c++) { sum += to_float(inp[(size_t)n * C + c]) * to_float(weight[(size_t)oc * C + c]); }
    if (gelu) {
        pre[idx] = from_float<floatX>(sum);
        float u = 0.7978845608028654f * (sum + 0.044715f * sum * sum * sum);
        out[idx] = from_float<floatX>(0.5f * sum * (1.0f + tanhf(u)));
    } else {
        out[idx] = from_float<floatX>(sum);
    }
}

struct MmRef { std::vector<float> pre, out, tol_pre, tol_out; };

static MmRef matmul_forward_cpu(const std::vector<float>& inp, const std::vector<float>& w, const std::vector<float>* bias,
                                int N, int C, int OC, bool gelu) {
    MmRef r;
    size_t total = (size_t)N * OC;
    r.pre.resize(total); r.out.resize(total); r.tol_pre.resize(total); r.tol_out.resize(total);
    for (int n = 0; n < N; n++) {
        const float* x = &inp[(size_t)n * C];
        for (int oc = 0; oc < OC; oc++) {
            const float* wr = &w[(size_t)oc * C];
            double sum = bias ? (*bias)[oc] : 0.0, mag = bias ? fabs((*bias)[oc]) : 0.0;
            for (int c = 0; c < C; c++) { double p = (double)x[c] * wr[c]; sum += p; mag += fabs(p); }
            size_t i = (size_t)n * OC + oc;
            float acc = accum_tol(C + 1, mag);
            r.pre[i] = (float)sum;
            r.tol_pre[i] = acc;
            if (gelu) {
                r.out[i] = (float)gelu_ref(sum);
                r.tol_out[i] = 1.2f * acc + BF16_RTOL * (float)fabs(sum);
            } else {
                r.out[i] = (float)sum;
                r.tol_out[i] = acc;
            }
        }
    }
    return r;
}

// one validation case; offset: elements added to every device pointer (alignment test)
static void run_case(const char* label, MatmulContext* ctx, Rng* rng, int N, int C, int OC, bool use_bias, bool gelu, int offset) {
    std::vector<float> inp = rand_bf16((size_t)N * C, -1.0f, 1.0f, rng);
    std::vector<float> w = rand_bf16((size_t)OC * C, -0.1f, 0.1f, rng);
    std::vector<float> bias = rand_bf16(OC, -0.5f, 0.5f, rng);
    MmRef ref = matmul_forward_cpu(inp, w, use_bias ? &bias : NULL, N, C, OC, gelu);

    floatX* b_inp = dmalloc<floatX>(inp.size() + offset);
    floatX* b_w = dmalloc<floatX>(w.size() + offset);
    floatX* b_bias = dmalloc<floatX>(bias.size() + offset);
    floatX* b_out = dmalloc<floatX>((size_t)N * OC + offset);
    floatX* b_pre = dmalloc<floatX>((size_t)N * OC + offset);
    floatX *d_inp = b_inp + offset, *d_w = b_w + offset, *d_bias = b_bias + offset, *d_out = b_out + offset, *d_pre = b_pre + offset;
    upload(d_inp, inp); upload(d_w, w); upload(d_bias, bias);
    const floatX* bias_arg = use_bias ? d_bias : NULL;
    char name[192];

    // naive, at a few block sizes (emulated, one: every multiply-add of an output is in one thread)
    const int block_sizes[] = {256, 64, 1024};
    for (int bs : block_sizes) {
        if (EMULATED && bs != 256) { continue; }
        cudaCheck(cudaMemset(d_out, 0, (size_t)N * OC * sizeof(floatX)));
        matmul_forward_naive_kernel<<<(unsigned)CEIL_DIV((size_t)N * OC, (size_t)bs), bs>>>(d_out, d_pre, d_inp, d_w, bias_arg, N, C, OC, gelu);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "%s naive block %d out", label, bs);
        validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
        if (gelu) { snprintf(name, sizeof(name), "%s naive block %d pre", label, bs); validate(name, d_pre, ref.pre, BF16_RTOL, 0.0f, &ref.tol_pre); }
    }
    // cuBLASLt (with the epilogue where the case allows it, and with the fallback)
    for (int epi = 1; epi >= 0; epi--) {
        if (!gelu && epi == 0) { continue; }
        cudaCheck(cudaMemset(d_out, 0, (size_t)N * OC * sizeof(floatX)));
        cudaCheck(cudaMemset(d_pre, 0, (size_t)N * OC * sizeof(floatX)));
        matmul_forward(d_out, d_inp, d_w, bias_arg, N, C, OC, gelu ? d_pre : NULL, ctx, epi == 1);
        const char* path = !gelu ? "" : (epi == 1 && OC % 8 == 0) ? " gelu-epilogue" : " gelu-fallback";
        snprintf(name, sizeof(name), "%s cublaslt%s out", label, path);
        validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
        if (gelu) { snprintf(name, sizeof(name), "%s cublaslt%s pre", label, path); validate(name, d_pre, ref.pre, BF16_RTOL, 0.0f, &ref.tol_pre); }
    }
    cudaCheck(cudaFree(b_inp)); cudaCheck(cudaFree(b_w)); cudaCheck(cudaFree(b_bias)); cudaCheck(cudaFree(b_out)); cudaCheck(cudaFree(b_pre));
}

int main() {
    print_device_info();
    MatmulContext ctx = matmul_context_create(0, 32 << 20);
    Rng rng = rng_create(2024);

    printf("validation\n");
    if (!quick_mode()) { run_case("qkv   N=512 C=768 OC=2304 bias", &ctx, &rng, 512, 768, 2304, true, false, 0); }
    if (!quick_mode()) { run_case("fc    N=512 C=768 OC=3072 bias+gelu", &ctx, &rng, 512, 768, 3072, true, true, 0); }
    if (!quick_mode()) { run_case("proj  N=512 C=3072 OC=768 bias", &ctx, &rng, 512, 3072, 768, true, false, 0); }
    if (!quick_mode()) { run_case("head  N=256 C=768 OC=4096 no bias", &ctx, &rng, 256, 768, 4096, false, false, 0); }
    run_case("gelu, no bias N=128 C=768 OC=512", &ctx, &rng, 128, 768, 512, false, true, 0);
    run_case("odd   N=37 C=72 OC=104 bias+gelu", &ctx, &rng, 37, 72, 104, true, true, 0);
    if (!quick_mode()) { run_case("16B-aligned N=512 C=768 OC=3072 bias+gelu", &ctx, &rng, 512, 768, 3072, true, true, 8); }
    if (!quick_mode()) { run_case("16B-aligned N=512 C=768 OC=2304 bias", &ctx, &rng, 512, 768, 2304, true, false, 8); }

    if (skip_benchmarks("matmul_forward")) { return 0; }

    printf("benchmark (B*T = 8192 rows)\n");
    const int N = 8192;
    struct { const char* name; int C, OC; bool bias, gelu; } shapes[] = {
        {"qkv  C=768 OC=2304 +bias", 768, 2304, true, false},
        {"attproj C=768 OC=768 +bias", 768, 768, true, false},
        {"fc   C=768 OC=3072 +bias+gelu", 768, 3072, true, true},
        {"fcproj C=3072 OC=768 +bias", 3072, 768, true, false},
        {"lm head C=768 OC=50304", 768, 50304, false, false},
    };
    for (auto& s : shapes) {
        floatX* d_inp = dmalloc<floatX>((size_t)N * s.C);
        floatX* d_w = dmalloc<floatX>((size_t)s.OC * s.C);
        floatX* d_bias = dmalloc<floatX>(s.OC);
        floatX* d_out = dmalloc<floatX>((size_t)N * s.OC);
        floatX* d_pre = dmalloc<floatX>((size_t)N * s.OC);
        upload(d_inp, rand_bf16((size_t)N * s.C, -1.0f, 1.0f, &rng));
        upload(d_w, rand_bf16((size_t)s.OC * s.C, -0.1f, 0.1f, &rng));
        const double flops = 2.0 * N * s.C * s.OC;
        float ms = benchmark_ms(20, [&]() {
            matmul_forward(d_out, d_inp, d_w, s.bias ? d_bias : NULL, N, s.C, s.OC, s.gelu ? d_pre : NULL, &ctx);
        });
        char name[128];
        snprintf(name, sizeof(name), "cublaslt %s", s.name);
        print_benchmark(name, 0, ms, 0, flops);
        if (s.gelu) {
            ms = benchmark_ms(20, [&]() { matmul_forward(d_out, d_inp, d_w, d_bias, N, s.C, s.OC, d_pre, &ctx, false); });
            snprintf(name, sizeof(name), "cublaslt+gelu kernel %s", s.name);
            print_benchmark(name, 0, ms, 0, flops);
        }
        if (s.OC == 3072) {
            ms = benchmark_ms(3, [&]() {
                matmul_forward_naive_kernel<<<(unsigned)CEIL_DIV((size_t)N * s.OC, (size_t)256), 256>>>(d_out, d_pre, d_inp, d_w, d_bias, N, s.C, s.OC, 1);
            });
            snprintf(name, sizeof(name), "naive %s", s.name);
            print_benchmark(name, 256, ms, 0, flops);
        }
        cudaCheck(cudaGetLastError());
        cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_bias)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_pre));
    }
    matmul_context_destroy(&ctx);
    printf("matmul_forward: ALL OK\n");
    return 0;
}
