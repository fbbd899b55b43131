/*
cuda_common.cuh: shared CUDA utilities for the GPT-2 trainer kernels (llmc/cuda_*.cuh).

What lives here
  - floatX, the storage type of parameters and activations: bf16, or float in the fp32 build.
  - cudaCheck / cublasCheck / hostCheck: check a call, print file:line, what failed, a hint, exit(1)
    (abort_job from utils.h: MPI_Abort when running under MPI, so no other rank waits forever).
  - CEIL_DIV.
  - small device helpers: bf16 <-> float, warp and block reductions (deterministic), a
    counter-based hash RNG and bf16 stochastic rounding, 128-bit packed loads/stores, and
    load_as_floats / store_floats for kernels templated on their vector width (1 or x128::size).
  - cuda_dtype<T>(): the cudaDataType_t of float / floatX, for cuBLASLt.

Conventions used by every llmc/cuda_*.cuh file
  - Every launcher takes a cudaStream_t (or a MatmulContext that holds one) and calls
    cudaCheck(cudaGetLastError()) right after each kernel launch, so a bad launch configuration is
    reported at the line that caused it. (Errors inside a running kernel are asynchronous and show up
    at the next synchronizing call; run with CUDA_LAUNCH_BLOCKING=1 to pin them down.)
  - Shapes are written in comments as (B,T,C) etc., row-major, last index fastest.
  - Gradients of PARAMETERS accumulate (+=) into their buffers. Gradients of ACTIVATIONS are
    documented per launcher (some overwrite, some accumulate).
  - Nothing with static storage is defined in these headers: handles, workspaces and scratch are
    passed in. Kernels are `static __global__` or templates, host functions `inline`, so the headers
    can be included in more than one translation unit.
  - Parameter gradients are float by default; the kernels that write them are templated on the
    gradient type (float or floatX) so a bf16-gradient build only changes the buffer's type.

The fp32 build (-DENABLE_FP32; make train_gpt2fp32cu, or make cpucuda-fp32 for the CPU emulation)
  floatX is float: parameters, activations and every stored intermediate are fp32, the cuBLASLt calls
  take fp32 A/B/C/D with CUBLAS_COMPUTE_32F, x128 packs 4 floats, AdamW writes the fp32 result (no
  stochastic rounding) and -grad_bf16 is refused. Nothing else changes: the same kernels, the same
  order of operations, the same files (checkpoints are fp32 in both builds). What it is for: with no
  bf16 rounding anywhere, the trainer's gradients match train_gpt2.c's to fp32 precision (2e-6 ..
  3e-6 relative per tensor on the emulation, dev/test/test_cuda_fp32.py checks 1e-5), so an error of
  1e-4 in one tensor, which bf16's ~5e-3 noise would hide, shows. On a GPU it is slower and needs
  twice the memory for parameters and activations: a debugging aid, not a way to train.
*/
#ifndef LLMC_CUDA_COMMON_CUH
#define LLMC_CUDA_COMMON_CUH

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <float.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include "utils.h"   // abort_job: under MPI a failed check takes every rank down (MPI_Abort), none hangs

// ----------------------------------------------------------------------------
// storage type of parameters and activations

#ifdef ENABLE_FP32
typedef float floatX;
#define FLOATX_NAME "fp32"
#else
typedef __nv_bfloat16 floatX;
#define FLOATX_NAME "bf16"
#endif

#define CEIL_DIV(M, N) (((M) + (N) - 1) / (N))

// ----------------------------------------------------------------------------
// error checking

inline const char* cuda_error_hint(cudaError_t err) {
    switch (err) {
        case cudaErrorMemoryAllocation:
            return "out of GPU memory: reduce the batch size B or sequence length T";
        case cudaErrorNoKernelImageForDevice:
        case cudaErrorUnsupportedPtxVersion:
            return "the binary has no code for this GPU: rebuild with GPU_ARCH set to this GPU "
                   "(e.g. -gencode arch=compute_89,code=sm_89)";
        case cudaErrorInvalidConfiguration:
            return "bad launch configuration: check grid/block sizes and dynamic shared memory";
        case cudaErrorIllegalAddress:
        case cudaErrorMisalignedAddress:
            return "a kernel accessed memory out of bounds or misaligned: run under compute-sanitizer";
        case cudaErrorInvalidValue:
            return "an argument is invalid (null pointer, size 0, wrong direction of a copy?)";
        case cudaErrorInsufficientDriver:
            return "the driver is older than the CUDA runtime this was built with: update the driver";
        case cudaErrorNoDevice:
            return "no CUDA GPU visible: check nvidia-smi and CUDA_VISIBLE_DEVICES";
        default:
            return "errors from kernels are asynchronous: rerun with CUDA_LAUNCH_BLOCKING=1 "
                   "to find the launch that failed";
    }
}

inline void cuda_check_impl(cudaError_t err, const char* what, const char* file, int line) {
    if (err != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] at %s:%d\n  call: %s\n  error: %s (%s)\n  hint: %s\n",
                file, line, what, cudaGetErrorString(err), cudaGetErrorName(err),
                cuda_error_hint(err));
        abort_job();
    }
}
#define cudaCheck(call) cuda_check_impl((call), #call, __FILE__, __LINE__)

inline const char* cublas_status_hint(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_NOT_INITIALIZED:
            return "the cuBLAS(Lt) handle was not created (cublasLtCreate) or was destroyed";
        case CUBLAS_STATUS_NOT_SUPPORTED:
            return "no algorithm for this combination of types / transposes / epilogue / alignment";
        case CUBLAS_STATUS_INVALID_VALUE:
            return "an argument is invalid: dimensions, leading dimensions, alignment or epilogue "
                   "attributes (e.g. GELU aux ld must be a multiple of 8)";
        case CUBLAS_STATUS_ALLOC_FAILED:
            return "cuBLAS could not allocate memory: out of GPU memory";
        case CUBLAS_STATUS_ARCH_MISMATCH:
            return "the feature is not supported on this GPU architecture";
        case CUBLAS_STATUS_EXECUTION_FAILED:
            return "the GPU program failed to execute (possibly an earlier asynchronous error)";
        default:
            return "see the cuBLAS documentation for this status";
    }
}

inline void cublas_check_impl(cublasStatus_t status, const char* what, const char* file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "[cuBLAS ERROR] at %s:%d\n  call: %s\n  status: %d (%s)\n  hint: %s\n",
                file, line, what, (int)status, cublasGetStatusString(status),
                cublas_status_hint(status));
        abort_job();
    }
}
#define cublasCheck(call) cublas_check_impl((call), #call, __FILE__, __LINE__)

// a host-side precondition check: hostCheck(B > 0, "B must be positive");
inline void host_check_impl(bool ok, const char* cond, const char* msg, const char* file, int line) {
    if (!ok) {
        fprintf(stderr, "[CHECK FAILED] at %s:%d\n  condition: %s\n  %s\n", file, line, cond, msg);
        abort_job();
    }
}
#define hostCheck(cond, msg) host_check_impl((cond), #cond, (msg), __FILE__, __LINE__)
// the launchers' block_size precondition (whole warps, at most 1024 threads); who: a string literal
#define hostCheckBlockSize(block_size, who) \
    hostCheck((block_size) >= 32 && (block_size) % 32 == 0 && (block_size) <= 1024, who ": block_size must be a multiple of 32 in 32..1024")

// ----------------------------------------------------------------------------
// type helpers

// makes T non-deducible in a template parameter list (like C++20 std::type_identity), so that an
// optional pointer argument may be passed as NULL
template<typename T> struct nondeduced { typedef T type; };

template<typename T> inline cudaDataType_t cuda_dtype();
template<> inline cudaDataType_t cuda_dtype<float>() { return CUDA_R_32F; }
template<> inline cudaDataType_t cuda_dtype<__nv_bfloat16>() { return CUDA_R_16BF; }

// float <-> storage type, same spelling for float and bf16 so templates can use either
__device__ __host__ inline float to_float(float x) { return x; }
__device__ __host__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template<typename T> __device__ inline T from_float(float x);
template<> __device__ inline float from_float<float>(float x) { return x; }
// round to nearest even
template<> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// ----------------------------------------------------------------------------
// warp and block reductions
// Deterministic: a fixed butterfly (xor) pattern, so the result is the same bits on every lane and on
// every run. Warp functions need all 32 lanes active.

__device__ inline float warp_reduce_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v += __shfl_xor_sync(0xffffffffu, v, offset); }
    return v;
}
__device__ inline double warp_reduce_sum(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v += __shfl_xor_sync(0xffffffffu, v, offset); }
    return v;
}
__device__ inline float warp_reduce_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) { v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset)); }
    return v;
}

// Sum over the whole (1D) block, returned to every thread. blockDim.x must be a multiple of 32 and at
// most 1024, and every thread of the block must call it (it contains __syncthreads). Safe to call
// several times in a row in one kernel.
template<typename T>
__device__ inline T block_reduce_sum(T v) {
    __shared__ T partials[32];
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int num_warps = blockDim.x / 32;
    v = warp_reduce_sum(v);
    __syncthreads();                 // previous users of `partials` are done reading
    if (lane == 0) { partials[warp] = v; }
    __syncthreads();
    T r = (lane < num_warps) ? partials[lane] : (T)0;
    return warp_reduce_sum(r);      // every warp sums the partials in the same order
}

template<typename T>
__device__ inline T block_reduce_max(T v) {
    __shared__ T partials[32];
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int num_warps = blockDim.x / 32;
    v = warp_reduce_max(v);
    __syncthreads();
    if (lane == 0) { partials[warp] = v; }
    __syncthreads();
    T r = (lane < num_warps) ? partials[lane] : (T)(-FLT_MAX);
    return warp_reduce_max(r);
}

// ----------------------------------------------------------------------------
// counter-based random numbers and stochastic rounding

// a 32-bit integer hash with good avalanche ("lowbias32", by Chris Wellons)
__device__ __host__ inline unsigned int hash_u32(unsigned int x) {
    x ^= x >> 16; x *= 0x7feb352du;
    x ^= x >> 15; x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

// a random 32-bit number for element `index` of a call made with `seed`: the same (seed, index)
// always gives the same number, so results are reproducible run to run.
__device__ __host__ inline unsigned int random_u32(unsigned int seed, size_t index) {
    unsigned int h = hash_u32(seed * 0x9E3779B9u + 0x7F4A7C15u);
    h = hash_u32(h ^ (unsigned int)(index & 0xFFFFFFFFu));
    h = hash_u32(h ^ (unsigned int)(index >> 32));
    return h;
}

// Round a float to bf16 stochastically: up (away from zero in magnitude) with probability equal to
// the fraction of a bf16 ulp that truncation would drop, so the expected value is exactly x.
// `random` is a uniformly random 32-bit number (its low 16 bits are used).
__device__ inline __nv_bfloat16 stochastic_round_bf16(float x, unsigned int random) {
    unsigned int bits = __float_as_uint(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) { return __float2bfloat16_rn(x); }  // inf / nan
    const unsigned int dropped = bits & 0xFFFFu;      // the 16 bits bf16 cannot hold
    const unsigned int threshold = random & 0xFFFFu;  // uniform in [0, 65535]
    bits &= 0xFFFF0000u;
    if (dropped > threshold) { bits += 0x10000u; }   // P = dropped / 65536
    return __ushort_as_bfloat16((unsigned short)(bits >> 16));
}

// ----------------------------------------------------------------------------
// 128-bit packed loads and stores (8 bf16 or 4 float; x128 is 4 floats in the fp32 build). The address
// must be 16-byte aligned: the launchers that use them check alignment and fall back to a scalar kernel
// otherwise.

template<typename T>
struct alignas(16) Packed128 {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
};
typedef Packed128<floatX> x128;   // 8 bf16, or 4 float (ENABLE_FP32): x128::size, never 8
typedef Packed128<float> f128;    // 4 float

// A GPU stops a kernel whose 128-bit access is misaligned (cudaErrorMisalignedAddress); x86 would
// quietly load it, so the CPU emulation (dev/cpucuda) checks and stops the same way, naming the kernel.
#ifdef CPUCUDA
#define CHECK_ALIGNED16(address, who) \
    do { if ((uintptr_t)(address) % 16 != 0) { \
        ::cpucuda::fatal(who ": address %p is not 16-byte aligned (kernel %s)", (const void*)(address), ::cpucuda::tls_block->kernel); } } while (0)
#else
#define CHECK_ALIGNED16(address, who) do { } while (0)
#endif

template<typename T>
__device__ inline Packed128<T> load128(const T* address) {
    CHECK_ALIGNED16(address, "load128");
    return *reinterpret_cast<const Packed128<T>*>(address);
}
template<typename T>
__device__ inline void store128(T* address, Packed128<T> value) {
    CHECK_ALIGNED16(address, "store128");
    *reinterpret_cast<Packed128<T>*>(address) = value;
}

inline bool is_aligned16(const void* p) { return ((uintptr_t)p % 16) == 0; }

// W floats (4: one 128-bit load, p 16-byte aligned; or 1) read through L2 only (ld.global.cg): for
// values another block wrote, and fenced, during this kernel, which a stale L1 line must not hide
template<int W>
__device__ inline void load_floats_cg(float (&out)[W], const float* p) {
    static_assert(W == 1 || W == 4, "W is 1 or 4");
    if constexpr (W == 4) {
        CHECK_ALIGNED16(p, "load_floats_cg");
        const float4 v = __ldcg(reinterpret_cast<const float4*>(p));
        out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
    } else {
        out[0] = __ldcg(p);
    }
}

// VEC consecutive values of type T (floatX or float) to or from floats, for a kernel body written once
// for both of its paths (template<int VEC>): when VEC is a whole number of 128-bit packs of T, whole
// packs (p 16-byte aligned, which the launcher checked); otherwise one element at a time (VEC == 1).
template<int VEC, typename T>
__device__ inline void load_as_floats(float (&out)[VEC], const T* p) {
    constexpr int P = Packed128<T>::size;
    if constexpr (VEC % P == 0) {
        for (int i = 0; i < VEC; i += P) {
            const Packed128<T> packed = load128(p + i);
            for (int k = 0; k < P; k++) { out[i + k] = to_float(packed.v[k]); }
        }
    } else {
        for (int k = 0; k < VEC; k++) { out[k] = to_float(p[k]); }
    }
}
template<int VEC, typename T>
__device__ inline void store_floats(T* p, const float (&in)[VEC]) {
    constexpr int P = Packed128<T>::size;
    if constexpr (VEC % P == 0) {
        for (int i = 0; i < VEC; i += P) {
            Packed128<T> packed;
            for (int k = 0; k < P; k++) { packed.v[k] = from_float<T>(in[i + k]); }
            store128(p + i, packed);
        }
    } else {
        for (int k = 0; k < VEC; k++) { p[k] = from_float<T>(in[k]); }
    }
}

#endif // LLMC_CUDA_COMMON_CUH
