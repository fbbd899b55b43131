/*
Test of matmul_backward (llmc/cuda_matmul.cuh):
  dinp (N,C)     = dout (N,OC) . weight (OC,C)       OVERWRITTEN; times gelu'(pre) if a pre-activation is given
  dweight (OC,C) += dout^T . inp                      ACCUMULATED (fp32 or bf16)
  dbias (OC)     += column sums of dout               ACCUMULATED, deterministic

Versions
  naive : one thread per output element of each gradient (this file)
  llmc  : matmul_backward<float>, matmul_backward<floatX>
Cases: GPT-2 layer shapes with N = 512 rows (fcproj with the GELU backward, qkv, an LM-head-like shape
without bias), odd shapes, operands at 16-byte aligned offsets and at + 1 element; dinp starts as
garbage (it must be overwritten), dweight and dbias start from random values (they must accumulate);
llmc is run twice and must give identical bits.
The bias reduction has two paths (the harness checks the launcher's choice): 128-bit loads of dout
(OC % x128::size == 0 and dout aligned: OC = 768, 2304, 104, 3072) and one channel per load (OC = 99;
dout at + 1 element). Both add each channel's terms in the same order, so where the 128-bit path is
taken the harness also runs the scalar one on a misaligned copy of dout and requires the same bits.
Tolerance: exact values in double.
  dinp    : 2^-7 |ref| + accum_tol(OC, sum |dout w|); with GELU: 2^-6 |ref| (the GEMM result is
            rounded to bf16 before the multiply, then the product is rounded) + 1.2 accum_tol
            + |dout.w| * (error bound of gelu' in fp32 with tanh to TANH_TOL)
  dweight : accum_tol(N + 1, |dweight0| + sum |dout inp|)       (+ 2^-7 |ref| for bf16 gradients)
  dbias   : accum_tol(N + 1, |dbias0| + sum |dout|)             (+ 2^-7 |ref| for bf16 gradients)
*/
#include "common.h"
#include "../../llmc/cuda_matmul.cuh"

static double gelu_grad_ref(double x) {
    const double k = 0.7978845608028654;
    double u = k * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

// bound on the error of gelu'(x) evaluated in fp32 when tanh has relative error TANH_TOL:
// d gelu' = 0.5 d(th) + 0.5 |x| k (1 + 3a x^2) d(th^2) <= TANH_TOL (0.5 + |x| k (1 + 3a x^2))
static double gelu_grad_tol(double x) { return TANH_TOL * (0.5 + fabs(x) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)); }

static __global__ void naive_dinp_kernel(floatX* dinp, const floatX* dout, const floatX* weight, const floatX* pre,
                                         int N, int C, int OC) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * C) { return; }
    int n = (int)(idx / C), c = (int)(idx % C);
    float sum = 0.0f;
    for (int oc = 0; oc < OC; oc++) { sum += to_float(dout[(size_t)n * OC + oc]) * to_float(weight[(size_t)oc * C + c]); }
    if (pre != NULL) {
        sum = to_float(from_float<floatX>(sum));   // same rounding point as llmc
        float x = to_float(pre[idx]);
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x), th = tanhf(u);
        sum *= 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
    }
    dinp[idx] = from_float<floatX>(sum);
}

static __global__ void naive_dweight_kernel(float* dweight, const floatX* dout, const floatX* inp, int N, int C, int OC) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)OC * C) { return; }
    int oc = (int)(idx / C), c = (int)(idx % C);
    float sum = 0.0f;
    for (int n = 0; n < N; n++) { sum += to_float(dout[(size_t)n * OC + oc]) * to_float(inp[(size_t)n * C + c]); }
    dweight[idx] += sum;
}

static __global__ void naive_dbias_kernel(float* dbias, const floatX* dout, int N, int OC) {
    int oc = blockIdx.x * blockDim.x + threadIdx.x;
    if (oc >= OC) { return; }
    float sum = 0.0f;
    for (int n = 0; n < N; n++) { sum += to_float(dout[(size_t)n * OC + oc]); }
    dbias[oc] += sum;
}

struct MmBwdRef { std::vector<float> dinp, dweight, dbias, tol_dinp, tol_dweight, tol_dbias; };

static MmBwdRef matmul_backward_cpu(const std::vector<float>& dout, const std::vector<float>& inp, const std::vector<float>& w,
                                    const std::vector<float>* pre, const std::vector<float>& dw0, const std::vector<float>& db0,
                                    int N, int C, int OC) {
    MmBwdRef r;
    r.dinp.resize((size_t)N * C); r.tol_dinp.resize((size_t)N * C);
    std::vector<double> acc(C), mag(C);
    for (int n = 0; n < N; n++) {
        std::fill(acc.begin(), acc.end(), 0.0);
        std::fill(mag.begin(), mag.end(), 0.0);
        for (int oc = 0; oc < OC; oc++) {
            const double g = dout[(size_t)n * OC + oc];
            const float* wr = &w[(size_t)oc * C];
            for (int c = 0; c < C; c++) { acc[c] += g * wr[c]; mag[c] += fabs(g * wr[c]); }
        }
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)n * C + c;
            float at = accum_tol(OC, mag[c]);
            if (pre) {
                double gp = gelu_grad_ref((*pre)[i]);
                r.dinp[i] = (float)(acc[c] * gp);
                r.tol_dinp[i] = 1.2f * at + (float)(fabs(acc[c]) * gelu_grad_tol((*pre)[i]));
            } else {
                r.dinp[i] = (float)acc[c];
                r.tol_dinp[i] = at;
            }
        }
    }
    r.dweight.resize((size_t)OC * C); r.tol_dweight.resize((size_t)OC * C);
    std::vector<double> sw((size_t)OC * C, 0.0), mw((size_t)OC * C, 0.0);
    std::vector<double> sb(OC, 0.0), mb(OC, 0.0);
    for (int n = 0; n < N; n++) {
        const float* x = &inp[(size_t)n * C];
        for (int oc = 0; oc < OC; oc++) {
            const double g = dout[(size_t)n * OC + oc];
            sb[oc] += g; mb[oc] += fabs(g);
            double* swr = &sw[(size_t)oc * C];
            double* mwr = &mw[(size_t)oc * C];
            for (int c = 0; c < C; c++) { swr[c] += g * x[c]; mwr[c] += fabs(g * x[c]); }
        }
    }
    for (size_t i = 0; i < sw.size(); i++) {
        r.dweight[i] = (float)(dw0[i] + sw[i]);
        r.tol_dweight[i] = accum_tol(N + 1, fabs(dw0[i]) + mw[i]);
    }
    r.dbias.resize(OC); r.tol_dbias.resize(OC);
    for (int oc = 0; oc < OC; oc++) {
        r.dbias[oc] = (float)(db0[oc] + sb[oc]);
        r.tol_dbias[oc] = accum_tol(N + 1, fabs(db0[oc]) + mb[oc]);
    }
    return r;
}

// offset: every buffer starts that many elements past an aligned allocation. bias_vec: the channels per
// load the bias reduction must choose (x128::size or 1).
template<typename GradT>
static void run_case(const char* label, MatmulContext* ctx, Rng* rng, int N, int C, int OC, bool use_bias, bool gelu,
                     int offset, bool run_naive, int bias_vec) {
    std::vector<float> dout = rand_bf16((size_t)N * OC, -1.0f, 1.0f, rng);
    std::vector<float> inp = rand_bf16((size_t)N * C, -1.0f, 1.0f, rng);
    std::vector<float> w = rand_bf16((size_t)OC * C, -0.1f, 0.1f, rng);
    std::vector<float> pre = rand_bf16((size_t)N * C, -3.0f, 3.0f, rng);
    std::vector<float> dw0 = as_precision<GradT>(rand_f32((size_t)OC * C, -1.0f, 1.0f, rng));
    std::vector<float> db0 = as_precision<GradT>(rand_f32(OC, -1.0f, 1.0f, rng));
    std::vector<float> garbage = rand_bf16((size_t)N * C, -100.0f, 100.0f, rng);
    MmBwdRef ref = matmul_backward_cpu(dout, inp, w, gelu ? &pre : NULL, dw0, db0, N, C, OC);
    const float grad_rtol = sizeof(GradT) == 2 ? BF16_RTOL : 0.0f;
    const float dinp_rtol = gelu ? 2.0f * BF16_RTOL : BF16_RTOL;

    floatX* b_dout = dmalloc<floatX>(dout.size() + offset);
    floatX* b_inp = dmalloc<floatX>(inp.size() + offset);
    floatX* b_w = dmalloc<floatX>(w.size() + offset);
    floatX* b_pre = dmalloc<floatX>(pre.size() + offset);
    floatX* b_dinp = dmalloc<floatX>((size_t)N * C + offset);
    GradT* b_dw = dmalloc<GradT>(dw0.size() + offset);
    GradT* b_db = dmalloc<GradT>(db0.size() + offset);
    floatX* d_dinp2 = dmalloc<floatX>((size_t)N * C);
    GradT* d_dw2 = dmalloc<GradT>(dw0.size());
    GradT* d_db2 = dmalloc<GradT>(db0.size());
    floatX *d_dout = b_dout + offset, *d_inp = b_inp + offset, *d_w = b_w + offset, *d_pre = b_pre + offset, *d_dinp = b_dinp + offset;
    GradT *d_dw = b_dw + offset, *d_db = b_db + offset;
    upload(d_dout, dout); upload(d_inp, inp); upload(d_w, w); upload(d_pre, pre);
    const floatX* pre_arg = gelu ? d_pre : NULL;
    char name[192];

    if (run_naive && sizeof(GradT) == 4) {
        // the naive kernels do every multiply-add in one thread: emulated, one block size is enough
        const int block_sizes[] = {256, 64, 1024};
        for (int bs : block_sizes) {
            if (EMULATED && bs != 256) { continue; }
            upload(d_dinp, garbage); upload((float*)d_dw, dw0); upload((float*)d_db, db0);
            naive_dinp_kernel<<<(unsigned)CEIL_DIV((size_t)N * C, (size_t)bs), bs>>>(d_dinp, d_dout, d_w, pre_arg, N, C, OC);
            cudaCheck(cudaGetLastError());
            naive_dweight_kernel<<<(unsigned)CEIL_DIV((size_t)OC * C, (size_t)bs), bs>>>((float*)d_dw, d_dout, d_inp, N, C, OC);
            cudaCheck(cudaGetLastError());
            naive_dbias_kernel<<<CEIL_DIV(OC, bs), bs>>>((float*)d_db, d_dout, N, OC);
            cudaCheck(cudaGetLastError());
            snprintf(name, sizeof(name), "%s naive block %d dinp", label, bs);    validate(name, d_dinp, ref.dinp, dinp_rtol, 0.0f, &ref.tol_dinp);
            snprintf(name, sizeof(name), "%s naive block %d dweight", label, bs); validate(name, d_dw, ref.dweight, 0.0f, 0.0f, &ref.tol_dweight);
            snprintf(name, sizeof(name), "%s naive block %d dbias", label, bs);   validate(name, d_db, ref.dbias, 0.0f, 0.0f, &ref.tol_dbias);
        }
    }

    upload(d_dinp, garbage); upload(d_dw, dw0); upload(d_db, db0);
    matmul_backward(d_dinp, d_dw, use_bias ? d_db : NULL, d_dout, d_inp, d_w, N, C, OC, pre_arg, ctx);
    snprintf(name, sizeof(name), "%s llmc %s dinp", label, type_name<GradT>());    validate(name, d_dinp, ref.dinp, dinp_rtol, 0.0f, &ref.tol_dinp);
    snprintf(name, sizeof(name), "%s llmc %s dweight", label, type_name<GradT>()); validate(name, d_dw, ref.dweight, grad_rtol, 0.0f, &ref.tol_dweight);
    if (use_bias) {
        snprintf(name, sizeof(name), "%s llmc %s dbias", label, type_name<GradT>());
        validate(name, d_db, ref.dbias, grad_rtol, 0.0f, &ref.tol_dbias);
    } else {
        snprintf(name, sizeof(name), "%s llmc %s dbias untouched (NULL)", label, type_name<GradT>());
        validate(name, d_db, db0, 0.0f, 0.0f);
    }
    // the bias reduction alone at several block sizes, on the path the harness expects
    if (use_bias) {
        const int vec = matmul_bias_vec(d_dout, OC);
        snprintf(name, sizeof(name), "%s dbias path", label);
        printf("  %-44s %s  %d channel(s) per load (expected %d)\n", name, vec == bias_vec ? "ok  " : "FAIL", vec, bias_vec);
        if (vec != bias_vec) { exit(EXIT_FAILURE); }
        const int bias_block_sizes[] = {32, 64, 128, 256, 512, 1024};
        for (int bs : bias_block_sizes) {
            if (quick_skip(bs, bias_block_sizes)) { continue; }
            upload(d_db, db0);
            matmul_bias_backward(d_db, d_dout, N, OC, ctx, bs);
            snprintf(name, sizeof(name), "%s llmc %s dbias block %d", label, type_name<GradT>(), bs);
            validate(name, d_db, ref.dbias, grad_rtol, 0.0f, &ref.tol_dbias);
        }
    }
    // 128-bit and scalar paths add each channel's terms in the same order: the same bits from dout and
    // from a copy of it one element past an aligned address
    if (use_bias && matmul_bias_vec(d_dout, OC) == x128::size) {
        floatX* b_copy = dmalloc<floatX>(dout.size() + 1);
        upload(b_copy + 1, dout);
        upload(d_db, db0); upload(d_db2, db0);
        matmul_bias_backward(d_db, d_dout, N, OC, ctx);
        matmul_bias_backward(d_db2, b_copy + 1, N, OC, ctx);
        snprintf(name, sizeof(name), "%s dbias 128-bit = scalar (dout + 1)", label);
        check_bitwise_equal(name, d_db, d_db2, db0.size() * sizeof(GradT));
        cudaCheck(cudaFree(b_copy));
    }
    // determinism
    upload(d_dinp2, garbage); upload(d_dw2, dw0); upload(d_db2, db0);
    matmul_backward(d_dinp2, d_dw2, use_bias ? d_db2 : NULL, d_dout, d_inp, d_w, N, C, OC, pre_arg, ctx);
    snprintf(name, sizeof(name), "%s determinism dinp", label);    check_bitwise_equal(name, d_dinp, d_dinp2, (size_t)N * C * sizeof(floatX));
    snprintf(name, sizeof(name), "%s determinism dweight", label); check_bitwise_equal(name, d_dw, d_dw2, dw0.size() * sizeof(GradT));
    snprintf(name, sizeof(name), "%s determinism dbias", label);   check_bitwise_equal(name, d_db, d_db2, db0.size() * sizeof(GradT));

    cudaCheck(cudaFree(b_dout)); cudaCheck(cudaFree(b_inp)); cudaCheck(cudaFree(b_w)); cudaCheck(cudaFree(b_pre)); cudaCheck(cudaFree(b_dinp));
    cudaCheck(cudaFree(b_dw)); cudaCheck(cudaFree(b_db)); cudaCheck(cudaFree(d_dinp2)); cudaCheck(cudaFree(d_dw2)); cudaCheck(cudaFree(d_db2));
}

int main() {
    print_device_info();
    MatmulContext ctx = matmul_context_create(0, 32 << 20);
    Rng rng = rng_create(77);

    printf("validation\n");
    const int P = x128::size;   // the bias reduction's 128-bit path; 1: its scalar path
    if (!quick_mode()) { run_case<float>("fcproj N=512 C=3072 OC=768 bias gelu", &ctx, &rng, 512, 3072, 768, true, true, 0, true, P); }
    if (!quick_mode()) { run_case<float>("qkv N=512 C=768 OC=2304 bias", &ctx, &rng, 512, 768, 2304, true, false, 0, true, P); }
    if (!quick_mode()) { run_case<float>("head N=256 C=768 OC=4096 no bias", &ctx, &rng, 256, 768, 4096, false, false, 0, true, P); }
    run_case<float>("odd N=37 C=72 OC=104 bias gelu", &ctx, &rng, 37, 72, 104, true, true, 0, true, P);
    run_case<float>("odd OC N=45 C=40 OC=99 bias gelu", &ctx, &rng, 45, 40, 99, true, true, 0, true, 1);
    if (!quick_mode()) { run_case<float>("16B-aligned N=512 C=768 OC=3072 bias", &ctx, &rng, 512, 768, 3072, true, false, 8, false, P); }
    run_case<float>("+1 element N=64 C=64 OC=256 bias", &ctx, &rng, 64, 64, 256, true, false, 1, false, 1);
    if (!quick_mode()) { run_case<floatX>("qkv N=512 C=768 OC=2304 bias", &ctx, &rng, 512, 768, 2304, true, false, 0, false, P); }
    if (!quick_mode()) { run_case<floatX>("fcproj N=512 C=3072 OC=768 bias gelu", &ctx, &rng, 512, 3072, 768, true, true, 0, false, P); }
    run_case<floatX>("odd OC N=45 C=40 OC=99 bias", &ctx, &rng, 45, 40, 99, true, false, 0, false, 1);

    if (skip_benchmarks("matmul_backward")) { return 0; }

    printf("benchmark (B*T = 8192 rows; FLOPs of the two GEMMs)\n");
    const int N = 8192;
    struct { const char* name; int C, OC; bool bias, gelu; } shapes[] = {
        {"qkv  C=768 OC=2304 +bias", 768, 2304, true, false},
        {"attproj C=768 OC=768 +bias", 768, 768, true, false},
        {"fc   C=768 OC=3072 +bias", 768, 3072, true, false},
        {"fcproj C=3072 OC=768 +bias+gelu", 3072, 768, true, true},
        {"lm head C=768 OC=50304", 768, 50304, false, false},
    };
    for (auto& s : shapes) {
        floatX* d_dout = dmalloc<floatX>((size_t)N * s.OC);
        floatX* d_inp = dmalloc<floatX>((size_t)N * s.C);
        floatX* d_w = dmalloc<floatX>((size_t)s.OC * s.C);
        floatX* d_pre = dmalloc<floatX>((size_t)N * s.C);
        floatX* d_dinp = dmalloc<floatX>((size_t)N * s.C);
        float* d_dw = dmalloc<float>((size_t)s.OC * s.C);
        float* d_db = dmalloc<float>(s.OC);
        upload(d_dout, rand_bf16((size_t)N * s.OC, -1.0f, 1.0f, &rng));
        upload(d_inp, rand_bf16((size_t)N * s.C, -1.0f, 1.0f, &rng));
        upload(d_w, rand_bf16((size_t)s.OC * s.C, -0.1f, 0.1f, &rng));
        const double flops = 4.0 * N * s.C * s.OC;
        float ms = benchmark_ms(20, [&]() {
            matmul_backward(d_dinp, d_dw, s.bias ? d_db : NULL, d_dout, d_inp, d_w, N, s.C, s.OC, s.gelu ? d_pre : NULL, &ctx);
        });
        char name[128];
        snprintf(name, sizeof(name), "llmc %s", s.name);
        print_benchmark(name, 0, ms, 0, flops);
        if (s.bias) {
            ms = benchmark_ms(20, [&]() { matmul_bias_backward(d_db, d_dout, N, s.OC, &ctx); });
            snprintf(name, sizeof(name), "  of which dbias, OC=%d", s.OC);
            print_benchmark(name, 256, ms, (double)N * s.OC * sizeof(floatX), 0);
        }
        cudaCheck(cudaGetLastError());
        cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_pre));
        cudaCheck(cudaFree(d_dinp)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db));
    }
    matmul_context_destroy(&ctx);
    printf("matmul_backward: ALL OK\n");
    return 0;
}
