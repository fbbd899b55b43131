/*
Test of layernorm_forward and fused_residual_layernorm_forward (llmc/cuda_layernorm.cuh).

Versions
  naive : one thread per row (this file), the simplest correct kernel
  llmc  : layernorm_forward (one warp per row), fused_residual_layernorm_forward
Checks: out (bf16), mean and rstd (fp32); for the fused version also residual = bf16(inp1 + inp2), and
that the normalization uses the rounded residual. Rows have random offsets (mean far from 0).
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

int main() {
    print_device_info();
    const int B = 8, T = 1024, C = 768, N = B * T;
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
