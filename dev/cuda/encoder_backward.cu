/*
Test of encoder_backward (llmc/cuda_encoder.cuh):
  dwte[v,:] += sum over positions with token v of dout[b,t,:],   dwpe[t,:] += sum over b of dout[b,t,:]

Versions
  llmc   : encoder_backward<float> and encoder_backward<floatX> (deterministic, no atomics)
  atomic : a naive version with one float atomicAdd per element (fp32 gradients only;
           NOT deterministic: the order of the atomic adds varies run to run)
Checks
  - the gradients ACCUMULATE: the buffers start from random values, the reference adds to them
  - tokens are half from a small set of 64 ids (many repeats, long sums) and half from the whole
    vocabulary (mostly single occurrences)
  - llmc is bitwise identical on a second run (determinism)
Tolerance: the exact sum is computed in double; an fp32 sum of n terms is within accum_tol(n, sum of
|terms|) (see common.h) in any order; bf16 gradients add one final rounding (rtol 2^-7).
*/
#include "common.h"
#include "../../llmc/cuda_encoder.cuh"

// naive: one thread per (b,t,c), atomics
static __global__ void encoder_backward_atomic_kernel(float* dwte, float* dwpe, const floatX* dout, const int* inp,
                                                      int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) { return; }
    int c = (int)(idx % C);
    size_t bt = idx / C;
    int t = (int)(bt % T);
    float g = to_float(dout[idx]);
    atomicAdd(&dwte[(size_t)inp[bt] * C + c], g);
    atomicAdd(&dwpe[(size_t)t * C + c], g);
}

struct EncoderBackwardRef {
    std::vector<float> dwte, dwpe, tol_dwte_accum, tol_dwpe_accum;
};

// reference in double; also the per-element accumulation bounds
static EncoderBackwardRef encoder_backward_cpu(const std::vector<float>& dwte0, const std::vector<float>& dwpe0,
                                              const std::vector<float>& dout, const std::vector<int>& inp,
                                              int B, int T, int C, int Vp) {
    std::vector<double> swte((size_t)Vp * C, 0.0), mwte((size_t)Vp * C, 0.0), swpe((size_t)T * C, 0.0), mwpe((size_t)T * C, 0.0);
    std::vector<int> count(Vp, 0);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const int v = inp[b * T + t];
            count[v]++;
            for (int c = 0; c < C; c++) {
                double g = dout[((size_t)b * T + t) * C + c];
                swte[(size_t)v * C + c] += g; mwte[(size_t)v * C + c] += fabs(g);
                swpe[(size_t)t * C + c] += g; mwpe[(size_t)t * C + c] += fabs(g);
            }
        }
    }
    EncoderBackwardRef r;
    r.dwte.resize(swte.size()); r.tol_dwte_accum.resize(swte.size());
    r.dwpe.resize(swpe.size()); r.tol_dwpe_accum.resize(swpe.size());
    for (size_t i = 0; i < swte.size(); i++) {
        r.dwte[i] = (float)(dwte0[i] + swte[i]);
        r.tol_dwte_accum[i] = accum_tol(count[i / C] + 1, fabs(dwte0[i]) + mwte[i]);
    }
    for (size_t i = 0; i < swpe.size(); i++) {
        r.dwpe[i] = (float)(dwpe0[i] + swpe[i]);
        r.tol_dwpe_accum[i] = accum_tol(B + 1, fabs(dwpe0[i]) + mwpe[i]);
    }
    return r;
}

template<typename GradT>
static void test_llmc(const char* label, int B, int T, int C, int V, int Vp, Rng* rng, const int* block_sizes, int nbs) {
    std::vector<float> dout = rand_bf16((size_t)B * T * C, -1.0f, 1.0f, rng);
    std::vector<int> inp((size_t)B * T);
    const int small_set = V < 64 ? V : 64;
    for (auto& x : inp) { x = (rng_u32(rng) & 1) ? rng_int(rng, 0, small_set) : rng_int(rng, 0, V); }
    std::vector<float> dwte0 = as_precision<GradT>(rand_f32((size_t)Vp * C, -1.0f, 1.0f, rng));
    std::vector<float> dwpe0 = as_precision<GradT>(rand_f32((size_t)T * C, -1.0f, 1.0f, rng));
    EncoderBackwardRef ref = encoder_backward_cpu(dwte0, dwpe0, dout, inp, B, T, C, Vp);
    const float rtol = (sizeof(GradT) == 2) ? BF16_RTOL : 0.0f;

    floatX* d_dout = to_device_bf16(dout);
    int* d_inp = to_device_int(inp);
    GradT* d_dwte = to_device<GradT>(dwte0);
    GradT* d_dwpe = to_device<GradT>(dwpe0);
    GradT* d_dwte2 = to_device<GradT>(dwte0);
    GradT* d_dwpe2 = to_device<GradT>(dwpe0);
    char name[160];
    for (int i = 0; i < nbs; i++) {
        const int bs = block_sizes[i];
        upload(d_dwte, dwte0);
        upload(d_dwpe, dwpe0);
        encoder_backward(d_dwte, d_dwpe, d_dout, d_inp, B, T, C, 0, bs);
        snprintf(name, sizeof(name), "%s %s grads dwte block %d", label, type_name<GradT>(), bs);
        validate(name, d_dwte, ref.dwte, rtol, 0.0f, &ref.tol_dwte_accum);
        snprintf(name, sizeof(name), "%s %s grads dwpe block %d", label, type_name<GradT>(), bs);
        validate(name, d_dwpe, ref.dwpe, rtol, 0.0f, &ref.tol_dwpe_accum);
        // determinism: a second run from the same starting values
        upload(d_dwte2, dwte0);
        upload(d_dwpe2, dwpe0);
        encoder_backward(d_dwte2, d_dwpe2, d_dout, d_inp, B, T, C, 0, bs);
        snprintf(name, sizeof(name), "%s determinism dwte block %d", label, bs);
        check_bitwise_equal(name, d_dwte, d_dwte2, dwte0.size() * sizeof(GradT));
        snprintf(name, sizeof(name), "%s determinism dwpe block %d", label, bs);
        check_bitwise_equal(name, d_dwpe, d_dwpe2, dwpe0.size() * sizeof(GradT));
    }
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_inp));
    cudaCheck(cudaFree(d_dwte)); cudaCheck(cudaFree(d_dwpe)); cudaCheck(cudaFree(d_dwte2)); cudaCheck(cudaFree(d_dwpe2));
}

int main() {
    print_device_info();
    const bool quick = quick_mode();   // GPT-2's width on one short row of a small vocabulary
    const int B = quick ? 1 : EMULATED ? 2 : 8, T = quick ? 64 : EMULATED ? 256 : 1024, C = 768;
    const int V = quick ? 1000 : 50257, Vp = quick ? 1024 : 50304;
    char shape[64];
    snprintf(shape, sizeof(shape), "B=%d T=%d C=%d", B, T, C);
    Rng rng = rng_create(1234);
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};
    const int nbs = quick ? 1 : 6;

    printf("validation\n");
    test_llmc<float>(shape, B, T, C, V, Vp, &rng, block_sizes, nbs);
    test_llmc<floatX>(shape, B, T, C, V, Vp, &rng, block_sizes, nbs);
    test_llmc<float>("odd B=3 T=5 C=50", 3, 5, 50, 40, 48, &rng, block_sizes, nbs);
    test_llmc<floatX>("odd B=3 T=5 C=50", 3, 5, 50, 40, 48, &rng, block_sizes, nbs);

    // the naive atomic version, fp32 gradients
    std::vector<float> dout = rand_bf16((size_t)B * T * C, -1.0f, 1.0f, &rng);
    std::vector<int> inp((size_t)B * T);
    for (auto& x : inp) { x = (rng_u32(&rng) & 1) ? rng_int(&rng, 0, 64) : rng_int(&rng, 0, V); }
    std::vector<float> dwte0 = rand_f32((size_t)Vp * C, -1.0f, 1.0f, &rng);
    std::vector<float> dwpe0 = rand_f32((size_t)T * C, -1.0f, 1.0f, &rng);
    EncoderBackwardRef ref = encoder_backward_cpu(dwte0, dwpe0, dout, inp, B, T, C, Vp);
    floatX* d_dout = to_device_bf16(dout);
    int* d_inp = to_device_int(inp);
    float* d_dwte = to_device_f32(dwte0);
    float* d_dwpe = to_device_f32(dwpe0);
    const size_t total = (size_t)B * T * C;
    char name[128];
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        upload(d_dwte, dwte0);
        upload(d_dwpe, dwpe0);
        encoder_backward_atomic_kernel<<<(unsigned)CEIL_DIV(total, (size_t)bs), bs>>>(d_dwte, d_dwpe, d_dout, d_inp, B, T, C);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "atomic dwte block %d", bs);
        validate(name, d_dwte, ref.dwte, 0.0f, 0.0f, &ref.tol_dwte_accum);
        snprintf(name, sizeof(name), "atomic dwpe block %d", bs);
        validate(name, d_dwpe, ref.dwpe, 0.0f, 0.0f, &ref.tol_dwpe_accum);
    }

    if (skip_benchmarks("encoder_backward")) { return 0; }

    printf("benchmark (B=%d T=%d C=%d; GB/s counts reading dout once)\n", B, T, C);
    const double bytes = (double)total * sizeof(floatX);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() { encoder_backward(d_dwte, d_dwpe, d_dout, d_inp, B, T, C, 0, bs); });
        print_benchmark("llmc (deterministic) fp32 grads", bs, ms, bytes, 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(10, [&]() {
            encoder_backward_atomic_kernel<<<(unsigned)CEIL_DIV(total, (size_t)bs), bs>>>(d_dwte, d_dwpe, d_dout, d_inp, B, T, C);
        });
        print_benchmark("atomic (nondeterministic)", bs, ms, bytes, 0);
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaFree(d_dout)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_dwte)); cudaCheck(cudaFree(d_dwpe));
    printf("encoder_backward: ALL OK\n");
    return 0;
}
