/*
probes.cu: the CPU emulation checked against itself (dev/test/test_cpucuda.py runs it).
  ./probes wmma        a 32x48x64 bf16 GEMM through nvcuda::wmma equals a CPU GEMM of the same inputs
  ./probes deadlock    half a warp in __syncthreads, the other half in a full-mask shuffle (a GPU hangs):
                       must stop naming kernel, block and the threads that never arrive
  ./probes strict      with CPUCUDA_STRICT=1: __syncthreads under a branch that only some threads take
  ./probes lane        a lane returns before a full-mask shuffle: must stop naming the lane
  ./probes divergent   lanes of one warp in different intrinsics: must stop naming both
  ./probes misaligned  a 128-bit load (llmc's load128) from an address that is not 16-byte aligned
                       (a GPU stops with cudaErrorMisalignedAddress): must stop naming the kernel
The last three are programs that would hang (or be undefined) on a GPU; here they must end with one
"[cpucuda] ..." diagnosis and a non-zero exit, never hang.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <vector>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <mma.h>
#include "../../../llmc/cuda_common.cuh"
using namespace nvcuda;

// C (M,N) = A (M,K) B (K,N), row-major, one warp per 16x16 tile of C
__global__ void wmma_gemm(float* c, const __nv_bfloat16* a, const __nv_bfloat16* b, int M, int N, int K) {
    const int tile_m = blockIdx.y * 16, tile_n = blockIdx.x * 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k = 0; k < K; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;   // B read as (N,K)^T
        wmma::load_matrix_sync(fa, a + (size_t)tile_m * K + k, K);
        wmma::load_matrix_sync(fb, b + (size_t)tile_n * K + k, K);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= 2.0f;   // element-wise work is layout-free
    wmma::store_matrix_sync(c + (size_t)tile_m * N + tile_n, acc, N, wmma::mem_row_major);
}

__global__ void barrier_vs_shuffle(float* x) {
    float v = x[threadIdx.x];
    if (threadIdx.x < 48) { __syncthreads(); }
    else { v += __shfl_xor_sync(0xffffffffu, v, 1); }
    x[threadIdx.x] = v;
}
__global__ void divergent_syncthreads(float* x) {
    if (threadIdx.x < 16) { __syncthreads(); }
    x[threadIdx.x] = 1.0f;
}
__global__ void early_return_lane(float* x) {
    float v = x[threadIdx.x];
    if (threadIdx.x == 5) return;
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}
__global__ void divergent_warp(float* x) {
    float v = x[threadIdx.x];
    if (threadIdx.x % 2) v = __shfl_down_sync(0xffffffffu, v, 1);
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}

static int check_wmma() {
    const int M = 32, N = 48, K = 64;
    std::vector<__nv_bfloat16> a((size_t)M * K), bt((size_t)N * K);   // bt: B stored as (N,K)
    std::vector<float> af(a.size()), bf(bt.size());
    unsigned s = 12345u;
    for (size_t i = 0; i < a.size(); i++) { s = s * 1664525u + 1013904223u; a[i] = __float2bfloat16((int)(s >> 24) / 64.0f - 2.0f); af[i] = __bfloat162float(a[i]); }
    for (size_t i = 0; i < bt.size(); i++) { s = s * 1664525u + 1013904223u; bt[i] = __float2bfloat16((int)(s >> 24) / 64.0f - 2.0f); bf[i] = __bfloat162float(bt[i]); }
    __nv_bfloat16 *da, *db; float* dc;
    cudaMalloc(&da, a.size() * 2); cudaMalloc(&db, bt.size() * 2); cudaMalloc(&dc, (size_t)M * N * 4);
    cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(db, bt.data(), bt.size() * 2, cudaMemcpyHostToDevice);
    wmma_gemm<<<dim3(N / 16, M / 16), 32>>>(dc, da, db, M, N, K);
    if (cudaGetLastError() != cudaSuccess) { printf("wmma: launch failed\n"); return 1; }
    std::vector<float> c((size_t)M * N);
    cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost);
    // inputs are multiples of 1/64 in [-2, 2): every product and partial sum is exact in fp32
    int bad = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0.0;
            for (int k = 0; k < K; k++) ref += (double)af[(size_t)i * K + k] * bf[(size_t)j * K + k];
            if (c[(size_t)i * N + j] != (float)(2.0 * ref)) bad++;
        }
    printf("wmma: %d of %d elements differ from the exact product\n", bad, M * N);
    return bad != 0;
}

// x + 1 is 4-byte but not 16-byte aligned
__global__ void misaligned_load128(float* x) {
    f128 v = load128(x + 1);
    x[0] = v.v[0];
}

int main(int argc, char** argv) {
    const char* what = argc > 1 ? argv[1] : "";
    float* x;
    cudaMalloc(&x, 64 * sizeof(float));
    cudaMemset(x, 0, 64 * sizeof(float));
    if (strcmp(what, "wmma") == 0) return check_wmma();
    if (strcmp(what, "deadlock") == 0) barrier_vs_shuffle<<<2, 64>>>(x);
    else if (strcmp(what, "strict") == 0) divergent_syncthreads<<<2, 64>>>(x);
    else if (strcmp(what, "lane") == 0) early_return_lane<<<1, 32>>>(x);
    else if (strcmp(what, "divergent") == 0) divergent_warp<<<1, 32>>>(x);
    else if (strcmp(what, "misaligned") == 0) misaligned_load128<<<1, 1>>>(x);
    else { fprintf(stderr, "usage: probes wmma|deadlock|strict|lane|divergent|misaligned\n"); return 2; }
    cudaDeviceSynchronize();
    printf("%s: the kernel finished (the emulation should have stopped it)\n", what);
    return 0;
}
