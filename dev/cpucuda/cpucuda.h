// cpucuda.h: CUDA C++ kernels compiled by g++ and run on the CPU.
//
// Force-included (g++ -include dev/cpucuda/cpucuda.h) into sources that cu2cpp.pl rewrote (the
// `<<<...>>>` launches and `extern __shared__` declarations). The real CUDA headers give the types and
// the API declarations (cuda_runtime_api.h, cuda_bf16.h's host code, cublasLt.h, nccl.h); the
// definitions come from runtime.cpp, cublaslt.cpp and nccl.cpp: no libcudart, cuBLASLt or NCCL is linked.
//
// Execution model. A launch runs to completion before it returns (every stream is synchronous).
// Blocks are spread over a few OS threads; inside a block each CUDA thread is a fiber with its own
// stack. A fiber runs until it reaches a barrier (__syncthreads*, a warp intrinsic) or returns; then
// the next runnable fiber of the same block runs. A warp is 32 consecutive linear thread ids and a
// warp intrinsic is a barrier among the lanes of its mask, so these are errors naming the kernel,
// block and thread instead of hangs: a lane missing from a full-mask shuffle, a __syncthreads that not
// every live thread reaches, lanes of one warp in different intrinsics.
//
// What cannot be emulated fails to compile, naming itself: inline PTX (`asm(...)`, so mma.sync,
// cp.async, ldmatrix) becomes an undeclared identifier, and an intrinsic this file does not define is
// an undeclared function.
#pragma once
#define CPUCUDA 1   // a harness can tell it runs on the CPU (and skip its timings, which mean nothing here)

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <type_traits>

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#undef __constant__
#define __global__
#define __device__
#define __host__
#define __constant__
// All fibers of a block run on one OS thread, and an OS thread runs one block at a time, so a
// thread_local is exactly "one copy per block". (AddressSanitizer does not check thread_local arrays:
// static shared memory overruns go unseen; dynamic shared memory is heap memory and is checked.)
#define __shared__ thread_local
#define __launch_bounds__(...)

namespace cpucuda {

struct ThreadState {
    uint3 tid;
    unsigned lin;     // linear thread id in the block: x + y*bdim.x + z*bdim.x*bdim.y
};
struct BlockState {
    uint3 bid;
    dim3 bdim, gdim;
    void* dyn_smem;
    size_t dyn_smem_bytes;
    const char* kernel;   // the launch's kernel name, for error messages
    void* warp_scratch;   // 32 warps x CPUCUDA_WARP_SCRATCH bytes, for warp-collective emulations (WMMA)
};
extern thread_local ThreadState* tls_thread;
extern thread_local BlockState* tls_block;
#define CPUCUDA_WARP_SCRATCH 8192

enum WarpOp { W_SHFL = 1, W_SHFL_XOR, W_SHFL_UP, W_SHFL_DOWN, W_BALLOT, W_SYNCWARP, W_MATRIX };
enum BlockOp { B_SYNC = 1, B_OR, B_AND, B_COUNT };

// A lane writes `value`, waits until every lane of `mask` has arrived with the same op, and gets back
// what lane `src_lane` wrote (W_BALLOT: the bits of the lanes whose value was non-zero).
uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, WarpOp op);
unsigned warp_ballot(unsigned mask, int pred);
void warp_sync(unsigned mask, WarpOp op = W_SYNCWARP);
int block_barrier(BlockOp op, int pred);
[[noreturn]] void fatal(const char* fmt, ...);

using Thunk = void (*)(void*);
void launch_grid(const char* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Thunk thunk, void* closure);

template<typename F>
struct Launcher {
    const char* name; F f; dim3 grid, block; size_t smem; cudaStream_t stream;
    template<typename... A>
    void operator()(A... a) {   // the arguments are copied once, like CUDA's parameter buffer
        auto call = [&]() { f(a...); };
        launch_grid(name, grid, block, smem, stream, [](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call);
    }
};
template<typename F>
inline Launcher<F> make_launcher(const char* name, F f, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
    return Launcher<F>{name, f, grid, block, smem, stream};
}
template<typename T>
inline T* dyn_smem() { return static_cast<T*>(tls_block->dyn_smem); }
inline unsigned lane_id() { return tls_thread->lin % 32; }
inline unsigned warp_id() { return tls_thread->lin / 32; }

template<typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a shuffle of a type wider than 8 bytes");
    uint64_t b = 0; std::memcpy(&b, &v, sizeof(T)); return b;
}
template<typename T>
inline T from_bits(uint64_t b) { T v; std::memcpy(&v, &b, sizeof(T)); return v; }

} // namespace cpucuda

#define threadIdx (::cpucuda::tls_thread->tid)
#define blockIdx (::cpucuda::tls_block->bid)
#define blockDim (::cpucuda::tls_block->bdim)
#define gridDim (::cpucuda::tls_block->gdim)
static constexpr int warpSize = 32;

// ---- block and warp synchronization
inline void __syncthreads() { ::cpucuda::block_barrier(::cpucuda::B_SYNC, 0); }
inline int __syncthreads_or(int p) { return ::cpucuda::block_barrier(::cpucuda::B_OR, p); }
inline int __syncthreads_and(int p) { return ::cpucuda::block_barrier(::cpucuda::B_AND, p); }
inline int __syncthreads_count(int p) { return ::cpucuda::block_barrier(::cpucuda::B_COUNT, p); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::cpucuda::warp_sync(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- warp shuffles (width a power of two <= 32, as in CUDA: a source outside the lane's segment
// of `width` lanes reads the lane's own value)
template<typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    int lane = (int)::cpucuda::lane_id();
    int s = (lane & ~(width - 1)) + (src & (width - 1));
    return ::cpucuda::from_bits<T>(::cpucuda::warp_exchange(mask, ::cpucuda::to_bits(v), s, ::cpucuda::W_SHFL));
}
template<typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = (int)::cpucuda::lane_id();
    int s = lane ^ lane_mask;
    if ((s & ~(width - 1)) != (lane & ~(width - 1))) s = lane;
    return ::cpucuda::from_bits<T>(::cpucuda::warp_exchange(mask, ::cpucuda::to_bits(v), s, ::cpucuda::W_SHFL_XOR));
}
template<typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = (int)::cpucuda::lane_id();
    int s = lane + (int)delta;
    if ((s & ~(width - 1)) != (lane & ~(width - 1))) s = lane;
    return ::cpucuda::from_bits<T>(::cpucuda::warp_exchange(mask, ::cpucuda::to_bits(v), s, ::cpucuda::W_SHFL_DOWN));
}
template<typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = (int)::cpucuda::lane_id();
    int s = lane - (int)delta;
    if (s < (lane & ~(width - 1))) s = lane;
    return ::cpucuda::from_bits<T>(::cpucuda::warp_exchange(mask, ::cpucuda::to_bits(v), s, ::cpucuda::W_SHFL_UP));
}
inline unsigned __ballot_sync(unsigned mask, int p) { return ::cpucuda::warp_ballot(mask, p); }
inline int __any_sync(unsigned mask, int p) { return ::cpucuda::warp_ballot(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) { return ::cpucuda::warp_ballot(mask, p) == mask; }
inline unsigned __activemask() { return 0xffffffffu; }   // lanes run one at a time: no divergence to report

// ---- bit casts and device-only math (exact versions: --use_fast_math's approximations are not modelled)
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
template<typename T> inline T __ldg(const T* p) { return *p; }
template<typename T> inline T __ldcg(const T* p) { return *p; }   // one memory: every load sees the latest store
using std::min;
using std::max;

// ---- atomics (the blocks of a launch run concurrently on several OS threads)
inline float atomicAdd(float* p, float v) {
    unsigned* u = reinterpret_cast<unsigned*>(p);
    unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED), nw;
    do { nw = __float_as_uint(__uint_as_float(old) + v); }
    while (!__atomic_compare_exchange_n(u, &old, nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return __uint_as_float(old);
}
inline double atomicAdd(double* p, double v) {
    unsigned long long* u = reinterpret_cast<unsigned long long*>(p);
    unsigned long long old = __atomic_load_n(u, __ATOMIC_RELAXED), nw;
    do { double o; std::memcpy(&o, &old, 8); o += v; std::memcpy(&nw, &o, 8); }
    while (!__atomic_compare_exchange_n(u, &old, nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    double r; std::memcpy(&r, &old, 8); return r;
}
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* p, int v) { int old = __atomic_load_n(p, __ATOMIC_RELAXED); while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {} return old; }
inline int atomicCAS(int* p, int cmp, int v) { __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return cmp; }
inline unsigned atomicCAS(unsigned* p, unsigned cmp, unsigned v) { __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return cmp; }

// ---- tensor cores through the WMMA API (nvcuda::wmma), emulated warp-collectively
#include "cpucuda_wmma.h"

// ---- what cannot run here fails to compile with its name in the error. Defined last, after every
// header this file includes (they may use asm in code for the device compiler).
#define asm cpucuda_error_inline_PTX_asm_cannot_run_on_the_CPU_emulation
