// cpucuda_wmma.h: the WMMA API (nvcuda::wmma) for the CPU emulation; included by cpucuda.h.
//
// On a GPU a fragment is spread over the 32 lanes of a warp in a layout NVIDIA leaves opaque, and
// every wmma call is warp-collective. Here element e of a tile (row-major index r*cols + c) belongs
// to lane e % 32, slot e / 32: code that reads x[i] as if it knew the layout computes nonsense here as
// it would on another GPU generation, while element-wise loops over x[0..num_elements) stay correct.
// Each call is a warp barrier (W_MATRIX): a lane that skips it, or lanes in different calls, are
// reported instead of hanging. mma_sync gathers the operands in the warp's scratch memory, then each
// lane computes its own elements of D = A*B + C with fp32 sums in k order (tensor cores sum in
// another order: results differ from a GPU's in the last bits of fp32, not in what they mean).
// The pointer and leading-dimension rules of the real API (256-bit aligned pointers, ldm a multiple
// of 16 bytes) are checked, because a GPU silently reads garbage when they are broken.
#pragma once

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template<typename Use, int M, int N, int K> struct tile_shape;
template<int M, int N, int K> struct tile_shape<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template<int M, int N, int K> struct tile_shape<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template<int M, int N, int K> struct tile_shape<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template<typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
    static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16),
                  "cpucuda WMMA: only the 16-bit shapes m16n16k16, m32n8k16 and m8n32k16 are emulated");
    static_assert(std::is_same<Use, accumulator>::value ? std::is_same<T, float>::value
                                                        : (std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value),
                  "cpucuda WMMA: matrix_a/matrix_b of __nv_bfloat16 or __half with a float accumulator are emulated");
public:
    static constexpr int rows = tile_shape<Use, M, N, K>::rows, cols = tile_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols / 32;
    typedef T element_type;
    T x[num_elements];
};

namespace detail {
inline float as_float(float v) { return v; }
inline float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float as_float(__half v) { return __half2float(v); }
template<typename T> inline T from_float(float v);
template<> inline float from_float<float>(float v) { return v; }
template<> inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template<> inline __half from_float<__half>(float v) { return __float2half_rn(v); }

inline void check_pointer(const char* call, const void* p, unsigned ldm, size_t elem_bytes) {
    if ((uintptr_t)p % 32 != 0)
        ::cpucuda::fatal("%s: pointer %p is not 256-bit (32-byte) aligned, as WMMA requires (kernel %s)", call, p, ::cpucuda::tls_block->kernel);
    if ((ldm * elem_bytes) % 16 != 0)
        ::cpucuda::fatal("%s: ldm %u is not a multiple of 16 bytes (%zu-byte elements), as WMMA requires (kernel %s)",
                         call, ldm, elem_bytes, ::cpucuda::tls_block->kernel);
}
// memory offset of tile element (r, c)
inline size_t offset(int r, int c, unsigned ldm, bool row_major) { return row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r; }

template<typename Frag, typename T>
inline void load(Frag& f, const T* p, unsigned ldm, bool row_major, const char* call) {
    ::cpucuda::warp_sync(0xffffffffu, ::cpucuda::W_MATRIX);
    check_pointer(call, p, ldm, sizeof(T));
    const int lane = (int)::cpucuda::lane_id();
    for (int i = 0; i < Frag::num_elements; i++) {
        int e = i * 32 + lane;
        f.x[i] = p[offset(e / Frag::cols, e % Frag::cols, ldm, row_major)];
    }
}
} // namespace detail

template<typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, V v) { for (auto& e : f.x) e = detail::from_float<T>(detail::as_float(v)); }

template<typename Use, int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const T* p, unsigned ldm) { detail::load(f, p, ldm, true, "load_matrix_sync"); }
template<typename Use, int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const T* p, unsigned ldm) { detail::load(f, p, ldm, false, "load_matrix_sync"); }
template<int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t l) {
    detail::load(f, p, ldm, l == mem_row_major, "load_matrix_sync(accumulator)");
}
template<int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l) {
    typedef fragment<accumulator, M, N, K, float> Frag;
    ::cpucuda::warp_sync(0xffffffffu, ::cpucuda::W_MATRIX);
    detail::check_pointer("store_matrix_sync", p, ldm, sizeof(float));
    const int lane = (int)::cpucuda::lane_id();
    for (int i = 0; i < Frag::num_elements; i++) {
        int e = i * 32 + lane;
        p[detail::offset(e / Frag::cols, e % Frag::cols, ldm, l == mem_row_major)] = f.x[i];
    }
}

// D = A B + C, warp-collective. The operands are gathered row-major into the warp's scratch, then
// each lane computes its own elements of D; D may be C.
template<int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    static_assert((M * K + K * N + M * N) * sizeof(float) <= CPUCUDA_WARP_SCRATCH, "warp scratch too small");
    float* sa = static_cast<float*>(::cpucuda::tls_block->warp_scratch) + (size_t)::cpucuda::warp_id() * (CPUCUDA_WARP_SCRATCH / sizeof(float));
    float* sb = sa + M * K;
    float* sc = sb + K * N;
    const int lane = (int)::cpucuda::lane_id();
    ::cpucuda::warp_sync(0xffffffffu, ::cpucuda::W_MATRIX);   // a previous mma_sync of this warp is done reading
    for (int i = 0; i < a.num_elements; i++) sa[i * 32 + lane] = detail::as_float(a.x[i]);
    for (int i = 0; i < b.num_elements; i++) sb[i * 32 + lane] = detail::as_float(b.x[i]);
    for (int i = 0; i < c.num_elements; i++) sc[i * 32 + lane] = c.x[i];
    ::cpucuda::warp_sync(0xffffffffu, ::cpucuda::W_MATRIX);   // every lane's operands are in
    for (int i = 0; i < d.num_elements; i++) {
        int e = i * 32 + lane, r = e / N, col = e % N;
        float acc = sc[e];
        for (int k = 0; k < K; k++) acc += sa[r * K + k] * sb[k * N + col];
        d.x[i] = acc;
    }
}

} // namespace wmma
} // namespace nvcuda
