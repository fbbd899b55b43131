/*
Test of layernorm_forward and fused_residual_layernorm_forward (llmc/cuda_layernorm.cuh).

Versions
  naive : one thread per row (this file), the simplest correct kernel
  llmc  : layernorm_forward (one warp per row), fused_residual_layernorm_forward
Checks: out (bf16), mean and rstd (fp32); for the fused version also residual = bf16(inp1 + inp2), and
that the normalization uses the rounded residual. Rows have random offsets (mean far from 0).
Both paths of each launcher: the 128-bit one (C a multiple of x128::size, every pointer 16-byte
aligned: C = 768, 1600) and the scalar one (C = 37, 100, 24999, or one pointer starting one element
into its allocation, each pointer in turn: a 128-bit access there would stop the emulation); the
launch shapes (rows per block shrink so the per-warp row caches fit in 48 KiB; C = 25000 does not
fit and re-reads the row); the fused kernel with residual aliasing inp1 and inp2; two runs give the
same bits.
Tolerance (per element, derived from fp32 error bounds of the GPU's algorithm):
  mean : dm = accum_tol(C, sum|x|) / C
  rstd : relative rs = 2 (C + 6) 2^-24 (variance sum, rsqrt)
  out  : 2^-7 |ref| (bf16 rounding) + |w| (rstd dm + |xhat| rs) + 4 2^-24 (|xhat w| + |b|)
*/
#include "common.h"
#include "../../llmc/cuda_layernorm.cuh"

// naive: one thread per row
static __global__ void layernorm_forward_naive_kernel(floatX* out, float* mean, float* rstd, const floatX* inp,
                                                      const floatX* weight, const floatX* bias, int N, int C) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) { return; }
    const floatX* x = inp + (size_t)row * C;
    float m = 0.0f;
    for (int c = 0; c < C; c++) { m += to_float(x[c]); }
    m /= C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) { float d = to_float(x[c]) - m; v += d * d; }
    float s = 1.0f / sqrtf(v / C + LAYERNORM_EPS);
    for (int c = 0; c < C; c++) {
        out[(size_t)row * C + c] = from_float<floatX>((to_float(x[c]) - m) * s * to_float(weight[c]) + to_float(bias[c]));
    }
    mean[row] = m;
    rstd[row] = s;
}

struct LnRef { std::vector<float> out, mean, rstd, tol_out, tol_mean, tol_rstd; };

static LnRef layernorm_cpu(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b, int N, int C) {
    LnRef r;
    r.out.resize((size_t)N * C); r.tol_out.resize((size_t)N * C);
    r.mean.resize(N); r.rstd.resize(N); r.tol_mean.resize(N); r.tol_rstd.resize(N);
    const double rel_s = 2.0 * (C + 6) * FP32_EPS;
    for (int n = 0; n < N; n++) {
        const float* xr = &x[(size_t)n * C];
        double sum = 0.0, mag = 0.0;
        for (int c = 0; c < C; c++) { sum += xr[c]; mag += fabs(xr[c]); }
        const double m = sum / C;
        double var = 0.0;
        for (int c = 0; c < C; c++) { double d = xr[c] - m; var += d * d; }
        var /= C;
        const double s = 1.0 / sqrt(var + 1e-5);
        const double dm = accum_tol(C, mag) / C;
        r.mean[n] = (float)m; r.rstd[n] = (float)s;
        r.tol_mean[n] = (float)dm;
        r.tol_rstd[n] = (float)(s * rel_s);
        for (int c = 0; c < C; c++) {
            double xhat = (xr[c] - m) * s;
            double o = xhat * w[c] + b[c];
            size_t i = (size_t)n * C + c;
            r.out[i] = (float)o;
            r.tol_out[i] = (float)(fabs(w[c]) * (s * dm + fabs(xhat) * rel_s) + 4.0 * FP32_EPS * (fabs(xhat * w[c]) + fabs(b[c])));
        }
    }
    return r;
}

// pointers a case starts one element into their allocation (not 16-byte aligned)
enum { OFF_OUT = 1, OFF_INP = 2, OFF_W = 4, OFF_B = 8, OFF_INP2 = 16, OFF_RES = 32 };

// the launcher must take the path the sizes and alignments call for
static void check_path(const char* name, bool got, bool expected) {
    if (got != expected) {
        printf("  %-44s FAIL: launcher takes the %s path, expected %s\n", name, got ? "x128" : "scalar", expected ? "x128" : "scalar");
        exit(EXIT_FAILURE);
    }
    printf("  %-44s ok    %s path\n", name, got ? "x128" : "scalar");
}

// layernorm_forward and fused_residual_layernorm_forward on (N, C), the pointers in offset_mask one
// element off: both against the reference at each block size, the path taken, the fused kernel with
// residual aliasing inp1 and then inp2, and two runs bitwise equal.
static void test_case(const char* label, int N, int C, int offset_mask, const int* block_sizes, int nbs, Rng* rng) {
    if (quick_mode()) { nbs = 1; }
    auto off = [&](int bit) { return (offset_mask & bit) ? 1 : 0; };
    std::vector<float> inp((size_t)N * C);
    for (int n = 0; n < N; n++) {
        float offset = rng_range(rng, -3.0f, 3.0f);
        for (int c = 0; c < C; c++) { inp[(size_t)n * C + c] = bf16_round(offset + rng_range(rng, -2.0f, 2.0f)); }
    }
    std::vector<float> w = rand_bf16(C, 0.5f, 1.5f, rng), b = rand_bf16(C, -0.5f, 0.5f, rng);
    std::vector<float> inp2 = rand_bf16((size_t)N * C, -2.0f, 2.0f, rng), residual((size_t)N * C);
    for (size_t i = 0; i < residual.size(); i++) { residual[i] = bf16_round(inp[i] + inp2[i]); }
    LnRef ref = layernorm_cpu(inp, w, b, N, C), ref2 = layernorm_cpu(residual, w, b, N, C);

    // inp also serves as the fused kernel's inp1. The residual is checked exactly: the kernel and the
    // reference add the same two bf16 values in fp32 and round the sum to bf16 the same way.
    std::vector<float> zeros((size_t)N * C, 0.0f);
    DevRow x = dev_at(inp, off(OFF_INP)), x2 = dev_at(inp2, off(OFF_INP2)), dw = dev_at(w, off(OFF_W)), db = dev_at(b, off(OFF_B));
    DevRow o = dev_at(zeros, off(OFF_OUT)), o2 = dev_at(zeros, off(OFF_OUT)), r = dev_at(zeros, off(OFF_RES)), r2 = dev_at(zeros, off(OFF_RES));
    float *d_mean = dmalloc<float>(N), *d_rstd = dmalloc<float>(N), *d_mean2 = dmalloc<float>(N), *d_rstd2 = dmalloc<float>(N);
    const size_t bytes = (size_t)N * C * sizeof(floatX);
    char name[160];

    const bool aligned_c = C % x128::size == 0;
    const LayerNormForwardShape sh = layernorm_forward_shape(C, 1024);
    printf("%s (N=%d C=%d): at block 1024 %d rows per block, %s\n", label, N, C, sh.rows_per_block,
           sh.smem > 0 ? "rows cached in shared memory" : "rows re-read (a row exceeds 48 KiB)");
    snprintf(name, sizeof(name), "%s layernorm_forward path", label);
    check_path(name, layernorm_can_vectorize(C, {o.p, x.p, dw.p, db.p}), aligned_c && !(offset_mask & (OFF_OUT | OFF_INP | OFF_W | OFF_B)));
    snprintf(name, sizeof(name), "%s fused path", label);
    check_path(name, layernorm_can_vectorize(C, {r.p, o.p, x.p, x2.p, dw.p, db.p}), aligned_c && offset_mask == 0);

    for (int i = 0; i < nbs; i++) {
        const int bs = block_sizes[i];
        upload(o.p, zeros);
        layernorm_forward(o.p, d_mean, d_rstd, x.p, dw.p, db.p, N, C, 0, bs);
        snprintf(name, sizeof(name), "%s out block %d", label, bs);   validate(name, o.p, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
        snprintf(name, sizeof(name), "%s mean block %d", label, bs);  validate(name, d_mean, ref.mean, 0.0f, 0.0f, &ref.tol_mean);
        snprintf(name, sizeof(name), "%s rstd block %d", label, bs);  validate(name, d_rstd, ref.rstd, 0.0f, 0.0f, &ref.tol_rstd);
        upload(o.p, zeros); upload(r.p, zeros);
        fused_residual_layernorm_forward(r.p, o.p, d_mean, d_rstd, x.p, x2.p, dw.p, db.p, N, C, 0, bs);
        snprintf(name, sizeof(name), "%s fused residual block %d", label, bs);  validate(name, r.p, residual, 0.0f, 0.0f);
        snprintf(name, sizeof(name), "%s fused out block %d", label, bs);       validate(name, o.p, ref2.out, BF16_RTOL, 0.0f, &ref2.tol_out);
        snprintf(name, sizeof(name), "%s fused mean block %d", label, bs);      validate(name, d_mean, ref2.mean, 0.0f, 0.0f, &ref2.tol_mean);
        snprintf(name, sizeof(name), "%s fused rstd block %d", label, bs);      validate(name, d_rstd, ref2.rstd, 0.0f, 0.0f, &ref2.tol_rstd);
    }

    // in place: the residual written over inp1, then over inp2 (r2 holds a copy of each in turn)
    for (int which = 1; which <= 2; which++) {
        upload(r2.p, which == 1 ? inp : inp2);
        const floatX* a = which == 1 ? r2.p : x.p;
        const floatX* c = which == 1 ? x2.p : r2.p;
        fused_residual_layernorm_forward(r2.p, o.p, d_mean, d_rstd, a, c, dw.p, db.p, N, C, 0, 256);
        snprintf(name, sizeof(name), "%s residual = inp%d: residual", label, which);  validate(name, r2.p, residual, 0.0f, 0.0f);
        snprintf(name, sizeof(name), "%s residual = inp%d: out", label, which);       validate(name, o.p, ref2.out, BF16_RTOL, 0.0f, &ref2.tol_out);
        snprintf(name, sizeof(name), "%s residual = inp%d: rstd", label, which);      validate(name, d_rstd, ref2.rstd, 0.0f, 0.0f, &ref2.tol_rstd);
    }

    // determinism: two runs, the same bits
    layernorm_forward(o.p, d_mean, d_rstd, x.p, dw.p, db.p, N, C, 0, 256);
    layernorm_forward(o2.p, d_mean2, d_rstd2, x.p, dw.p, db.p, N, C, 0, 256);
    snprintf(name, sizeof(name), "%s determinism out", label);   check_bitwise_equal(name, o.p, o2.p, bytes);
    snprintf(name, sizeof(name), "%s determinism mean", label);  check_bitwise_equal(name, d_mean, d_mean2, N * sizeof(float));
    snprintf(name, sizeof(name), "%s determinism rstd", label);  check_bitwise_equal(name, d_rstd, d_rstd2, N * sizeof(float));
    fused_residual_layernorm_forward(r.p, o.p, d_mean, d_rstd, x.p, x2.p, dw.p, db.p, N, C, 0, 256);
    fused_residual_layernorm_forward(r2.p, o2.p, d_mean2, d_rstd2, x.p, x2.p, dw.p, db.p, N, C, 0, 256);
    snprintf(name, sizeof(name), "%s determinism fused out", label);   check_bitwise_equal(name, o.p, o2.p, bytes);
    snprintf(name, sizeof(name), "%s determinism fused rstd", label);  check_bitwise_equal(name, d_rstd, d_rstd2, N * sizeof(float));

    DevRow all[] = {x, x2, dw, db, o, o2, r, r2};
    for (DevRow& d : all) { cudaCheck(cudaFree(d.base)); }
    cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_mean2)); cudaCheck(cudaFree(d_rstd2));
}

int main() {
    print_device_info();
    const int B = quick_mode() ? 1 : 8, T = quick_mode() ? 16 : 1024, C = 768, N = B * T;
    Rng rng = rng_create(7);
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};

    // inputs: each row has its own offset in [-3, 3] plus noise in [-2, 2]
    std::vector<float> inp((size_t)N * C);
    for (int n = 0; n < N; n++) {
        float offset = rng_range(&rng, -3.0f, 3.0f);
        for (int c = 0; c < C; c++) { inp[(size_t)n * C + c] = bf16_round(offset + rng_range(&rng, -2.0f, 2.0f)); }
    }
    std::vector<float> weight = rand_bf16(C, 0.5f, 1.5f, &rng);
    std::vector<float> bias = rand_bf16(C, -0.5f, 0.5f, &rng);
    LnRef ref = layernorm_cpu(inp, weight, bias, N, C);

    floatX* d_inp = to_device_bf16(inp);
    floatX* d_w = to_device_bf16(weight);
    floatX* d_b = to_device_bf16(bias);
    floatX* d_out = dmalloc<floatX>((size_t)N * C);
    float* d_mean = dmalloc<float>(N);
    float* d_rstd = dmalloc<float>(N);
    char name[128];

    printf("validation layernorm_forward (N=%d C=%d)\n", N, C);
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        cudaCheck(cudaMemset(d_out, 0, (size_t)N * C * sizeof(floatX)));
        layernorm_forward_naive_kernel<<<CEIL_DIV(N, bs), bs>>>(d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "naive out block %d", bs);   validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
        snprintf(name, sizeof(name), "naive mean block %d", bs);  validate(name, d_mean, ref.mean, 0.0f, 0.0f, &ref.tol_mean);
        snprintf(name, sizeof(name), "naive rstd block %d", bs);  validate(name, d_rstd, ref.rstd, 0.0f, 0.0f, &ref.tol_rstd);

        cudaCheck(cudaMemset(d_out, 0, (size_t)N * C * sizeof(floatX)));
        layernorm_forward(d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, 0, bs);
        snprintf(name, sizeof(name), "llmc out block %d", bs);   validate(name, d_out, ref.out, BF16_RTOL, 0.0f, &ref.tol_out);
        snprintf(name, sizeof(name), "llmc mean block %d", bs);  validate(name, d_mean, ref.mean, 0.0f, 0.0f, &ref.tol_mean);
        snprintf(name, sizeof(name), "llmc rstd block %d", bs);  validate(name, d_rstd, ref.rstd, 0.0f, 0.0f, &ref.tol_rstd);
    }

    printf("validation fused_residual_layernorm_forward\n");
    std::vector<float> inp1 = rand_bf16((size_t)N * C, -2.0f, 2.0f, &rng);
    std::vector<float> inp2((size_t)N * C), residual((size_t)N * C);
    for (size_t i = 0; i < inp2.size(); i++) {
        inp2[i] = bf16_round(rng_range(&rng, -2.0f, 2.0f) + ((i / C) % 7) - 3.0f);
        residual[i] = bf16_round(inp1[i] + inp2[i]);
    }
    LnRef ref2 = layernorm_cpu(residual, weight, bias, N, C);
    floatX* d_inp1 = to_device_bf16(inp1);
    floatX* d_inp2 = to_device_bf16(inp2);
    floatX* d_res = dmalloc<floatX>((size_t)N * C);
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        cudaCheck(cudaMemset(d_out, 0, (size_t)N * C * sizeof(floatX)));
        cudaCheck(cudaMemset(d_res, 0, (size_t)N * C * sizeof(floatX)));
        fused_residual_layernorm_forward(d_res, d_out, d_mean, d_rstd, d_inp1, d_inp2, d_w, d_b, N, C, 0, bs);
        snprintf(name, sizeof(name), "fused residual block %d", bs);  validate(name, d_res, residual, BF16_RTOL, 0.0f);
        snprintf(name, sizeof(name), "fused out block %d", bs);       validate(name, d_out, ref2.out, BF16_RTOL, 0.0f, &ref2.tol_out);
        snprintf(name, sizeof(name), "fused mean block %d", bs);      validate(name, d_mean, ref2.mean, 0.0f, 0.0f, &ref2.tol_mean);
        snprintf(name, sizeof(name), "fused rstd block %d", bs);      validate(name, d_rstd, ref2.rstd, 0.0f, 0.0f, &ref2.tol_rstd);
    }
    // in place: residual written over inp1
    {
        floatX* d_inplace = to_device_bf16(inp1);
        fused_residual_layernorm_forward(d_inplace, d_out, d_mean, d_rstd, d_inplace, d_inp2, d_w, d_b, N, C, 0);
        validate("fused in place (residual = inp1) residual", d_inplace, residual, BF16_RTOL, 0.0f);
        validate("fused in place (residual = inp1) out", d_out, ref2.out, BF16_RTOL, 0.0f, &ref2.tol_out);
        cudaCheck(cudaFree(d_inplace));
    }
    // odd shape: C not a multiple of 32, few rows
    {
        const int n3 = 5, c3 = 37;
        std::vector<float> x3 = rand_bf16((size_t)n3 * c3, -3.0f, 1.0f, &rng);
        std::vector<float> w3 = rand_bf16(c3, 0.5f, 1.5f, &rng), b3 = rand_bf16(c3, -0.5f, 0.5f, &rng);
        LnRef ref3 = layernorm_cpu(x3, w3, b3, n3, c3);
        floatX *d_x3 = to_device_bf16(x3), *d_w3 = to_device_bf16(w3), *d_b3 = to_device_bf16(b3);
        floatX* d_o3 = dmalloc<floatX>((size_t)n3 * c3);
        layernorm_forward(d_o3, d_mean, d_rstd, d_x3, d_w3, d_b3, n3, c3, 0, 64);
        validate("llmc odd shape N=5 C=37 out", d_o3, ref3.out, BF16_RTOL, 0.0f, &ref3.tol_out);
        cudaCheck(cudaFree(d_x3)); cudaCheck(cudaFree(d_w3)); cudaCheck(cudaFree(d_b3)); cudaCheck(cudaFree(d_o3));
    }

    // both paths, the launch shapes, aliasing and determinism on more shapes
    {
        const int bs_all[] = {32, 256, 1024}, bs_one[] = {256};
        if (!quick_mode()) { test_case("C=1600", 64, 1600, 0, bs_all, 3, &rng); }                 // GPT-2 XL; 15 rows per block at 1024
        if (!quick_mode()) { test_case("C=1600 all off by one", 64, 1600, OFF_OUT | OFF_INP | OFF_W | OFF_B | OFF_INP2 | OFF_RES, bs_all, 3, &rng); }
        test_case("C=37", 5, 37, 0, bs_all, 3, &rng);
        test_case("C=100", 33, 100, 0, bs_all, 3, &rng);                   // not a multiple of 8 (of 4: x128 in fp32)
        test_case("C=768 out+1", 16, 768, OFF_OUT, bs_one, 1, &rng);
        test_case("C=768 inp+1", 16, 768, OFF_INP, bs_one, 1, &rng);
        test_case("C=768 weight+1", 16, 768, OFF_W, bs_one, 1, &rng);
        test_case("C=768 bias+1", 16, 768, OFF_B, bs_one, 1, &rng);
        test_case("C=768 inp2+1", 16, 768, OFF_INP2, bs_one, 1, &rng);
        test_case("C=768 residual+1", 16, 768, OFF_RES, bs_one, 1, &rng);
        if (!quick_mode()) { test_case("C=25000", 3, 25000, 0, bs_one, 1, &rng); }                // a row > 48 KiB: re-read
        if (!quick_mode()) { test_case("C=24999", 2, 24999, 0, bs_one, 1, &rng); }                // re-read, scalar
    }

    if (skip_benchmarks("layernorm_forward")) { return 0; }

    printf("benchmark (bytes: inp read + out written (+ residual and a second input for fused))\n");
    const double bytes = 2.0 * N * C * sizeof(floatX) + 2.0 * N * sizeof(float);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { layernorm_forward_naive_kernel<<<CEIL_DIV(N, bs), bs>>>(d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C); });
        print_benchmark("naive", bs, ms, bytes, 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { layernorm_forward(d_out, d_mean, d_rstd, d_inp, d_w, d_b, N, C, 0, bs); });
        print_benchmark("llmc layernorm_forward", bs, ms, bytes, 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { fused_residual_layernorm_forward(d_res, d_out, d_mean, d_rstd, d_inp1, d_inp2, d_w, d_b, N, C, 0, bs); });
        print_benchmark("llmc fused_residual_layernorm", bs, ms, bytes + 2.0 * N * C * sizeof(floatX), 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_w)); cudaCheck(cudaFree(d_b)); cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_mean)); cudaCheck(cudaFree(d_rstd)); cudaCheck(cudaFree(d_inp1)); cudaCheck(cudaFree(d_inp2)); cudaCheck(cudaFree(d_res));
    printf("layernorm_forward: ALL OK\n");
    return 0;
}
