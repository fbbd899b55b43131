/*
Test of layernorm_backward (llmc/cuda_layernorm.cuh).

Versions
  naive : one thread per row for dinp, one thread per channel for dweight/dbias (this file)
  llmc  : layernorm_backward<float> and <floatX>: one kernel (warp per row for dinp; per-warp, then
          per-block partials of dweight/dbias, summed by the last block to finish)
Checks: all three gradients ACCUMULATE (buffers start from random values); mean and rstd come from
the CPU (the same fp32 values for both sides); llmc is bitwise reproducible, also when the scratch's
partials hold garbage before the call; the blocks-done counter is back to zero after every call.
Both paths: the 128-bit one (C = 768, 1600, 7000; aligned) and the scalar one (C = 37, 100, 7001, or
one of dinp, dout, inp, weight starting one element into its allocation: a 128-bit access there would
stop the emulation). Launch shapes: C = 1600 fits 3 warps' accumulators in 48 KiB, C = 7000 none
(one warp per block accumulates in the scratch); N = 1237 gives uneven row slices.
Tolerance (derived from the fp32 error of the GPU's algorithm, u = 2^-24):
  dinp    : 2^-7 |ref| + rstd (4u |dnorm| + d_mean_dnorm + |xhat| d_mean_dnorm_xhat + 6u |xhat mdx|)
            + 4u (|dinp0| + |d|), where d_* = accum_tol(C, sum of |terms|) / C
  dweight : accum_tol(N + 1, |dweight0| + sum |dout xhat|) + 4u sum |dout xhat|   (+ 2^-7 |ref| for bf16)
  dbias   : accum_tol(N + 1, |dbias0| + sum |dout|)                               (+ 2^-7 |ref| for bf16)
*/
#include "common.h"
#include "../../llmc/cuda_layernorm.cuh"

static __global__ void layernorm_backward_naive_dinp_kernel(floatX* dinp, const floatX* dout, const floatX* inp,
                                                            const floatX* weight, const float* mean, const float* rstd,
                                                            int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) { return; }
    size_t off = (size_t)row * C;
    float m = mean[row], s = rstd[row];
    float sd = 0.0f, sdx = 0.0f;
    for (int c = 0; c < C; c++) {
        float xhat = (to_float(inp[off + c]) - m) * s;
        float dn = to_float(dout[off + c]) * to_float(weight[c]);
        sd += dn;
        sdx += dn * xhat;
    }
    sd /= C;
    sdx /= C;
    for (int c = 0; c < C; c++) {
        float xhat = (to_float(inp[off + c]) - m) * s;
        float dn = to_float(dout[off + c]) * to_float(weight[c]);
        dinp[off + c] = from_float<floatX>(to_float(dinp[off + c]) + s * (dn - sd - xhat * sdx));
    }
}

static __global__ void layernorm_backward_naive_params_kernel(float* dweight, float* dbias, const floatX* dout,
                                                              const floatX* inp, const float* mean, const float* rstd,
                                                              int N, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) { return; }
    float dw = 0.0f, db = 0.0f;
    for (int r = 0; r < N; r++) {
        size_t i = (size_t)r * C + c;
        float g = to_float(dout[i]);
        dw += g * (to_float(inp[i]) - mean[r]) * rstd[r];
        db += g;
    }
    dweight[c] += dw;
    dbias[c] += db;
}

struct LnBwdRef { std::vector<float> dinp, dweight, dbias, tol_dinp, tol_dweight, tol_dbias; };

static LnBwdRef layernorm_backward_cpu(const std::vector<float>& dinp0, const std::vector<float>& dw0, const std::vector<float>& db0,
                                       const std::vector<float>& dout, const std::vector<float>& inp, const std::vector<float>& w,
                                       const std::vector<float>& mean, const std::vector<float>& rstd, int N, int C) {
    const double u = FP32_EPS;
    LnBwdRef r;
    r.dinp.resize((size_t)N * C); r.tol_dinp.resize((size_t)N * C);
    std::vector<double> dw(C, 0.0), db(C, 0.0), mdw(C, 0.0), mdb(C, 0.0);
    for (int n = 0; n < N; n++) {
        const double m = mean[n], s = rstd[n];
        double sd = 0.0, sdx = 0.0, mag_d = 0.0, mag_dx = 0.0;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)n * C + c;
            double xhat = (inp[i] - m) * s, dn = (double)dout[i] * w[c];
            sd += dn; sdx += dn * xhat; mag_d += fabs(dn); mag_dx += fabs(dn * xhat);
            dw[c] += dout[i] * xhat; mdw[c] += fabs(dout[i] * xhat);
            db[c] += dout[i]; mdb[c] += fabs(dout[i]);
        }
        const double md = sd / C, mdx = sdx / C;
        const double d_md = accum_tol(C, mag_d) / C, d_mdx = accum_tol(C, mag_dx) / C + 4.0 * u * mag_dx / C;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)n * C + c;
            double xhat = (inp[i] - m) * s, dn = (double)dout[i] * w[c];
            double d = s * (dn - md - xhat * mdx);
            r.dinp[i] = (float)(dinp0[i] + d);
            r.tol_dinp[i] = (float)(s * (4.0 * u * fabs(dn) + d_md + fabs(xhat) * d_mdx + 6.0 * u * fabs(xhat * mdx))
                                    + 4.0 * u * (fabs(dinp0[i]) + fabs(d)));
        }
    }
    r.dweight.resize(C); r.dbias.resize(C); r.tol_dweight.resize(C); r.tol_dbias.resize(C);
    for (int c = 0; c < C; c++) {
        r.dweight[c] = (float)(dw0[c] + dw[c]);
        r.dbias[c] = (float)(db0[c] + db[c]);
        r.tol_dweight[c] = accum_tol(N + 1, fabs(dw0[c]) + mdw[c]) + (float)(4.0 * u * mdw[c]);
        r.tol_dbias[c] = accum_tol(N + 1, fabs(db0[c]) + mdb[c]);
    }
    return r;
}

// per-row mean and rstd as the forward would store them (fp32)
static void row_stats(std::vector<float>& mean, std::vector<float>& rstd, const std::vector<float>& x, int N, int C) {
    for (int n = 0; n < N; n++) {
        double s = 0.0;
        for (int c = 0; c < C; c++) { s += x[(size_t)n * C + c]; }
        double m = s / C, v = 0.0;
        for (int c = 0; c < C; c++) { double d = x[(size_t)n * C + c] - m; v += d * d; }
        mean[n] = (float)m;
        rstd[n] = (float)(1.0 / sqrt(v / C + 1e-5));
    }
}

// pointers a case starts one element into their allocation (not 16-byte aligned)
enum { OFF_DINP = 1, OFF_DOUT = 2, OFF_INP = 4, OFF_W = 8 };

// the blocks-done counter (the scratch's first word) must be zero between calls
static void check_counter_zero(const char* name, const float* d_scratch) {
    unsigned int counter = 1;
    cudaCheck(cudaMemcpy(&counter, d_scratch, sizeof(counter), cudaMemcpyDeviceToHost));
    if (counter != 0) {
        printf("  %-44s FAIL: blocks-done counter is %u after the call\n", name, counter);
        exit(EXIT_FAILURE);
    }
    printf("  %-44s ok    counter 0\n", name);
}

template<typename GradT>
static void test_llmc(const char* label, int N, int C, Rng* rng, const int* block_sizes, int nbs, bool run_naive,
                      int offset_mask = 0) {
    if (quick_mode()) { nbs = 1; }
    std::vector<float> inp((size_t)N * C);
    for (int n = 0; n < N; n++) {
        float offset = rng_range(rng, -3.0f, 3.0f);
        for (int c = 0; c < C; c++) { inp[(size_t)n * C + c] = bf16_round(offset + rng_range(rng, -2.0f, 2.0f)); }
    }
    std::vector<float> w = rand_bf16(C, 0.5f, 1.5f, rng);
    std::vector<float> dout = rand_bf16((size_t)N * C, -1.0f, 1.0f, rng);
    std::vector<float> dinp0 = rand_bf16((size_t)N * C, -1.0f, 1.0f, rng);
    std::vector<float> dw0 = as_precision<GradT>(rand_f32(C, -1.0f, 1.0f, rng));
    std::vector<float> db0 = as_precision<GradT>(rand_f32(C, -1.0f, 1.0f, rng));
    std::vector<float> mean(N), rstd(N);
    row_stats(mean, rstd, inp, N, C);
    LnBwdRef ref = layernorm_backward_cpu(dinp0, dw0, db0, dout, inp, w, mean, rstd, N, C);
    const float grad_rtol = sizeof(GradT) == 2 ? BF16_RTOL : 0.0f;

    auto off = [&](int bit) { return (offset_mask & bit) ? 1 : 0; };
    DevRow x = dev_at(inp, off(OFF_INP)), wt = dev_at(w, off(OFF_W)), g = dev_at(dout, off(OFF_DOUT));
    DevRow di = dev_at(dinp0, off(OFF_DINP)), di2 = dev_at(dinp0, off(OFF_DINP));
    floatX *d_inp = x.p, *d_w = wt.p, *d_dout = g.p, *d_dinp = di.p, *d_dinp2 = di2.p;
    GradT *d_dw = to_device<GradT>(dw0), *d_db = to_device<GradT>(db0), *d_dw2 = to_device<GradT>(dw0), *d_db2 = to_device<GradT>(db0);
    float *d_mean = to_device_f32(mean), *d_rstd = to_device_f32(rstd);
    // the counter in the scratch must be zero before the first call (as train_gpt2.cu's gpu_alloc does)
    const size_t scratch_bytes = layernorm_backward_scratch_bytes(C);
    float* d_scratch = (float*)dmalloc<char>(scratch_bytes);
    cudaCheck(cudaMemset(d_scratch, 0, scratch_bytes));
    char name[160];

    const LayerNormBackwardShape sh = layernorm_backward_shape(N, C, 1024);
    printf("%s: at block 1024 %d blocks of %d warps, %d rows each, accumulators in %s\n", label, sh.blocks, sh.warps,
           sh.rows_per_block, sh.smem > 0 ? "shared memory" : "the scratch");
    {
        const bool got = layernorm_can_vectorize(C, {d_dinp, d_dout, d_inp, d_w, d_scratch});
        const bool expected = C % x128::size == 0 && offset_mask == 0;
        snprintf(name, sizeof(name), "%s %s path", label, type_name<GradT>());
        if (got != expected) {
            printf("  %-44s FAIL: launcher takes the %s path, expected %s\n", name, got ? "x128" : "scalar", expected ? "x128" : "scalar");
            exit(EXIT_FAILURE);
        }
        printf("  %-44s ok    %s path\n", name, got ? "x128" : "scalar");
    }

    if (run_naive && sizeof(GradT) == 4) {
        for (int i = 0; i < nbs; i++) {
            const int bs = block_sizes[i];
            upload(d_dinp, dinp0); upload((float*)d_dw, dw0); upload((float*)d_db, db0);
            layernorm_backward_naive_dinp_kernel<<<CEIL_DIV(N, bs), bs>>>(d_dinp, d_dout, d_inp, d_w, d_mean, d_rstd, N, C);
            cudaCheck(cudaGetLastError());
            layernorm_backward_naive_params_kernel<<<CEIL_DIV(C, bs), bs>>>((float*)d_dw, (float*)d_db, d_dout, d_inp, d_mean, d_rstd, N, C);
            cudaCheck(cudaGetLastError());
            snprintf(name, sizeof(name), "%s naive dinp block %d", label, bs);    validate(name, d_dinp, ref.dinp, BF16_RTOL, 0.0f, &ref.tol_dinp);
            snprintf(name, sizeof(name), "%s naive dweight block %d", label, bs); validate(name, d_dw, ref.dweight, 0.0f, 0.0f, &ref.tol_dweight);
            snprintf(name, sizeof(name), "%s naive dbias block %d", label, bs);   validate(name, d_db, ref.dbias, 0.0f, 0.0f, &ref.tol_dbias);
        }
    }
    for (int i = 0; i < nbs; i++) {
        const int bs = block_sizes[i];
        upload(d_dinp, dinp0); upload(d_dw, dw0); upload(d_db, db0);
        layernorm_backward(d_dinp, d_dw, d_db, d_dout, d_inp, d_w, d_mean, d_rstd, N, C, d_scratch, 0, bs);
        snprintf(name, sizeof(name), "%s llmc %s dinp block %d", label, type_name<GradT>(), bs);    validate(name, d_dinp, ref.dinp, BF16_RTOL, 0.0f, &ref.tol_dinp);
        snprintf(name, sizeof(name), "%s llmc %s dweight block %d", label, type_name<GradT>(), bs); validate(name, d_dw, ref.dweight, grad_rtol, 0.0f, &ref.tol_dweight);
        snprintf(name, sizeof(name), "%s llmc %s dbias block %d", label, type_name<GradT>(), bs);   validate(name, d_db, ref.dbias, grad_rtol, 0.0f, &ref.tol_dbias);
        snprintf(name, sizeof(name), "%s counter reset block %d", label, bs);   check_counter_zero(name, d_scratch);
        // again, with garbage (NaN bytes) in every partial: each call must rewrite what it reads
        cudaCheck(cudaMemset(d_scratch, 0xff, scratch_bytes));
        cudaCheck(cudaMemset(d_scratch, 0, LN_BWD_HEADER_FLOATS * sizeof(float)));
        upload(d_dinp2, dinp0); upload(d_dw2, dw0); upload(d_db2, db0);
        layernorm_backward(d_dinp2, d_dw2, d_db2, d_dout, d_inp, d_w, d_mean, d_rstd, N, C, d_scratch, 0, bs);
        snprintf(name, sizeof(name), "%s determinism dinp block %d", label, bs);    check_bitwise_equal(name, d_dinp, d_dinp2, (size_t)N * C * sizeof(floatX));
        snprintf(name, sizeof(name), "%s determinism dweight block %d", label, bs); check_bitwise_equal(name, d_dw, d_dw2, C * sizeof(GradT));
        snprintf(name, sizeof(name), "%s determinism dbias block %d", label, bs);   check_bitwise_equal(name, d_db, d_db2, C * sizeof(GradT));
    }
    DevRow all[] = {x, wt, g, di, di2};
    for (DevRow& d : all) { cudaCheck(cudaFree(d.base)); }
    cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db)); cudaCheck(cudaFree(d_dw2)); cudaCheck(cudaFree(d_db2));
    cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_scratch));
}

int main() {
    print_device_info();
    const int B = 8, T = 1024, C = 768, N = B * T;
    Rng rng = rng_create(99);
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};

    printf("validation\n");
    if (!quick_mode()) { test_llmc<float>("N=8192 C=768", N, C, &rng, block_sizes, 6, true); }
    if (!quick_mode()) { test_llmc<floatX>("N=8192 C=768", N, C, &rng, block_sizes, 6, false); }
    test_llmc<float>("odd N=5 C=37", 5, 37, &rng, block_sizes, 6, true);
    test_llmc<floatX>("odd N=5 C=37", 5, 37, &rng, block_sizes, 6, false);
    const int bs_some[] = {32, 256, 1024}, bs_one[] = {256};
    if (!quick_mode()) { test_llmc<float>("N=256 C=1600", 256, 1600, &rng, block_sizes, 6, true); }          // GPT-2 XL: 3 warps per block
    if (!quick_mode()) { test_llmc<floatX>("N=256 C=1600", 256, 1600, &rng, bs_some, 3, false); }
    test_llmc<float>("N=33 C=100", 33, 100, &rng, block_sizes, 6, true);              // not a multiple of 8
    test_llmc<floatX>("N=33 C=100", 33, 100, &rng, bs_some, 3, false);
    if (!quick_mode()) { test_llmc<float>("N=1237 C=64", 1237, 64, &rng, bs_some, 3, true); }                // uneven row slices
    if (!quick_mode()) { test_llmc<float>("N=9 C=7000", 9, 7000, &rng, bs_some, 3, true); }                  // accumulators in the scratch
    if (!quick_mode()) { test_llmc<floatX>("N=9 C=7000", 9, 7000, &rng, bs_one, 1, false); }
    if (!quick_mode()) { test_llmc<float>("N=9 C=7001", 9, 7001, &rng, bs_one, 1, true); }                   // ... and scalar
    test_llmc<float>("C=768 dinp+1", 64, 768, &rng, bs_one, 1, false, OFF_DINP);
    test_llmc<float>("C=768 dout+1", 64, 768, &rng, bs_one, 1, false, OFF_DOUT);
    test_llmc<float>("C=768 inp+1", 64, 768, &rng, bs_one, 1, false, OFF_INP);
    test_llmc<float>("C=768 weight+1", 64, 768, &rng, bs_one, 1, false, OFF_W);
    if (!quick_mode()) { test_llmc<floatX>("C=1600 all +1", 64, 1600, &rng, bs_some, 3, false, OFF_DINP | OFF_DOUT | OFF_INP | OFF_W); }

    if (skip_benchmarks("layernorm_backward")) { return 0; }

    printf("benchmark (N=%d C=%d; bytes: dout, inp read, dinp read+written)\n", N, C);
    std::vector<float> x = rand_bf16((size_t)N * C, -2.0f, 2.0f, &rng);
    floatX *d_inp = to_device_bf16(x), *d_dout = to_device_bf16(x), *d_dinp = to_device_bf16(x), *d_w = to_device_bf16(rand_bf16(C, 0.5f, 1.5f, &rng));
    std::vector<float> mean(N), rstd(N);
    row_stats(mean, rstd, x, N, C);
    float *d_mean = to_device_f32(mean), *d_rstd = to_device_f32(rstd);
    float *d_dw = dmalloc<float>(C), *d_db = dmalloc<float>(C);
    float* d_scratch = (float*)dmalloc<char>(layernorm_backward_scratch_bytes(C));
    const double bytes = 4.0 * N * C * sizeof(floatX);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() {
            layernorm_backward_naive_dinp_kernel<<<CEIL_DIV(N, bs), bs>>>(d_dinp, d_dout, d_inp, d_w, d_mean, d_rstd, N, C);
            layernorm_backward_naive_params_kernel<<<CEIL_DIV(C, bs), bs>>>(d_dw, d_db, d_dout, d_inp, d_mean, d_rstd, N, C);
        });
        print_benchmark("naive", bs, ms, bytes, 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { layernorm_backward(d_dinp, d_dw, d_db, d_dout, d_inp, d_w, d_mean, d_rstd, N, C, d_scratch, 0, bs); });
        print_benchmark("llmc", bs, ms, bytes, 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_dinp)); cudaCheck(cudaFree(d_w));
    cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_dw)); cudaCheck(cudaFree(d_db)); cudaCheck(cudaFree(d_scratch));
    printf("layernorm_backward: ALL OK\n");
    return 0;
}
