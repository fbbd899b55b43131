/*
dev/cuda/common.h: the shared harness for the standalone kernel tests in dev/cuda/.

  - Rng: a small deterministic generator (fixed seeds, same inputs on every run and machine).
  - host bf16 emulation: bf16_round() rounds a float to the nearest bf16 (ties to even), exactly as
    the device's __float2bfloat16_rn; inputs are generated already rounded, so the CPU reference
    and the GPU see bit-identical inputs and only the computation is being compared.
  - upload / download helpers for float, bf16 (floatX) and int buffers.
  - validate(): compare a device buffer with a CPU reference, element by element, against
    tol_i = atol + rtol * |ref_i| + extra_i (extra: an optional per-element bound computed by the
    test from the magnitudes involved). Prints the worst error relative to its tolerance and exits
    with status 1 on any failure or NaN.
  - check_bitwise_equal(): for the determinism checks (two runs must give the same bits).
  - benchmark_ms(): time a launch with CUDA events, writing a buffer twice the L2 size before every
    run so each run starts with a cold cache.
  - skip_benchmarks(): true under the CPU emulation (dev/cpucuda), where times mean nothing: a
    harness then ends after its validations (CPUCUDA_BENCH=1 runs the benchmarks anyway).
  - quick_mode(), quick_skip(): CPUCUDA_QUICK=1 runs a harness's smallest validations only.

Tolerance vocabulary used by the tests:
  BF16_RTOL = 2^-7: a result rounded once to bf16 is within 2^-8 relative of the exact value (8
    significant bits); 2^-7 leaves a factor 2 of margin.
  TANH_TOL = 2^-10: relative error of tanhf under --use_fast_math (GELU tests).
  FP32_EPS = 2^-24 (unit roundoff). A sum of n terms computed in fp32 in any order is within
    (n - 1) * 2^-24 * sum |terms| of the exact sum; tests use accum_tol(n, mag) = 2 (n + 2) 2^-24 mag.
*/
#ifndef DEV_CUDA_COMMON_H
#define DEV_CUDA_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include <vector>
#include "../../llmc/cuda_common.cuh"

#define BF16_RTOL (1.0f / 128.0f)
// Under the CPU emulation (dev/cpucuda) a harness may shrink its largest shapes (fewer rows, the same
// widths), so that every validation still runs within make test's time.
#ifdef CPUCUDA
#define EMULATED 1
#else
#define EMULATED 0
#endif
// CPUCUDA_QUICK=1 (dev/test/test_cpucuda.py's quick_harnesses, the five-minute check): a harness runs
// only its smallest validation cases, one block size each, still against its CPU reference, and no
// benchmark. Without it (every GPU run, and the full emulated runs) nothing changes.
inline bool quick_mode() {
    static const int quick = getenv("CPUCUDA_QUICK") != NULL && getenv("CPUCUDA_QUICK")[0] == '1';
    return quick != 0;
}
// For a loop over a harness's block sizes: `if (quick_skip(bs, block_sizes)) { continue; }` keeps the
// first one in quick mode.
template<size_t N>
inline bool quick_skip(int bs, const int (&block_sizes)[N]) { return quick_mode() && bs != block_sizes[0]; }
#define FP32_EPS (1.0f / 16777216.0f)
// relative error allowed for tanhf: with --use_fast_math (FAST_MATH=1) it becomes tanh.approx.f32,
// whose relative error is about 2^-11; 2^-10 covers it. Without fast math tanhf is within a few ulp.
#define TANH_TOL (1.0f / 1024.0f)

// error bound for an fp32 sum of n terms whose absolute values add up to mag (factor 2 of margin)
inline float accum_tol(double n, double mag) { return (float)(2.0 * (n + 2.0) * FP32_EPS * mag); }

// ----------------------------------------------------------------------------
// device setup

inline void print_device_info() {
    int dev = 0;
    cudaCheck(cudaSetDevice(dev));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s, sm_%d%d, %d SMs, %.1f GiB, L2 %.1f MiB\n", prop.name, prop.major, prop.minor,
           prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, prop.l2CacheSize / 1048576.0);
}

// ----------------------------------------------------------------------------
// deterministic random numbers (xorshift64*)

typedef struct { uint64_t state; } Rng;

inline Rng rng_create(uint64_t seed) { Rng r; r.state = seed * 2654435761ull + 0x9E3779B97F4A7C15ull; if (r.state == 0) r.state = 1; return r; }
inline uint32_t rng_u32(Rng* r) {
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}
// uniform in [0, 1)
inline float rng_uniform(Rng* r) { return (rng_u32(r) >> 8) * (1.0f / 16777216.0f); }
// uniform in [lo, hi)
inline float rng_range(Rng* r, float lo, float hi) { return lo + (hi - lo) * rng_uniform(r); }
// integer in [lo, hi)
inline int rng_int(Rng* r, int lo, int hi) { return lo + (int)(rng_u32(r) % (uint32_t)(hi - lo)); }

// ----------------------------------------------------------------------------
// host bf16 emulation

inline uint16_t float_to_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) { return (uint16_t)((u >> 16) | 0x40u); }   // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);   // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}
inline float bf16_bits_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline float bf16_round(float f) { return bf16_bits_to_float(float_to_bf16_bits(f)); }
inline float bf16_round(double d) { return bf16_round((float)d); }   // note: double rounding, fine for references

// the distance between x and the next bf16 away from zero (one unit in the last place)
inline float bf16_ulp(float x) {
    uint16_t b = float_to_bf16_bits(x);
    return fabsf(bf16_bits_to_float((uint16_t)(b + 1)) - bf16_bits_to_float(b));
}

// ----------------------------------------------------------------------------
// random host data

// values exactly representable in bf16
inline std::vector<float> rand_bf16(size_t n, float lo, float hi, Rng* r) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) { v[i] = bf16_round(rng_range(r, lo, hi)); }
    return v;
}
inline std::vector<float> rand_f32(size_t n, float lo, float hi, Rng* r) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) { v[i] = rng_range(r, lo, hi); }
    return v;
}

// ----------------------------------------------------------------------------
// device buffers

template<typename T>
inline T* dmalloc(size_t n) {
    T* p = NULL;
    cudaCheck(cudaMalloc(&p, (n > 0 ? n : 1) * sizeof(T)));
    cudaCheck(cudaMemset(p, 0, (n > 0 ? n : 1) * sizeof(T)));
    return p;
}

inline void upload(floatX* d, const std::vector<float>& h) {
    std::vector<uint16_t> bits(h.size());
    for (size_t i = 0; i < h.size(); i++) { bits[i] = float_to_bf16_bits(h[i]); }
    cudaCheck(cudaMemcpy(d, bits.data(), bits.size() * sizeof(uint16_t), cudaMemcpyHostToDevice));
}
inline void upload(float* d, const std::vector<float>& h) {
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
}
inline void upload(int* d, const std::vector<int>& h) {
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
}
inline floatX* to_device_bf16(const std::vector<float>& h) { floatX* d = dmalloc<floatX>(h.size()); upload(d, h); return d; }
// A device copy of h (floatX) that starts `offset` elements into its allocation, so a case can hand a
// kernel a pointer that is not 16-byte aligned (offset 1) and see its scalar path; free `base`.
struct DevRow { floatX* base; floatX* p; };
inline DevRow dev_at(const std::vector<float>& h, int offset) {
    DevRow d;
    d.base = dmalloc<floatX>(h.size() + 1);
    d.p = d.base + offset;
    upload(d.p, h);
    return d;
}
inline float* to_device_f32(const std::vector<float>& h) { float* d = dmalloc<float>(h.size()); upload(d, h); return d; }
inline int* to_device_int(const std::vector<int>& h) { int* d = dmalloc<int>(h.size()); upload(d, h); return d; }

inline std::vector<float> download(const floatX* d, size_t n) {
    std::vector<uint16_t> bits(n);
    cudaCheck(cudaMemcpy(bits.data(), d, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++) { h[i] = bf16_bits_to_float(bits[i]); }
    return h;
}
inline std::vector<float> download(const float* d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
}

// a host vector of floats stored with the precision of T (bf16-rounded for floatX)
template<typename T> inline std::vector<float> as_precision(const std::vector<float>& v) { return v; }
template<> inline std::vector<float> as_precision<floatX>(const std::vector<float>& v) {
    std::vector<float> r(v.size());
    for (size_t i = 0; i < v.size(); i++) { r[i] = bf16_round(v[i]); }
    return r;
}
// upload into a buffer of type T (float or floatX)
template<typename T> inline T* to_device(const std::vector<float>& h);
template<> inline float* to_device<float>(const std::vector<float>& h) { return to_device_f32(h); }
template<> inline floatX* to_device<floatX>(const std::vector<float>& h) { return to_device_bf16(h); }
template<typename T> inline const char* type_name();
template<> inline const char* type_name<float>() { return "fp32"; }
template<> inline const char* type_name<floatX>() { return "bf16"; }

// ----------------------------------------------------------------------------
// validation

// host values (already downloaded) against the reference; exits on failure
inline void validate_host(const char* name, const std::vector<float>& got, const std::vector<float>& ref,
                          float rtol, float atol, const std::vector<float>* extra_tol = NULL) {
    if (got.size() != ref.size()) {
        printf("  %-44s FAIL: size %zu vs reference %zu\n", name, got.size(), ref.size());
        exit(EXIT_FAILURE);
    }
    size_t n = ref.size(), bad = 0, worst = 0;
    double worst_ratio = -1.0, max_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        double tol = atol + rtol * fabs((double)ref[i]) + (extra_tol ? (double)(*extra_tol)[i] : 0.0);
        double err = fabs((double)got[i] - (double)ref[i]);
        bool ok = (err <= tol) && !isnan(got[i]);
        if (isnan(got[i])) { err = INFINITY; }
        double ratio = err / (tol > 0 ? tol : 1e-30);
        if (ratio > worst_ratio) { worst_ratio = ratio; worst = i; }
        if (err > max_err) { max_err = err; }
        if (!ok) {
            if (bad < 5) { printf("    mismatch at %zu: got %.8g, reference %.8g, |err| %.3g > tol %.3g\n", i, got[i], ref[i], err, tol); }
            bad++;
        }
    }
    double worst_tol = atol + rtol * fabs((double)ref[worst]) + (extra_tol ? (double)(*extra_tol)[worst] : 0.0);
    printf("  %-44s %s  max|err| %.3g, worst err/tol %.3f (at %zu: got %.6g ref %.6g tol %.3g)\n",
           name, bad ? "FAIL" : "ok  ", max_err, worst_ratio, worst, got[worst], ref[worst], worst_tol);
    if (bad) {
        printf("  %s: %zu of %zu elements out of tolerance (rtol %.3g, atol %.3g%s)\n", name, bad, n, rtol, atol,
               extra_tol ? ", plus per-element bounds" : "");
        exit(EXIT_FAILURE);
    }
}

template<typename D>
inline void validate(const char* name, const D* d_got, const std::vector<float>& ref, float rtol, float atol,
                     const std::vector<float>* extra_tol = NULL) {
    validate_host(name, download(d_got, ref.size()), ref, rtol, atol, extra_tol);
}

// two device buffers must hold the same bits (determinism checks)
inline void check_bitwise_equal(const char* name, const void* d_a, const void* d_b, size_t bytes) {
    std::vector<unsigned char> a(bytes), b(bytes);
    cudaCheck(cudaMemcpy(a.data(), d_a, bytes, cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(b.data(), d_b, bytes, cudaMemcpyDeviceToHost));
    size_t first = bytes;
    for (size_t i = 0; i < bytes; i++) { if (a[i] != b[i]) { first = i; break; } }
    if (first != bytes) {
        printf("  %-44s FAIL: runs differ, first at byte %zu\n", name, first);
        exit(EXIT_FAILURE);
    }
    printf("  %-44s ok    bitwise identical over %zu bytes\n", name, bytes);
}

// ----------------------------------------------------------------------------
// benchmarking

// Called between the validations and the benchmark section: under the CPU emulation it prints the
// harness's closing line and returns true, and the harness returns 0 without benchmarking.
inline bool skip_benchmarks(const char* harness) {
    if (quick_mode()) {
        printf("%s: ALL OK (quick mode, CPUCUDA_QUICK=1: the smallest validations only, no benchmark)\n", harness);
        return true;
    }
#ifdef CPUCUDA
    const char* s = getenv("CPUCUDA_BENCH");
    if (s == NULL || s[0] != '1') {
        printf("%s: ALL OK (benchmarks skipped: CPU emulation, whose times say nothing about a GPU)\n", harness);
        return true;
    }
#endif
    (void)harness;
    return false;
}

// average milliseconds of f() over `repeats` runs, each after evicting the L2 (writing a buffer of
// twice its size), after one untimed warm-up run. f must launch its work on the default stream (0).
template<typename F>
inline float benchmark_ms(int repeats, F f) {
    int dev = 0, l2 = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    size_t flush_bytes = (size_t)(l2 > 0 ? l2 : (1 << 20)) * 2;
    void* flush_buf = NULL;
    cudaCheck(cudaMalloc(&flush_buf, flush_bytes));
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    f();   // warm-up: lazy module loading, cuBLASLt heuristics caches
    cudaCheck(cudaDeviceSynchronize());
    float total = 0.0f;
    for (int r = 0; r < repeats; r++) {
        cudaCheck(cudaMemset(flush_buf, r & 0xff, flush_bytes));
        cudaCheck(cudaEventRecord(start, 0));
        f();
        cudaCheck(cudaEventRecord(stop, 0));
        cudaCheck(cudaEventSynchronize(stop));
        float ms = 0.0f;
        cudaCheck(cudaEventElapsedTime(&ms, start, stop));
        total += ms;
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    cudaCheck(cudaFree(flush_buf));
    return total / repeats;
}

// one line of benchmark output; bytes and flops may be 0 (not printed)
inline void print_benchmark(const char* name, int block_size, float ms, double bytes, double flops) {
    printf("  %-36s", name);
    if (block_size > 0) { printf(" block %4d", block_size); } else { printf("           "); }
    printf(" | %9.4f ms", ms);
    if (bytes > 0) { printf(" | %7.1f GB/s", bytes / (ms * 1e-3) / 1e9); }
    if (flops > 0) { printf(" | %7.1f TFLOP/s", flops / (ms * 1e-3) / 1e12); }
    printf("\n");
}

#endif // DEV_CUDA_COMMON_H
