/*
Test of encoder_forward (llmc/cuda_encoder.cuh): out[b,t,:] = wte[inp[b,t],:] + wpe[t,:].

Versions
  scalar : encoder_forward_kernel_scalar, one thread per element (the fallback of the launcher)
  x128   : encoder_forward_kernel_x128, one thread per 8 elements with 128-bit loads (C % 8 == 0)
  launcher: encoder_forward() itself, on a shape with C % 8 != 0 (takes the scalar path) and on the
           GPT-2 shape (takes the x128 path)
Tolerance: the result is one fp32 add of two bf16 values rounded once to bf16: rtol 2^-7.

Build and run: make -C dev/cuda encoder_forward && ./dev/cuda/encoder_forward
*/
#include "common.h"
#include "../../llmc/cuda_encoder.cuh"

static void encoder_forward_cpu(std::vector<float>& out, const std::vector<int>& inp, const std::vector<float>& wte,
                                const std::vector<float>& wpe, int B, int T, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const int token = inp[b * T + t];
            for (int c = 0; c < C; c++) {
                out[((size_t)b * T + t) * C + c] = wte[(size_t)token * C + c] + wpe[(size_t)t * C + c];
            }
        }
    }
}

int main() {
    print_device_info();
    const bool quick = quick_mode();   // GPT-2's width on one short row of a small vocabulary
    const int B = quick ? 1 : 8, T = quick ? 64 : 1024, C = 768, V = quick ? 1000 : 50257, Vp = quick ? 1024 : 50304;
    Rng rng = rng_create(42);

    std::vector<float> wte = rand_bf16((size_t)Vp * C, -1.0f, 1.0f, &rng);
    std::vector<float> wpe = rand_bf16((size_t)T * C, -1.0f, 1.0f, &rng);
    std::vector<int> inp((size_t)B * T);
    for (auto& x : inp) { x = rng_int(&rng, 0, V); }
    std::vector<float> ref((size_t)B * T * C);
    encoder_forward_cpu(ref, inp, wte, wpe, B, T, C);

    floatX* d_wte = to_device_bf16(wte);
    floatX* d_wpe = to_device_bf16(wpe);
    int* d_inp = to_device_int(inp);
    floatX* d_out = dmalloc<floatX>((size_t)B * T * C);
    const size_t total = (size_t)B * T * C;
    const int block_sizes[] = {32, 64, 128, 256, 512, 1024};

    printf("validation (B=%d T=%d C=%d)\n", B, T, C);
    char name[128];
    for (int bs : block_sizes) {
        if (quick_skip(bs, block_sizes)) { continue; }
        cudaCheck(cudaMemset(d_out, 0, total * sizeof(floatX)));
        encoder_forward_kernel_scalar<<<(unsigned)CEIL_DIV(total, (size_t)bs), bs>>>(d_out, d_inp, d_wte, d_wpe, B, T, C);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "scalar block %d", bs);
        validate(name, d_out, ref, BF16_RTOL, 1e-6f);

        cudaCheck(cudaMemset(d_out, 0, total * sizeof(floatX)));
        encoder_forward_kernel_x128<<<(unsigned)CEIL_DIV(total / 8, (size_t)bs), bs>>>(d_out, d_inp, d_wte, d_wpe, B, T, C);
        cudaCheck(cudaGetLastError());
        snprintf(name, sizeof(name), "x128 block %d", bs);
        validate(name, d_out, ref, BF16_RTOL, 1e-6f);

        cudaCheck(cudaMemset(d_out, 0, total * sizeof(floatX)));
        encoder_forward(d_out, d_inp, d_wte, d_wpe, B, T, C, 0, bs);
        snprintf(name, sizeof(name), "launcher block %d", bs);
        validate(name, d_out, ref, BF16_RTOL, 1e-6f);
    }

    // a small odd shape: C % 8 != 0, the launcher must take the scalar path
    {
        const int b2 = 3, t2 = 7, c2 = 36, v2 = 50;
        std::vector<float> wte2 = rand_bf16((size_t)v2 * c2, -1.0f, 1.0f, &rng);
        std::vector<float> wpe2 = rand_bf16((size_t)t2 * c2, -1.0f, 1.0f, &rng);
        std::vector<int> inp2((size_t)b2 * t2);
        for (auto& x : inp2) { x = rng_int(&rng, 0, v2); }
        std::vector<float> ref2((size_t)b2 * t2 * c2);
        encoder_forward_cpu(ref2, inp2, wte2, wpe2, b2, t2, c2);
        floatX* d_wte2 = to_device_bf16(wte2);
        floatX* d_wpe2 = to_device_bf16(wpe2);
        int* d_inp2 = to_device_int(inp2);
        floatX* d_out2 = dmalloc<floatX>(ref2.size());
        encoder_forward(d_out2, d_inp2, d_wte2, d_wpe2, b2, t2, c2, 0);
        validate("launcher, odd shape B=3 T=7 C=36", d_out2, ref2, BF16_RTOL, 1e-6f);
        cudaCheck(cudaFree(d_wte2)); cudaCheck(cudaFree(d_wpe2)); cudaCheck(cudaFree(d_inp2)); cudaCheck(cudaFree(d_out2));
    }

    if (skip_benchmarks("encoder_forward")) { return 0; }

    printf("benchmark (bytes counted: wte row + wpe row read, out written, per element)\n");
    const double bytes = 3.0 * total * sizeof(floatX) + (double)B * T * sizeof(int);
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() {
            encoder_forward_kernel_scalar<<<(unsigned)CEIL_DIV(total, (size_t)bs), bs>>>(d_out, d_inp, d_wte, d_wpe, B, T, C);
        });
        print_benchmark("scalar", bs, ms, bytes, 0);
    }
    for (int bs : block_sizes) {
        float ms = benchmark_ms(20, [&]() {
            encoder_forward_kernel_x128<<<(unsigned)CEIL_DIV(total / 8, (size_t)bs), bs>>>(d_out, d_inp, d_wte, d_wpe, B, T, C);
        });
        print_benchmark("x128", bs, ms, bytes, 0);
    }
    cudaCheck(cudaGetLastError());

    cudaCheck(cudaFree(d_wte)); cudaCheck(cudaFree(d_wpe)); cudaCheck(cudaFree(d_inp)); cudaCheck(cudaFree(d_out));
    printf("encoder_forward: ALL OK\n");
    return 0;
}
