/*
Test of global_norm_squared (llmc/cuda_global_norm.cuh): sum of squares of a buffer, deterministic.

Versions
  llmc : global_norm_squared<float> and <floatX> (float out) and global_norm_squared_f64 (double out),
         at block sizes 32..1024, on an aligned buffer (128-bit loads) and on the same values one element
         further (a misaligned pointer: plain loads); on count 10000007 the misaligned copy and the
         f64 variant at block sizes 32, 256, 1024 only
Checks: against a double reference; accumulate mode (two ranges into one total); counts not a multiple
of 8 (10000007, 13, 5, 1), a multiple of 8, and 0; two runs give identical bits; the misaligned copy
gives the same bits as the aligned one (the summation order does not depend on the path).
Tolerance: all terms are positive, so an fp32 sum of n terms is within (n - 1) u of the exact sum
relative. A thread sums its chunks of W = 16 / sizeof(T) values; with C = ceil(count / W) chunks and
grid = min(ceil(C / block), 1024) blocks, that is at most ceil(C / (grid * block)) * W terms; then the
block tree (<= 10 levels) and a double final sum: rel = accum bound of (per_thread + 24) terms, + u for
each square and u for the float result (the f64 variant: only the square's u).
*/
#include "common.h"
#include "../../llmc/cuda_global_norm.cuh"

// the error bound described above, for T and this count and block size
template<typename T>
static double norm_tol(size_t count, int bs, double ref, bool float_out) {
    const size_t W = 16 / sizeof(T);
    const size_t chunks = CEIL_DIV(count, W);
    size_t grid = CEIL_DIV(chunks, (size_t)bs);
    if (grid > 1024) { grid = 1024; }
    if (grid == 0) { grid = 1; }
    const double per_thread = (double)(CEIL_DIV(chunks, grid * bs) * W);
    return accum_tol(per_thread + 24, ref) + (float_out ? 2.0 : 1.0) * FP32_EPS * ref + 1e-30;
}

static void validate_f64(const char* name, const double* d_out, double ref, double tol) {
    double got = 0.0;
    cudaCheck(cudaMemcpy(&got, d_out, sizeof(double), cudaMemcpyDeviceToHost));
    double err = fabs(got - ref);
    bool ok = err <= tol && !isnan(got);
    printf("  %-44s %s  |err| %.3g, err/tol %.3f (got %.17g ref %.17g tol %.3g)\n", name, ok ? "ok  " : "FAIL",
           err, tol > 0 ? err / tol : 0.0, got, ref, tol);
    if (!ok) { exit(EXIT_FAILURE); }
}

static void check_path(const char* name, const void* values, bool want_vectorized) {
    bool ok = global_norm_is_vectorized(values) == want_vectorized;
    printf("  %-44s %s  %s loads\n", name, ok ? "ok  " : "FAIL", global_norm_is_vectorized(values) ? "128-bit" : "plain");
    if (!ok) { exit(EXIT_FAILURE); }
}

template<typename T>
static void run_case(const char* label, Rng* rng, size_t count, const int* block_sizes, int num_block_sizes) {
    std::vector<float> x = as_precision<T>(rand_f32(count, -1.0f, 1.0f, rng));
    double ref = 0.0;
    const size_t split = count / 3;
    for (size_t i = 0; i < count; i++) { ref += (double)x[i] * x[i]; }
    T* d_x = to_device<T>(x);                      // 16-byte aligned (cudaMalloc): 128-bit loads
    T* d_shifted = dmalloc<T>(count + 1);          // the same values from element 1: plain loads
    if (count > 0) { upload(d_shifted + 1, x); }
    float* d_out = dmalloc<float>(1);
    float* d_out2 = dmalloc<float>(1);
    double* d_out64 = dmalloc<double>(1);
    double* d_out64b = dmalloc<double>(1);
    float* d_scratch = dmalloc<float>(GLOBAL_NORM_MAX_BLOCKS);
    char name[160];
    snprintf(name, sizeof(name), "%s %s aligned: path", label, type_name<T>());
    check_path(name, d_x, true);
    snprintf(name, sizeof(name), "%s %s shifted by 1: path", label, type_name<T>());
    check_path(name, d_shifted + 1, false);
    for (int b = 0; b < (quick_mode() ? 1 : num_block_sizes); b++) {
        const int bs = block_sizes[b];
        const float tol = (float)norm_tol<T>(count, bs, ref, true);
        cudaCheck(cudaMemset(d_out, 0xff, sizeof(float)));
        global_norm_squared(d_out, d_x, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d", label, type_name<T>(), bs);
        validate(name, d_out, std::vector<float>(1, (float)ref), 0.0f, tol);
        // accumulate: [0, split) then [split, count) into the same float (the second range misaligned
        // unless split is a multiple of W)
        global_norm_squared(d_out2, d_x, split, d_scratch, 0, 0, bs);
        global_norm_squared(d_out2, d_x + split, count - split, d_scratch, 1, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d, two ranges accumulated", label, type_name<T>(), bs);
        validate(name, d_out2, std::vector<float>(1, (float)ref), 0.0f, 2.0f * tol);
        // determinism
        global_norm_squared(d_out2, d_x, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d determinism", label, type_name<T>(), bs);
        check_bitwise_equal(name, d_out, d_out2, sizeof(float));
        // on the large count, three block sizes are enough for the rest (emulated time under ASan)
        if (count > 1000000 && bs != 32 && bs != 256 && bs != 1024) { continue; }
        // the scalar path: the same values, the same order, the same bits
        cudaCheck(cudaMemset(d_out2, 0xff, sizeof(float)));
        global_norm_squared(d_out2, d_shifted + 1, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d shifted by 1 = aligned", label, type_name<T>(), bs);
        check_bitwise_equal(name, d_out, d_out2, sizeof(float));
        // the double total: aligned, accumulated over two ranges, scalar path
        const double tol64 = norm_tol<T>(count, bs, ref, false);
        cudaCheck(cudaMemset(d_out64, 0xff, sizeof(double)));
        global_norm_squared_f64(d_out64, d_x, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d f64", label, type_name<T>(), bs);
        validate_f64(name, d_out64, ref, tol64);
        global_norm_squared_f64(d_out64b, d_x, split, d_scratch, 0, 0, bs);
        global_norm_squared_f64(d_out64b, d_x + split, count - split, d_scratch, 1, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d f64, two ranges accumulated", label, type_name<T>(), bs);
        validate_f64(name, d_out64b, ref, 2.0 * tol64);
        global_norm_squared_f64(d_out64b, d_shifted + 1, count, d_scratch, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s block %d f64 shifted by 1 = aligned", label, type_name<T>(), bs);
        check_bitwise_equal(name, d_out64, d_out64b, sizeof(double));
    }
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_shifted)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_out2));
    cudaCheck(cudaFree(d_out64)); cudaCheck(cudaFree(d_out64b)); cudaCheck(cudaFree(d_scratch));
}

// count 0 gives exactly 0 (accumulate off), or leaves the total as it was (accumulate on)
template<typename T>
static void run_empty() {
    float* d_out = dmalloc<float>(1);
    double* d_out64 = dmalloc<double>(1);
    float* d_scratch = dmalloc<float>(GLOBAL_NORM_MAX_BLOCKS);
    T* d_x = dmalloc<T>(2);
    char name[160];
    cudaCheck(cudaMemset(d_out, 0xff, sizeof(float)));
    global_norm_squared(d_out, d_x, 0, d_scratch, 0, 0);
    snprintf(name, sizeof(name), "count=0 %s", type_name<T>());
    validate(name, d_out, std::vector<float>(1, 0.0f), 0.0f, 0.0f);
    global_norm_squared(d_out, d_x + 1, 0, d_scratch, 1, 0);   // misaligned, empty, accumulate
    snprintf(name, sizeof(name), "count=0 %s shifted, accumulate", type_name<T>());
    validate(name, d_out, std::vector<float>(1, 0.0f), 0.0f, 0.0f);
    const double seven = 7.0;
    cudaCheck(cudaMemcpy(d_out64, &seven, sizeof(double), cudaMemcpyHostToDevice));
    global_norm_squared_f64(d_out64, d_x, 0, d_scratch, 1, 0);
    snprintf(name, sizeof(name), "count=0 %s f64, accumulate", type_name<T>());
    validate_f64(name, d_out64, 7.0, 0.0);
    cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_out64)); cudaCheck(cudaFree(d_scratch)); cudaCheck(cudaFree(d_x));
}

int main() {
    print_device_info();
    Rng rng = rng_create(3);
    printf("validation\n");
    const int all_blocks[] = {32, 64, 128, 256, 512, 1024};
    const int few_blocks[] = {32, 512};
    if (!quick_mode()) {
        run_case<float>("count=10000007", &rng, 10000007, all_blocks, 6);
        run_case<floatX>("count=10000007", &rng, 10000007, all_blocks, 6);
    }
    run_case<float>("count=65536", &rng, 65536, few_blocks, 2);
    run_case<floatX>("count=65536", &rng, 65536, few_blocks, 2);
    run_case<float>("count=13", &rng, 13, all_blocks, 6);
    run_case<floatX>("count=13", &rng, 13, few_blocks, 2);
    run_case<float>("count=5", &rng, 5, all_blocks, 6);
    run_case<floatX>("count=5", &rng, 5, few_blocks, 2);
    run_case<float>("count=1", &rng, 1, few_blocks, 2);
    run_case<floatX>("count=1", &rng, 1, few_blocks, 2);
    run_empty<float>();
    run_empty<floatX>();

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
    for (int bs : block_sizes) {   // the scalar path, for comparison
        float ms = benchmark_ms(20, [&]() { global_norm_squared(d_out, d_xb + 1, n - 1, d_scratch, 0, 0, bs); });
        print_benchmark("bf16 values, misaligned (plain loads)", bs, ms, (double)n * sizeof(floatX), 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_x)); cudaCheck(cudaFree(d_xb)); cudaCheck(cudaFree(d_out)); cudaCheck(cudaFree(d_scratch));
    printf("global_norm: ALL OK\n");
    return 0;
}
