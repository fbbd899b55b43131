/*
Test of gelu_forward and gelu_backward (llmc/cuda_gelu.cuh), tanh approximation.

Versions
  scalar : gelu_*_kernel_scalar, one thread per element (the launchers' fallback)
  x128   : gelu_*_kernel_x128, 8 elements per thread with 128-bit loads
  launcher: gelu_forward / gelu_backward, also in place (dinp == dout) and on an odd length
Inputs in [-6, 6] (both tails of the GELU).
Tolerance: exact values in double; one bf16 rounding 2^-7 |ref|; tanhf error (TANH_TOL relative, see
common.h, which covers --use_fast_math): forward + 0.5 TANH_TOL |x|; backward + |dout| times the
bound on the error of gelu'(x).
*/
#include "common.h"
#include "../../llmc/cuda_gelu.cuh"

static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_ref(double x) {
    const double k = 0.7978845608028654;
    double u = k * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
}
static double gelu_grad_tol(double x) { return TANH_TOL * (0.5 + fabs(x) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)); }

int main() {
    print_device_info();
    // B*T*4C for GPT-2 124M at B=8 (emulated: B=1), T=1024; quick mode: 4 rows of 4C
    const size_t N = quick_mode() ? (size_t)4 * 3072 : (size_t)(EMULATED ? 1 : 8) * 1024 * 3072;
    Rng rng = rng_create(5);
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};

    std::vector<float> x = rand_bf16(N, -6.0f, 6.0f, &rng);
    std::vector<float> dout = rand_bf16(N, -1.0f, 1.0f, &rng);
    std::vector<float> ref_f(N), tol_f(N), ref_b(N), tol_b(N);
    for (size_t i = 0; i < N; i++) {
        ref_f[i] = (float)gelu_ref(x[i]);
        tol_f[i] = 0.5f * TANH_TOL * fabsf(x[i]) + 1e-7f;
        ref_b[i] = (float)(gelu_grad_ref(x[i]) * dout[i]);
        tol_b[i] = (float)(fabs(dout[i]) * gelu_grad_tol(x[i])) + 1e-7f;
    }
    floatX* d_x = to_device_bf16(x);
    floatX* d_dout = to_device_bf16(dout);
    floatX* d_out = dmalloc<floatX>(N);
    char name[128];

    printf("validation (N=%zu)\n", N);
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        cudaCheck(cudaMemset(d_out, 0, N * sizeof(floatX)));
        gelu_forward_kernel_scalar<<<(unsigned)CEIL_DIV(N, (size_t)bs), bs>>>(d_out, d_x, N);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "forward scalar block %d", bs); validate(name, d_out, ref_f, BF16_RTOL, 0.0f, &tol_f);

        cudaCheck(cudaMemset(d_out, 0, N * sizeof(floatX)));
        gelu_forward_kernel_x128<<<(unsigned)CEIL_DIV(N / 8, (size_t)bs), bs>>>(d_out, d_x, N);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "forward x128 block %d", bs); validate(name, d_out, ref_f, BF16_RTOL, 0.0f, &tol_f);

        cudaCheck(cudaMemset(d_out, 0, N * sizeof(floatX)));
        gelu_forward(d_out, d_x, N, 0, bs);
        snprintf(name, sizeof(name), "forward launcher block %d", bs); validate(name, d_out, ref_f, BF16_RTOL, 0.0f, &tol_f);

        cudaCheck(cudaMemset(d_out, 0, N * sizeof(floatX)));
        gelu_backward_kernel_scalar<<<(unsigned)CEIL_DIV(N, (size_t)bs), bs>>>(d_out, d_x, d_dout, N);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "backward scalar block %d", bs); validate(name, d_out, ref_b, BF16_RTOL, 0.0f, &tol_b);

        cudaCheck(cudaMemset(d_out, 0, N * sizeof(floatX)));
        gelu_backward_kernel_x128<<<(unsigned)CEIL_DIV(N / 8, (size_t)bs), bs>>>(d_out, d_x, d_dout, N);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "backward x128 block %d", bs); validate(name, d_out, ref_b, BF16_RTOL, 0.0f, &tol_b);

        cudaCheck(cudaMemset(d_out, 0, N * sizeof(floatX)));
        gelu_backward(d_out, d_x, d_dout, N, 0, bs);
        snprintf(name, sizeof(name), "backward launcher block %d", bs); validate(name, d_out, ref_b, BF16_RTOL, 0.0f, &tol_b);
    }
    // in place backward: dinp == dout
    {
        floatX* d_inplace = to_device_bf16(dout);
        gelu_backward(d_inplace, d_x, d_inplace, N, 0);
        validate("backward in place (dinp == dout)", d_inplace, ref_b, BF16_RTOL, 0.0f, &tol_b);
        cudaCheck(cudaFree(d_inplace));
    }
    // odd length and an unaligned start: the launchers must take the scalar path
    {
        const size_t n = 1001;
        std::vector<float> rf(ref_f.begin() + 1, ref_f.begin() + 1 + n), tf(tol_f.begin() + 1, tol_f.begin() + 1 + n);
        std::vector<float> rb(ref_b.begin() + 1, ref_b.begin() + 1 + n), tb(tol_b.begin() + 1, tol_b.begin() + 1 + n);
        gelu_forward(d_out, d_x + 1, n, 0);
        validate("forward launcher n=1001, 2-byte aligned", d_out, rf, BF16_RTOL, 0.0f, &tf);
        gelu_backward(d_out, d_x + 1, d_dout + 1, n, 0);
        validate("backward launcher n=1001, 2-byte aligned", d_out, rb, BF16_RTOL, 0.0f, &tb);
    }

    if (skip_benchmarks("gelu")) { return 0; }

    printf("benchmark (N=%zu)\n", N);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { gelu_forward_kernel_scalar<<<(unsigned)CEIL_DIV(N, (size_t)bs), bs>>>(d_out, d_x, N); });
        print_benchmark("forward scalar", bs, ms, 2.0 * N * sizeof(floatX), 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { gelu_forward_kernel_x128<<<(unsigned)CEIL_DIV(N / 8, (size_t)bs), bs>>>(d_out, d_x, N); });
        print_benchmark("forward x128", bs, ms, 2.0 * N * sizeof(floatX), 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { gelu_backward_kernel_scalar<<<(unsigned)CEIL_DIV(N, (size_t)bs), bs>>>(d_out, d_x, d_dout, N); });
        print_benchmark("backward scalar", bs, ms, 3.0 * N * sizeof(floatX), 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { gelu_backward_kernel_x128<<<(unsigned)CEIL_DIV(N / 8, (size_t)bs), bs>>>(d_out, d_x, d_dout, N); });
        print_benchmark("backward x128", bs, ms, 3.0 * N * sizeof(floatX), 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_out));
    printf("gelu: ALL OK\n");
    return 0;
}
