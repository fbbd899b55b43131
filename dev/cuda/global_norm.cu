/*
Test of global_norm_squared (llmc/cuda_global_norm.cuh): sum of squares of a buffer, deterministic.

Versions
  llmc : global_norm_squared<float> and <floatX> at block sizes 32..1024
Checks: against a double reference; accumulate mode (two ranges into one total); count 0 and a tiny
count; two runs give identical bits.
Tolerance: all terms are positive, so an fp32 sum of n terms is within (n - 1) u of the exact sum
relative; each thread sums ceil(count / (grid * block)) terms, then the block tree (<= 10 levels) and
a double final sum: rel = accum bound of (per_thread + 24) terms, + u for each square.
*/
#include "common.h"
#include "../../llmc/cuda_global_norm.cuh"

template<typename T>
static void run_case(const char* label, Rng* rng, size_t count) {
    std::vector<float> x = as_precision<T>(rand_f32(count, -1.0f, 1.0f, rng));
    double ref = 0.0;
    const size_t split = count / 3;
    for (size_t i = 0; i < count; i++) { ref += (double)x[i] * x[i]; }
    T* d_x = to_device<T>(x);
    float* d_out = dmalloc<float>(1);
    float* d_out2 = dmalloc<float>(1);
    float* d_scratch = dmalloc<float>(GLOBAL_NORM_MAX_BLOCKS);
    char name[160];
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        size_t grid = CEIL_DIV(count, (size_t)bs);
        if (grid > GLOBAL_NORM_MAX_BLOCKS) { grid = GLOBAL_NORM_MAX_BLOCKS; }
        if (grid == 0) { grid = 1; }
        const double per_thread = (double)CEIL_DIV(count, grid * bs);
        const float tol = accum_tol(per_thread + 24, ref) + (float)(2.0 * FP32_EPS * ref) + 1e-30f;
        cudaCheck(cudaMemset(d_out, 0xff, sizeof(float)));
        global_norm_squared(d_out, d_x, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d", label, type_name<T>(), bs);
        validate(name, d_out, std::vector<float>(1, (float)ref), 0.0f, tol);
        // accumulate: [0, split) then [split, count) into the same float
        global_norm_squared(d_out2, d_x, split, d_scratch, 0, 0, bs);
        global_norm_squared(d_out2, d_x + split, count - split, d_scratch, 1, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d, two ranges accumulated", label, type_name<T>(), bs);
        validate(name, d_out2, std::vector<float>(1, (float)ref), 0.0f, 2.0f * tol);
        // determinism
        global_norm_squared(d_out2, d_x, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d determinism", label, type_name<T>(), bs);
        check_bitwise_equal(name, d_out, d_out2, sizeof(float));
    }
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_out2)); cudaCheck(cudaFree(d_scratch));
}

int main() {
    print_device_info();
    Rng rng = rng_create(3);
    printf("validation\n");
    run_case<float>("count=10000007", &rng, 10000007);
    run_case<floatX>("count=10000007", &rng, 10000007);
    run_case<float>("count=5", &rng, 5);
    {   // count 0 gives exactly 0
        float* d_out = dmalloc<float>(1);
        float* d_scratch = dmalloc<float>(GLOBAL_NORM_MAX_BLOCKS);
        float* d_x = dmalloc<float>(1);
        cudaCheck(cudaMemset(d_out, 0xff, sizeof(float)));
        global_norm_squared(d_out, d_x, 0, d_scratch, 0, 0);
        validate("count=0", d_out, std::vector<float>(1, 0.0f), 0.0f, 0.0f);
        cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_scratch)); cudaCheck(cudaFree(d_x));
    }

    const size_t n = 124475904;
    if (skip_benchmarks("global_norm")) { return 0; }
    printf("benchmark (n=%zu)\n", n);
    float* d_x = dmalloc<float>(n);
    floatX* d_xb = dmalloc<floatX>(n);
    float* d_out = dmalloc<float>(1);
    float* d_scratch = dmalloc<float>(GLOBAL_NORM_MAX_BLOCKS);
    const int block_sizes[] = {128, 256, 512, 1024};
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { global_norm_squared(d_out, d_x, n, d_scratch, 0, 0, bs); });
        print_benchmark("fp32 values", bs, ms, (double)n * sizeof(float), 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() { global_norm_squared(d_out, d_xb, n, d_scratch, 0, 0, bs); });
        print_benchmark("bf16 values", bs, ms, (double)n * sizeof(floatX), 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_xb)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_scratch));
    printf("global_norm: ALL OK\n");
    return 0;
}
