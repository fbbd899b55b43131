/*
cuda_global_norm.cuh: the squared L2 norm of a buffer range (for gradient clipping), deterministic.

  *out (= or +=) sum_i values[i]^2          (out: a device float, or a device double with _f64)

Two kernels: (1) a fixed grid of at most GLOBAL_NORM_MAX_BLOCKS blocks: each thread sums, in fp32,
the squares of its grid-strided chunks of W = 16 / sizeof(T) consecutive values (4 floats or 8 bf16:
one 128-bit pack), and each block reduces in a fixed tree order into scratch[block]; (2) one block
adding the block partials in a fixed order, in double. The sum is read once, so it is pure bandwidth:
when values is 16-byte aligned a whole chunk is one 128-bit load (f128 for float, x128 for floatX);
otherwise, and for the last chunk when count is not a multiple of W, its values are read one by one.
Either way a thread adds the same values in the same order, and the grid depends only on count,
block_size and W: the result is bitwise reproducible run to run, and the same for an aligned and a
misaligned copy of the same values. The norm is sqrt of the result (taken by the caller, after summing
over ranges / ranks).
This file reads gradients and writes no gradients.
*/
#ifndef LLMC_CUDA_GLOBAL_NORM_CUH
#define LLMC_CUDA_GLOBAL_NORM_CUH

#include "cuda_common.cuh"

#define GLOBAL_NORM_MAX_BLOCKS 1024   // scratch must hold this many floats

// sum += the squares of values[i .. i + n), n <= W, in index order; PACKED: the chunk is read with one
// 128-bit load when it is whole (values 16-byte aligned, checked by the launcher).
template<bool PACKED, typename T>
__device__ inline float global_norm_add_chunk(float sum, const T* values, size_t i, int n) {
    constexpr int W = Packed128<T>::size;
    if (PACKED && n == W) {
        Packed128<T> pack = load128(values + i);
        for (int k = 0; k < W; k++) { float x = to_float(pack.v[k]); sum += x * x; }
    } else {
        for (int k = 0; k < n; k++) { float x = to_float(values[i + k]); sum += x * x; }
    }
    return sum;
}

// one thread per chunk of W values (grid-stride loop); partials[blockIdx.x] = the block's sum
template<bool PACKED, typename T>
__global__ void global_norm_partials_kernel(float* partials, const T* values, size_t count) {
    constexpr int W = Packed128<T>::size;
    const size_t chunks = CEIL_DIV(count, (size_t)W);
    float sum = 0.0f;
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < chunks; c += (size_t)gridDim.x * blockDim.x) {
        const size_t i = c * W;
        const int n = count - i < (size_t)W ? (int)(count - i) : W;
        sum = global_norm_add_chunk<PACKED>(sum, values, i, n);
    }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) { partials[blockIdx.x] = sum; }
}

// OutT: float, or double (global_norm_squared_f64)
template<typename OutT>
__global__ void global_norm_finish_kernel(OutT* out, const float* partials, int num_partials, int accumulate) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < num_partials; i += blockDim.x) { sum += (double)partials[i]; }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) { *out = (OutT)((accumulate ? (double)*out : 0.0) + sum); }
}

// The partials kernel's grid: one thread per chunk of W values, at most GLOBAL_NORM_MAX_BLOCKS blocks
// (then grid-stride), at least one (count == 0: one block writes a zero partial). It does not depend on
// the pointer, so an aligned and a misaligned buffer are summed in the same order.
template<typename T>
inline int global_norm_grid(size_t count, int block_size) {
    size_t chunks = CEIL_DIV(count, (size_t)Packed128<T>::size);
    size_t blocks = CEIL_DIV(chunks, (size_t)block_size);
    if (blocks > GLOBAL_NORM_MAX_BLOCKS) { blocks = GLOBAL_NORM_MAX_BLOCKS; }
    return blocks == 0 ? 1 : (int)blocks;
}

// Whether the partials kernel reads values with 128-bit loads.
inline bool global_norm_is_vectorized(const void* values) { return is_aligned16(values); }

// *out = sum of squares of values[0..count-1]   (accumulate == 0)
// *out += sum of squares                        (accumulate != 0: several ranges into one total)
// values: float (default) or floatX. out: one device float. scratch: GLOBAL_NORM_MAX_BLOCKS device
// floats, contents not needed before or after. block_size: multiple of 32, <= 1024.
template<typename T, typename OutT>
inline void global_norm_squared_impl(OutT* out, const T* values, size_t count, float* scratch, int accumulate,
                                     cudaStream_t stream, int block_size) {
    hostCheckBlockSize(block_size, "global_norm_squared");
    const int grid = global_norm_grid<T>(count, block_size);
    if (global_norm_is_vectorized(values)) {
        global_norm_partials_kernel<true, T><<<grid, block_size, 0, stream>>>(scratch, values, count);
    } else {
        global_norm_partials_kernel<false, T><<<grid, block_size, 0, stream>>>(scratch, values, count);
    }
    cudaCheck(cudaGetLastError());
    global_norm_finish_kernel<OutT><<<1, 1024, 0, stream>>>(out, scratch, grid, accumulate);
    cudaCheck(cudaGetLastError());
}
template<typename T>
inline void global_norm_squared(float* out, const T* values, size_t count, float* scratch, int accumulate,
                                cudaStream_t stream, int block_size = 512) {
    global_norm_squared_impl<T, float>(out, values, count, scratch, accumulate, stream, block_size);
}

// The same with the total in a device double (the trainer's sumsq): the block partials are fp32,
// their sum is formed and kept in double.
template<typename T>
inline void global_norm_squared_f64(double* out, const T* values, size_t count, float* scratch, int accumulate,
                                    cudaStream_t stream, int block_size = 512) {
    global_norm_squared_impl<T, double>(out, values, count, scratch, accumulate, stream, block_size);
}

#endif // LLMC_CUDA_GLOBAL_NORM_CUH
