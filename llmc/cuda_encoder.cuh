/*
cuda_encoder.cuh: token + position embedding, forward and backward.

  forward : out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
  backward: dwte[v,:] += sum over (b,t) with inp[b,t] == v of dout[b,t,:]
            dwpe[t,:] += sum over b of dout[b,t,:]

Gradients ACCUMULATE (+=) into dwte and dwpe.

Both backward kernels are deterministic (no atomics): every output element is written by exactly one
thread, which adds its terms in a fixed order (increasing position). Running the same step twice
gives bitwise identical gradients.

Cost of the dwte kernel: a position scans back to its token's previous occurrence (or to the start),
a first occurrence also scans everything after it, S = 8 * blockDim.x ids per barrier step. The total
is O((B*T)^2 * C / (blockDim.x^2 * 8)) work that is dominated by positions whose token is rare; it is
meant for B*T of a few thousand to a few tens of thousands and grows quadratically beyond. A
sort-based scheme (a stable radix sort of (token, position)) would scale better if that ever matters.

Preconditions: 0 <= inp[i] < rows of wte (checked only by the caller), t < maxT.
*/
#ifndef LLMC_CUDA_ENCODER_CUH
#define LLMC_CUDA_ENCODER_CUH

#include "cuda_common.cuh"

// ----------------------------------------------------------------------------
// forward kernels

// one thread per output element
static __global__ void encoder_forward_kernel_scalar(floatX* out, const int* inp, const floatX* wte,
                                                     const floatX* wpe, int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)B * T * C;
    if (idx >= total) { return; }
    int c = (int)(idx % C);
    size_t bt = idx / C;
    int t = (int)(bt % T);
    int token = inp[bt];
    float val = to_float(wte[(size_t)token * C + c]) + to_float(wpe[(size_t)t * C + c]);
    out[idx] = from_float<floatX>(val);
}

// one thread per x128::size consecutive output elements (128-bit loads/stores: 8 bf16, or 4 floats in
// the fp32 build); needs C % x128::size == 0 and 16-byte aligned pointers
static __global__ void encoder_forward_kernel_x128(floatX* out, const int* inp, const floatX* wte,
                                                   const floatX* wpe, int B, int T, int C) {
    size_t idx = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    size_t total = (size_t)B * T * C;
    if (idx >= total) { return; }
    int c = (int)(idx % C);
    size_t bt = idx / C;
    int t = (int)(bt % T);
    int token = inp[bt];
    x128 a = load128(wte + (size_t)token * C + c);
    x128 p = load128(wpe + (size_t)t * C + c);
    x128 o;
    for (int k = 0; k < x128::size; k++) {
        o.v[k] = from_float<floatX>(to_float(a.v[k]) + to_float(p.v[k]));
    }
    store128(out + idx, o);
}

// ----------------------------------------------------------------------------
// backward kernels

// dwpe: one thread per (t, c), summing over b in increasing order
template<typename GradT>
__global__ void encoder_backward_wpe_kernel(GradT* dwpe, const floatX* dout, int B, int T, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;   // = t * C + c
    if (idx >= (size_t)T * C) { return; }
    float sum = 0.0f;
    for (int b = 0; b < B; b++) {
        sum += to_float(dout[(size_t)b * T * C + idx]);
    }
    dwpe[idx] = from_float<GradT>(to_float(dwpe[idx]) + sum);
}

// token ids each thread examines per step of the dwte scans (fewer barriers per position scanned)
#define ENCODER_BWD_IDS_PER_THREAD 8

// dwte, deterministic without sorting.
// grid = (B*T, CEIL_DIV(C, blockDim.x)); block (i, chunk) looks at position i (flattened b*T+t) and
// channels chunk*blockDim.x + threadIdx.x. Let S = ENCODER_BWD_IDS_PER_THREAD * blockDim.x.
//  1. If token v = inp[i] also occurs at an earlier position j < i, the block exits: the FIRST
//     occurrence owns row v of dwte. The ids before i are scanned backwards, S per step, so a
//     repeated token finds its nearest earlier occurrence quickly.
//  2. Otherwise the block goes through positions j >= i in steps of S ids staged in shared memory
//     and, for every j with inp[j] == v, adds dout[j, c]. Positions are visited in increasing order,
//     so the sum is always formed in the same order. A step with no match costs one __syncthreads_or.
// Dynamic shared memory: S ints.
template<typename GradT>
__global__ void encoder_backward_wte_kernel(GradT* dwte, const floatX* dout, const int* inp,
                                            int BT, int C) {
    extern __shared__ int ids[];   // S token ids
    const int S = ENCODER_BWD_IDS_PER_THREAD * blockDim.x;
    const int i = blockIdx.x;
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    const int v = inp[i];

    // 1. is i the first occurrence of v? look at [j_hi - S, j_hi), j_hi = i, i - S, ...
    for (int j_hi = i; j_hi > 0; j_hi -= S) {
        int earlier = 0;
        for (int k = 0; k < ENCODER_BWD_IDS_PER_THREAD; k++) {
            int j = j_hi - 1 - (k * (int)blockDim.x + (int)threadIdx.x);
            if (j >= 0 && inp[j] == v) { earlier = 1; }
        }
        if (__syncthreads_or(earlier)) { return; }   // the same answer in every thread
    }

    // 2. sum dout over all positions j >= i holding token v, in increasing j
    float sum = 0.0f;
    for (int j0 = i; j0 < BT; j0 += S) {
        __syncthreads();   // everyone is done reading the previous step's ids
        int match = 0;
        for (int k = 0; k < ENCODER_BWD_IDS_PER_THREAD; k++) {
            int slot = k * (int)blockDim.x + (int)threadIdx.x;
            int j = j0 + slot;
            int id = (j < BT) ? inp[j] : -1;
            ids[slot] = id;
            if (id == v) { match = 1; }
        }
        if (!__syncthreads_or(match)) { continue; }   // also makes ids[] visible to all threads
        const int n = min(S, BT - j0);
        if (c < C) {
            for (int k = 0; k < n; k++) {
                if (ids[k] == v) { sum += to_float(dout[(size_t)(j0 + k) * C + c]); }
            }
        }
    }
    if (c < C) {
        size_t o = (size_t)v * C + c;
        dwte[o] = from_float<GradT>(to_float(dwte[o]) + sum);
    }
}

// ----------------------------------------------------------------------------
// launchers

// out (B,T,C) bf16 = wte[inp] + wpe[t]
// inp (B,T) int token ids; wte (Vp,C) bf16; wpe (maxT,C) bf16. block_size: threads per block.
inline void encoder_forward(floatX* out, const int* inp, const floatX* wte, const floatX* wpe,
                            int B, int T, int C, cudaStream_t stream, int block_size = 256) {
    hostCheckBlockSize(block_size, "encoder_forward");
    size_t total = (size_t)B * T * C;
    if (C % x128::size == 0 && is_aligned16(out) && is_aligned16(wte) && is_aligned16(wpe)) {
        size_t num_threads = total / x128::size;
        unsigned int grid = (unsigned int)CEIL_DIV(num_threads, (size_t)block_size);
        encoder_forward_kernel_x128<<<grid, block_size, 0, stream>>>(out, inp, wte, wpe, B, T, C);
    } else {
        unsigned int grid = (unsigned int)CEIL_DIV(total, (size_t)block_size);
        encoder_forward_kernel_scalar<<<grid, block_size, 0, stream>>>(out, inp, wte, wpe, B, T, C);
    }
    cudaCheck(cudaGetLastError());
}

// dwte (Vp,C) += scatter of dout by token id; dwpe (maxT,C) += sum over b of dout.
// dout (B,T,C) bf16, inp (B,T) int. GradT is float (default) or floatX. Deterministic.
// block_size: multiple of 32, at most 1024.
template<typename GradT>
inline void encoder_backward(GradT* dwte, GradT* dwpe, const floatX* dout, const int* inp,
                             int B, int T, int C, cudaStream_t stream, int block_size = 256) {
    hostCheckBlockSize(block_size, "encoder_backward");
    // wpe
    size_t tc = (size_t)T * C;
    encoder_backward_wpe_kernel<<<(unsigned int)CEIL_DIV(tc, (size_t)block_size), block_size, 0, stream>>>(
        dwpe, dout, B, T, C);
    cudaCheck(cudaGetLastError());
    // wte
    int BT = B * T;
    dim3 grid(BT, CEIL_DIV(C, block_size));
    size_t smem = (size_t)ENCODER_BWD_IDS_PER_THREAD * block_size * sizeof(int);   // <= 32 KiB
    encoder_backward_wte_kernel<<<grid, block_size, smem, stream>>>(
        dwte, dout, inp, BT, C);
    cudaCheck(cudaGetLastError());
}

#endif // LLMC_CUDA_ENCODER_CUH
