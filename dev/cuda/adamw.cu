/*
Test of adamw_update (llmc/cuda_adamw.cuh): PyTorch AdamW as in doc/formats.md, fp32 master weights,
bf16 params written with stochastic rounding.

Versions
  llmc : adamw_update<float> and adamw_update<floatX> (gradient type), with and without master weights
Checks
  - m, v, master against a double reference (t = 3, weight decay on, grad_scale != 1)
  - params: each is one of the two bf16 values bracketing the GPU's new master (or equal to it when
    exact); rounding up happens with probability = the dropped fraction, checked over all elements
    (sum of (up - fraction) within 6 standard deviations); the same seed gives the same bits and a
    different seed different bits
  - no master weights (master == NULL): the bf16 params are read as the master copy
  - the two paths (128-bit chunks when every pointer is 16-byte aligned, one element per thread
    otherwise) give BITWISE the same params, master, m and v: the same data in aligned buffers and
    with every buffer, or only one, shifted by one element; gradients float and floatX, master and
    none, counts that are and are not multiples of 8, an odd index0
  - the rounding key: each param is its master rounded up exactly when the 16 dropped bits exceed the
    low 16 bits of random_u32(seed, index0 + i) (the rule of stochastic_round_bf16), on both paths
Tolerance (fp32 evaluation, u = 2^-24, everything x2 margin):
  m      : 4u (b1 |m0| + (1-b1) |g|)
  v      : 6u (b2 v0 + (1-b2) g^2)
  master : 2 [2u (|p| + |p'|) + lr (d_upd + 4u (wd |p| + |upd|))],
           d_upd = (tol_m / bc1 + u |m_hat|) / (sqrt(v_hat) + eps) + 7u |upd|
*/
#include "common.h"
#include "../../llmc/cuda_adamw.cuh"

struct AdamRef { std::vector<float> m, v, p, tol_m, tol_v, tol_p; };

static AdamRef adamw_cpu(const std::vector<float>& p0, const std::vector<float>& m0, const std::vector<float>& v0,
                         const std::vector<float>& grads, float lr, float b1, float b2, float eps, float wd, float gs,
                         float bc1, float bc2) {
    const double u = FP32_EPS;
    size_t n = p0.size();
    AdamRef r;
    r.m.resize(n); r.v.resize(n); r.p.resize(n); r.tol_m.resize(n); r.tol_v.resize(n); r.tol_p.resize(n);
    for (size_t i = 0; i < n; i++) {
        double g = (double)grads[i] * gs;
        double m = b1 * (double)m0[i] + (1.0 - (double)b1) * g;
        double v = b2 * (double)v0[i] + (1.0 - (double)b2) * g * g;
        double mhat = m / bc1, vhat = v / bc2;
        double upd = mhat / (sqrt(vhat) + eps);
        double p = p0[i] - lr * (wd * (double)p0[i] + upd);
        r.m[i] = (float)m; r.v[i] = (float)v; r.p[i] = (float)p;
        double tm = 4.0 * u * (b1 * fabs(m0[i]) + (1.0 - b1) * fabs(g));
        double tv = 6.0 * u * (b2 * v0[i] + (1.0 - b2) * g * g);
        double dupd = (tm / bc1 + u * fabs(mhat)) / (sqrt(vhat) + eps) + 7.0 * u * fabs(upd);
        r.tol_m[i] = (float)tm;
        r.tol_v[i] = (float)tv;
        r.tol_p[i] = (float)(2.0 * (2.0 * u * (fabs(p0[i]) + fabs(p)) + lr * (dupd + 4.0 * u * (wd * fabs(p0[i]) + fabs(upd)))));
    }
    return r;
}

// params must bracket the master values; with check_statistics, also the rate of rounding up
static void check_stochastic_rounding(const char* name, const floatX* d_params, const float* d_master, size_t n,
                                      bool check_statistics) {
    std::vector<float> master = download(d_master, n);
    std::vector<uint16_t> pbits(n);
    cudaCheck(cudaMemcpy(pbits.data(), d_params, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    double excess = 0.0, var = 0.0;
    size_t ups = 0, inexact = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &master[i], 4);
        uint16_t lo = (uint16_t)(bits >> 16);
        uint32_t dropped = bits & 0xFFFFu;
        double frac = dropped / 65536.0;
        bool up;
        if (pbits[i] == lo) { up = false; }
        else if (dropped != 0 && pbits[i] == (uint16_t)(lo + 1)) { up = true; }
        else {
            printf("  %-44s FAIL at %zu: master %.9g (bits %08x) but param bits %04x\n", name, i, master[i], bits, pbits[i]);
            exit(EXIT_FAILURE);
        }
        if (dropped != 0) { inexact++; }
        ups += up;
        excess += (up ? 1.0 : 0.0) - frac;
        var += frac * (1.0 - frac);
    }
    double sigma = sqrt(var > 0 ? var : 1.0);
    bool ok = !check_statistics || fabs(excess) <= 6.0 * sigma;
    printf("  %-44s %s  all bracket master; rounded up %zu of %zu inexact; sum(up - frac) = %.1f (6 sigma = %.1f)\n",
           name, ok ? "ok  " : "FAIL", ups, inexact, excess, 6.0 * sigma);
    if (!ok) { exit(EXIT_FAILURE); }
}

// The host's reading of the documented rounding: params[i] is master[i] with its low 16 bits dropped,
// plus one bf16 ulp (in magnitude) when the dropped bits exceed the low 16 bits of random_u32(seed, index0 + i).
static void check_rounding_key(const char* name, const floatX* d_params, const float* d_master, size_t n,
                               unsigned int seed, size_t index0) {
    std::vector<float> master = download(d_master, n);
    std::vector<uint16_t> pbits(n);
    cudaCheck(cudaMemcpy(pbits.data(), d_params, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    size_t ups = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &master[i], 4);
        const bool up = (bits & 0xFFFFu) > (random_u32(seed, index0 + i) & 0xFFFFu);
        const uint16_t want = (uint16_t)((bits >> 16) + (up ? 1u : 0u));
        ups += up;
        if (pbits[i] != want) {
            printf("  %-44s FAIL at %zu: master bits %08x, key index %zu: want param bits %04x, got %04x\n",
                   name, i, bits, index0 + i, want, pbits[i]);
            exit(EXIT_FAILURE);
        }
    }
    printf("  %-44s ok    every param is its master rounded with key index0 + i (%zu of %zu up)\n", name, ups, n);
}

// AdamW's buffers, each shifted by `shift` elements from a 16-byte aligned allocation
template<typename GradT>
struct AdamBuffers {
    float *master, *m, *v;
    floatX* params;
    GradT* grads;
    void* alloc[5];
};
template<typename GradT>
static AdamBuffers<GradT> adam_buffers(size_t n, const int shift[5], bool with_master, const std::vector<float>& master,
                                       const std::vector<float>& params, const std::vector<float>& m0,
                                       const std::vector<float>& v0, const std::vector<float>& grads) {
    AdamBuffers<GradT> b;
    float* dm = dmalloc<float>(n + 1);
    floatX* dp = dmalloc<floatX>(n + 1);
    float* d1 = dmalloc<float>(n + 1);
    float* d2 = dmalloc<float>(n + 1);
    GradT* dg = dmalloc<GradT>(n + 1);
    b.alloc[0] = dm; b.alloc[1] = dp; b.alloc[2] = d1; b.alloc[3] = d2; b.alloc[4] = dg;
    b.master = with_master ? dm + shift[0] : NULL;
    b.params = dp + shift[1];
    b.m = d1 + shift[2];
    b.v = d2 + shift[3];
    b.grads = dg + shift[4];
    if (with_master) { upload(b.master, master); }
    upload(b.params, params); upload(b.m, m0); upload(b.v, v0); upload(b.grads, grads);
    return b;
}
template<typename GradT>
static void free_buffers(AdamBuffers<GradT>* b) { for (void* p : b->alloc) { cudaCheck(cudaFree(p)); } }

// one step's random state: master weights, their bf16 copy, moments and gradients (of GradT's precision)
struct AdamInputs { std::vector<float> master, params, m0, v0, grads; };
template<typename GradT>
static AdamInputs adam_inputs(Rng* rng, size_t n) {
    AdamInputs in;
    in.master = rand_f32(n, -1.0f, 1.0f, rng);
    in.params.resize(n);
    for (size_t i = 0; i < n; i++) { in.params[i] = bf16_round(in.master[i]); }
    in.m0 = rand_f32(n, -0.01f, 0.01f, rng);
    in.v0 = rand_f32(n, 0.0f, 1e-4f, rng);
    in.grads = as_precision<GradT>(rand_f32(n, -0.1f, 0.1f, rng));
    return in;
}

// The 128-bit path (every buffer aligned) against the scalar path (the same data with some buffers
// shifted by one element): the same bits in params, master, m and v.
template<typename GradT>
static void check_paths(Rng* rng, size_t n, bool with_master, size_t index0) {
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.25f;
    const float bc1 = 1.0f - powf(b1, 2.0f), bc2 = 1.0f - powf(b2, 2.0f);
    const unsigned int seed = 0xC0FFEEu;
    const AdamInputs in = adam_inputs<GradT>(rng, n);
    const std::vector<float>&master = in.master, &params = in.params, &m0 = in.m0, &v0 = in.v0, &grads = in.grads;
    const int aligned[5] = {0, 0, 0, 0, 0};
    const int all_shifted[5] = {1, 1, 1, 1, 1};
    const int params_shifted[5] = {0, 1, 0, 0, 0};   // bf16: its 16-byte packs no longer line up
    const int v_shifted[5] = {0, 0, 0, 1, 0};
    const int* shifts[3] = {all_shifted, params_shifted, v_shifted};
    const char* shift_names[3] = {"all shifted by 1", "params shifted by 1", "v shifted by 1"};
    char label[96], name[192];
    snprintf(label, sizeof(label), "paths n=%zu %s grads %s index0=%zu", n, type_name<GradT>(),
             with_master ? "master" : "no master", index0);

    AdamBuffers<GradT> a = adam_buffers<GradT>(n, aligned, with_master, master, params, m0, v0, grads);
    bool vec = adamw_is_vectorized(a.master, a.params, a.m, a.v, a.grads);
    printf("  %-44s %s  aligned: %s\n", label, vec ? "ok  " : "FAIL", vec ? "128-bit path" : "scalar path");
    if (!vec) { exit(EXIT_FAILURE); }
    adamw_update(a.master, a.params, a.m, a.v, a.grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, seed, index0, 0, 128);
    if (with_master) {
        snprintf(name, sizeof(name), "%s: rounding key", label);
        check_rounding_key(name, a.params, a.master, n, seed, index0);
    }
    for (int s = 0; s < 3; s++) {
        AdamBuffers<GradT> b = adam_buffers<GradT>(n, shifts[s], with_master, master, params, m0, v0, grads);
        bool bvec = adamw_is_vectorized(b.master, b.params, b.m, b.v, b.grads);
        snprintf(name, sizeof(name), "%s, %s", label, shift_names[s]);
        printf("  %-44s %s  %s\n", name, bvec ? "FAIL" : "ok  ", bvec ? "128-bit path" : "scalar path");
        if (bvec) { exit(EXIT_FAILURE); }
        adamw_update(b.master, b.params, b.m, b.v, b.grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, seed, index0, 0, 128);
        snprintf(name, sizeof(name), "%s, %s: params", label, shift_names[s]);
        check_bitwise_equal(name, a.params, b.params, n * sizeof(floatX));
        if (with_master) {
            snprintf(name, sizeof(name), "%s, %s: master", label, shift_names[s]);
            check_bitwise_equal(name, a.master, b.master, n * sizeof(float));
        }
        snprintf(name, sizeof(name), "%s, %s: m", label, shift_names[s]);
        check_bitwise_equal(name, a.m, b.m, n * sizeof(float));
        snprintf(name, sizeof(name), "%s, %s: v", label, shift_names[s]);
        check_bitwise_equal(name, a.v, b.v, n * sizeof(float));
        free_buffers(&b);
    }
    free_buffers(&a);
}

template<typename GradT>
static void run_case(const char* label, Rng* rng, size_t n) {
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    const int t = 3;
    const float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
    const AdamInputs in = adam_inputs<GradT>(rng, n);
    const std::vector<float>&master = in.master, &params = in.params, &m0 = in.m0, &v0 = in.v0, &grads = in.grads;
    AdamRef ref = adamw_cpu(master, m0, v0, grads, lr, b1, b2, eps, wd, gs, bc1, bc2);

    float *d_master = to_device_f32(master), *d_m = to_device_f32(m0), *d_v = to_device_f32(v0);
    floatX* d_params = to_device_bf16(params);
    floatX* d_params2 = to_device_bf16(params);
    GradT* d_grads = to_device<GradT>(grads);
    char name[160];
    const int block_sizes[] = {64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        upload(d_master, master); upload(d_m, m0); upload(d_v, v0); upload(d_params, params);
        adamw_update(d_master, d_params, d_m, d_v, d_grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, 1234u, 0, 0, bs);
        snprintf(name, sizeof(name), "%s %s grads block %d m", label, type_name<GradT>(), bs);      validate(name, d_m, ref.m, 0.0f, 1e-12f, &ref.tol_m);
        snprintf(name, sizeof(name), "%s %s grads block %d v", label, type_name<GradT>(), bs);      validate(name, d_v, ref.v, 0.0f, 1e-14f, &ref.tol_v);
        snprintf(name, sizeof(name), "%s %s grads block %d master", label, type_name<GradT>(), bs); validate(name, d_master, ref.p, 0.0f, 1e-9f, &ref.tol_p);
        snprintf(name, sizeof(name), "%s %s grads block %d params", label, type_name<GradT>(), bs);
        check_stochastic_rounding(name, d_params, d_master, n, n >= 1000);
    }
    // seeds: same seed same bits, another seed other bits (needs enough elements to be sure)
    if (n >= 1000) {
        upload(d_master, master); upload(d_m, m0); upload(d_v, v0); upload(d_params, params);
        adamw_update(d_master, d_params, d_m, d_v, d_grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, 1234u, 0, 0);
        upload(d_master, master); upload(d_m, m0); upload(d_v, v0); upload(d_params2, params);
        adamw_update(d_master, d_params2, d_m, d_v, d_grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, 1234u, 0, 0);
        snprintf(name, sizeof(name), "%s same seed, same params", label);
        check_bitwise_equal(name, d_params, d_params2, n * sizeof(floatX));
        upload(d_master, master); upload(d_m, m0); upload(d_v, v0); upload(d_params2, params);
        adamw_update(d_master, d_params2, d_m, d_v, d_grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, 4321u, 0, 0);
        std::vector<float> a = download(d_params, n), b = download(d_params2, n);
        size_t diff = 0;
        for (size_t i = 0; i < n; i++) { diff += (a[i] != b[i]); }
        bool ok = diff > n / 10;
        printf("  %-44s %s  %zu of %zu params differ\n", "another seed, other rounding", ok ? "ok  " : "FAIL", diff, n);
        if (!ok) { exit(EXIT_FAILURE); }
        // two ranges (as two ZeRO shards would update them), each with its global index0: the same bits
        size_t half = n / 2 + 3;
        upload(d_master, master); upload(d_m, m0); upload(d_v, v0); upload(d_params2, params);
        adamw_update(d_master, d_params2, d_m, d_v, d_grads, half, lr, b1, b2, eps, wd, gs, bc1, bc2, 1234u, 0, 0);
        adamw_update(d_master + half, d_params2 + half, d_m + half, d_v + half, d_grads + half, n - half,
                     lr, b1, b2, eps, wd, gs, bc1, bc2, 1234u, half, 0);
        snprintf(name, sizeof(name), "%s two ranges = one range", label);
        check_bitwise_equal(name, d_params, d_params2, n * sizeof(floatX));
    }
    // no master weights: the bf16 params are the master copy
    {
        AdamRef ref2 = adamw_cpu(params, m0, v0, grads, lr, b1, b2, eps, wd, gs, bc1, bc2);
        std::vector<float> tol2(n);
        for (size_t i = 0; i < n; i++) { tol2[i] = ref2.tol_p[i] + bf16_ulp(ref2.p[i]); }   // stochastic rounding: < 1 ulp
        upload(d_m, m0); upload(d_v, v0); upload(d_params, params);
        adamw_update((float*)NULL, d_params, d_m, d_v, d_grads, n, lr, b1, b2, eps, wd, gs, bc1, bc2, 99u, 0, 0);
        snprintf(name, sizeof(name), "%s no master: params", label);
        validate(name, d_params, ref2.p, 0.0f, 1e-9f, &tol2);
        snprintf(name, sizeof(name), "%s no master: m", label);
        validate(name, d_m, ref2.m, 0.0f, 1e-12f, &ref2.tol_m);
    }
    cudaCheck(cudaFree(d_master)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v));
    cudaCheck(cudaFree(d_params)); cudaCheck(cudaFree(d_params2)); cudaCheck(cudaFree(d_grads));
}

int main() {
    print_device_info();
    Rng rng = rng_create(8);
    printf("validation\n");
    if (!quick_mode()) {
        run_case<float>("n=1048579", &rng, (1 << 20) + 3);
        run_case<floatX>("n=1048579", &rng, (1 << 20) + 3);
    } else {   // the seed checks need n >= 1000
        run_case<floatX>("n=4099", &rng, 4099);
    }
    run_case<float>("n=5", &rng, 5);
    printf("the 128-bit path and the scalar path\n");
    const size_t counts[] = {1, 5, 8, 13, 4096, 100005};
    for (size_t n : counts) {
        if (quick_mode() && n > 13) { continue; }
        for (int with_master = 1; with_master >= 0; with_master--) {
            check_paths<float>(&rng, n, with_master, 12345);
            check_paths<floatX>(&rng, n, with_master, 12345);
        }
    }
    check_paths<float>(&rng, 1000, true, 0);

    const size_t n = 124475904;   // GPT-2 124M parameter count (padded vocab)
    if (skip_benchmarks("adamw")) { return 0; }
    printf("benchmark (n=%zu; bytes: master, m, v, grad read; master, m, v, params written)\n", n);
    float* d_master = dmalloc<float>(n);
    float* d_m = dmalloc<float>(n);
    float* d_v = dmalloc<float>(n);
    float* d_g = dmalloc<float>(n);
    floatX* d_p = dmalloc<floatX>(n);
    const double bytes = (double)n * (4 * 4 + 3 * 4 + 2);
    const int block_sizes[] = {64, 128, 256, 512, 1024};
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() { adamw_update(d_master, d_p, d_m, d_v, d_g, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 0.1f, 0.05f, 7u, 0, 0, bs); });
        print_benchmark("adamw fp32 grads", bs, ms, bytes, 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_master)); cudaCheck(cudaFree(d_m)); cudaCheck(cudaFree(d_v)); cudaCheck(cudaFree(d_g)); cudaCheck(cudaFree(d_p));
    printf("adamw: ALL OK\n");
    return 0;
}
