/*
cuda_flash_attention.cuh: causal multi-head self-attention without the (B,NH,T,T) matrix, forward and
backward, in the style of FlashAttention-2 (Dao, 2023), written for reading. bf16 tiles go through the
tensor cores with the WMMA API (nvcuda::wmma, m16n16k16, fp32 accumulators); the softmax bookkeeping is
fp32. Head sizes 64 (every GPT-2 size) and 128, and 16 and 32 (the test presets tiny and small); any T
(the last tiles are masked).

The math. Per head, with x[t,s] = scale * q_t . k_s (scale = 1/sqrt(hs)) for s <= t, the forward walks
the keys tile by tile and keeps, per query row, a running maximum m, a running sum l and an unnormalized
output O (all fp32). For each key tile j (the logits x_j of the row on that tile):
    m_new = max(m, max_s x_j[s])
    l     = exp(m - m_new) * l + sum_s exp(x_j[s] - m_new)
    O     = exp(m - m_new) * O + sum_s exp(x_j[s] - m_new) v_s          (then m = m_new)
after the last tile out = O / l, and the row's logsumexp L = m + log l is kept (B*NH*T floats).
The backward recomputes the probabilities tile by tile, p[t,s] = exp(x[t,s] - L_t), and with
D_t = dout_t . out_t (= sum_s p[t,s] dp[t,s]):
    dp[t,s] = dout_t . v_s,   ds[t,s] = p[t,s] (dp[t,s] - D_t)
    dv_s = sum_t p[t,s] dout_t,   dk_s = scale sum_t ds[t,s] q_t,   dq_t = scale sum_s ds[t,s] k_s

How the tiles walk the data. A block has 4 warps; each warp owns 16 rows, so a block owns ROWS = 64
rows. Layouts: qkv (B,T,3C) as the qkv projection writes it (q, k, v of head h are columns h*hs.. of
the three C-wide thirds of a row: no split-heads copy); out (B,T,C), which the attention projection
reads; dqkv (B,T,3C) in qkv's layout.
  forward   grid (ceil(T/64), B*NH): a block holds its 64 query rows in shared memory and walks the key
            tiles of TILE = 32 keys from 0 up to its last query (causal: later tiles are skipped).
            Per tile, per warp: S = Q_w K^T (WMMA) -> shared memory; one lane per row applies the
            recurrence above (the fragment layout is opaque, so row-wise work goes through shared
            memory); O_w, kept fp32 in shared memory, is rescaled and gets P V added (WMMA, P in bf16).
  backward  three launches, each output element written by exactly one thread (no atomics: the
            gradients are deterministic):
            1. D_t = dout_t . out_t, one warp per (b,t,h).
            2. dk, dv: grid (ceil(T/64), B*NH), a block owns 64 keys and walks the query tiles of 32
               rows from its first key onward; dk, dv accumulate in WMMA fragments over the walk.
            3. dq: grid (ceil(T/64), B*NH), a block owns 64 queries and walks the key tiles of 32 up to
               its last query; dq accumulates in fragments.
            (FlashAttention-2 computes dq inside pass 2 with atomic adds; the separate pass costs the
            recomputation of S and dP once more and buys bit-for-bit reproducible gradients.)

Cost, per layer, with N = B*NH heads, causal (about half the T x T products are computed; the tiles on
the diagonal are computed whole and masked, ignored below):
  FLOPs     forward 2 matmuls of T x T x hs / 2 each: 2 N T^2 hs (multiply-adds count 2);
            backward pass 2 four (S, dP, dv, dk), pass 3 three (S, dP, dq): 7 N T^2 hs.
  bytes     (bf16 = 2 bytes, C = NH hs) compulsory traffic, each operand once per launch:
            forward reads qkv 6 B T C, writes out 2 B T C and L 4 N T;
            backward pass 1 reads out, dout 4 B T C, writes D 4 N T; pass 2 reads q, k, v, dout
            8 B T C and L, D 8 N T, writes dk, dv 4 B T C; pass 3 the same reads, writes dq 2 B T C.
            The walked tiles are re-read by every block whose walk reaches them (about T/128 times
            on average), which the L2 cache absorbs in part: the compulsory figure is a lower bound. No term grows with T^2: the materialized attention (cuda_attention.cuh)
            writes and reads the (B,NH,T,T) matrix several times (see dev/bench/cost_model.py).

Shared memory (dynamic, above the 48 KiB default, so the launchers raise the limit once): about 49 KiB
(hs 64) and 81 KiB (hs 128) for the forward, 51 / 75 KiB for the backward passes.

Not available in the fp32 build (ENABLE_FP32: floatX is float, and the WMMA operands here are bf16):
FLASH_ATTENTION_AVAILABLE is then 0 and the trainer uses cuda_attention.cuh.
*/
#ifndef LLMC_CUDA_FLASH_ATTENTION_CUH
#define LLMC_CUDA_FLASH_ATTENTION_CUH

#include <math.h>
#include "cuda_common.cuh"

#if defined(ENABLE_FP32)
#define FLASH_ATTENTION_AVAILABLE 0
#else
#define FLASH_ATTENTION_AVAILABLE 1
#endif

// head sizes the kernels are instantiated for
inline bool flash_attention_supports(int hs) { return FLASH_ATTENTION_AVAILABLE && (hs == 16 || hs == 32 || hs == 64 || hs == 128); }
#define FLASH_ATTENTION_HEAD_SIZES "16, 32, 64 or 128"


#if FLASH_ATTENTION_AVAILABLE
#ifndef CPUCUDA
#include <mma.h>
#endif

namespace flash {
using namespace nvcuda;
typedef __nv_bfloat16 bf16;

constexpr int WARPS = 4;             // warps per block
constexpr int THREADS = 32 * WARPS;
constexpr int ROWS = 16 * WARPS;     // rows a block owns (queries: forward, dq; keys: dk/dv)
constexpr int TILE = 32;             // rows of the tiles the block walks over
constexpr int LDS = TILE + 4;        // row stride of the fp32 score tiles (padding against bank conflicts)
constexpr int LDP = TILE + 8;        // row stride of the bf16 probability tiles

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> FragB;      // B[k][n] at p[k*ld + n]
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> FragBt;     // B[k][n] at p[n*ld + k]: a transpose
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

__host__ __device__ constexpr size_t round128(size_t bytes) { return (bytes + 127) / 128 * 128; }

// Shared memory layouts (byte offsets from a 128-byte aligned base). LDH: row stride of a (rows, hs) bf16 tile.
template<int HS> struct FwdSmem {
    static constexpr int LDH = HS + 8;
    static constexpr size_t q = 0;                                            // ROWS x LDH bf16
    static constexpr size_t k = q + round128((size_t)ROWS * LDH * 2);         // TILE x LDH bf16
    static constexpr size_t v = k + round128((size_t)TILE * LDH * 2);         // TILE x LDH bf16
    static constexpr size_t s = v + round128((size_t)TILE * LDH * 2);         // WARPS x 16 x LDS fp32
    static constexpr size_t p = s + round128((size_t)WARPS * 16 * LDS * 4);   // WARPS x 16 x LDP bf16
    static constexpr size_t o = p + round128((size_t)WARPS * 16 * LDP * 2);   // WARPS x 16 x HS fp32
    static constexpr size_t m = o + round128((size_t)WARPS * 16 * HS * 4);    // ROWS fp32: running max
    static constexpr size_t l = m + round128((size_t)ROWS * 4);               // ROWS fp32: running sum
    static constexpr size_t alpha = l + round128((size_t)ROWS * 4);           // ROWS fp32: this tile's rescale
    static constexpr size_t bytes = alpha + round128((size_t)ROWS * 4) + 128; // + 128: room to align the base
};
// Both backward passes: `own` tiles (ROWS rows: K, V for dk/dv; Q, dout for dq), `walk` tiles (TILE rows).
template<int HS> struct BwdSmem {
    static constexpr int LDH = HS + 8;
    static constexpr size_t own0 = 0;
    static constexpr size_t own1 = own0 + round128((size_t)ROWS * LDH * 2);
    static constexpr size_t walk0 = own1 + round128((size_t)ROWS * LDH * 2);
    static constexpr size_t walk1 = walk0 + round128((size_t)TILE * LDH * 2);
    static constexpr size_t s = walk1 + round128((size_t)TILE * LDH * 2);     // WARPS x 16 x LDS fp32: S, then P
    static constexpr size_t dp = s + round128((size_t)WARPS * 16 * LDS * 4);  // WARPS x 16 x LDS fp32: dP
    static constexpr size_t p = dp + round128((size_t)WARPS * 16 * LDS * 4);  // WARPS x 16 x LDP bf16: P, then dS
    static constexpr size_t lse = p + round128((size_t)WARPS * 16 * LDP * 2); // ROWS fp32
    static constexpr size_t dd = lse + round128((size_t)ROWS * 4);            // ROWS fp32: D
    static constexpr size_t bytes = dd + round128((size_t)ROWS * 4) + 128;
};

__device__ inline char* align_smem(char* raw) { return (char*)(((uintptr_t)raw + 127) & ~(uintptr_t)127); }

// The backward passes' views of their shared memory (BwdSmem), this warp's tiles already offset.
template<int HS> struct BwdTiles {
    bf16 *own0, *own1, *walk0, *walk1;   // (ROWS, LDH) x 2, (TILE, LDH) x 2
    float *lse, *D;                      // per row of the query tile (ROWS or TILE of them)
    float *S, *dP;                       // this warp's 16 x LDS fp32 tiles
    bf16* P;                             // this warp's 16 x LDP bf16 tile
    __device__ explicit BwdTiles(char* raw) {
        typedef BwdSmem<HS> L;
        char* sm = align_smem(raw);
        const int warp = threadIdx.x / 32;
        own0 = (bf16*)(sm + L::own0); own1 = (bf16*)(sm + L::own1);
        walk0 = (bf16*)(sm + L::walk0); walk1 = (bf16*)(sm + L::walk1);
        lse = (float*)(sm + L::lse); D = (float*)(sm + L::dd);
        S = (float*)(sm + L::s) + warp * 16 * LDS;
        dP = (float*)(sm + L::dp) + warp * 16 * LDS;
        P = (bf16*)(sm + L::p) + warp * 16 * LDP;
    }
    // lse and D of query rows t0 .. t0+n-1 of head bh (0 past T), block-cooperative
    __device__ void load_row_stats(const float* g_lse, const float* g_D, int bh, int t0, int n, int T) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            int t = t0 + i;
            lse[i] = t < T ? g_lse[(size_t)bh * T + t] : 0.0f;
            D[i] = t < T ? g_D[(size_t)bh * T + t] : 0.0f;
        }
    }
};

// Block-cooperative copy of rows r0 .. r0+n-1 of a (T, HS) strided view (row t at src + t*stride) into
// dst (n x ld), 16 bytes at a time; rows at or past T are zero.
template<int HS>
__device__ inline void load_rows(bf16* dst, int ld, const bf16* src, size_t stride, int r0, int n, int T) {
    constexpr int V = HS / 8;   // 16-byte vectors per row
    for (int i = threadIdx.x; i < n * V; i += blockDim.x) {
        int r = i / V, c = (i % V) * 8;
        int4 val = make_int4(0, 0, 0, 0);
        if (r0 + r < T) { val = *reinterpret_cast<const int4*>(src + (size_t)(r0 + r) * stride + c); }
        *reinterpret_cast<int4*>(dst + (size_t)r * ld + c) = val;
    }
}

// acc (16 x 16, warp) = A (16 x K, row-major at a, lda) . B where B[k][n] = b[k*ldb + n] (TRANSPOSED
// false) or b[n*ldb + k] (true: B is the transpose of the row-major tile at b). K a multiple of 16.
template<int K, bool TRANSPOSED>
__device__ inline void mma_tile(FragC& acc, const bf16* a, int lda, const bf16* b, int ldb) {
    FragA fa;
    for (int kk = 0; kk < K / 16; kk++) {
        wmma::load_matrix_sync(fa, a + kk * 16, lda);
        if (TRANSPOSED) {
            FragBt fb;
            wmma::load_matrix_sync(fb, b + kk * 16, ldb);
            wmma::mma_sync(acc, fa, fb, acc);
        } else {
            FragB fb;
            wmma::load_matrix_sync(fb, b + (size_t)kk * 16 * ldb, ldb);
            wmma::mma_sync(acc, fa, fb, acc);
        }
    }
}

// out (16 x 16*N fp32 at s, lds) = A (16 x K) . X^T where X is (16*N x K) row-major at x (ldx): scores.
template<int K, int N>
__device__ inline void scores_tile(float* s, int lds, const bf16* a, int lda, const bf16* x, int ldx) {
    for (int n = 0; n < N; n++) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
        mma_tile<K, true>(acc, a, lda, x + (size_t)n * 16 * ldx, ldx);
        wmma::store_matrix_sync(s + n * 16, acc, lds, wmma::mem_row_major);
    }
}

// Writes a warp's 16 x HS fp32 accumulators, times `mul`, as bf16 rows row0 .. row0+15 (those < T) of
// dst (row t at dst + t*stride), through a 16 x 16 fp32 scratch in shared memory.
template<int HS>
__device__ inline void store_rows(bf16* dst, size_t stride, int row0, int T, FragC* acc, float mul, float* scratch) {
    const int lane = threadIdx.x % 32;
    for (int n = 0; n < HS / 16; n++) {
        for (int i = 0; i < acc[n].num_elements; i++) { acc[n].x[i] *= mul; }   // uniform: no layout needed
        __syncwarp();
        wmma::store_matrix_sync(scratch, acc[n], 16, wmma::mem_row_major);
        __syncwarp();
        for (int i = lane; i < 256; i += 32) {
            int r = i / 16, c = i % 16;
            if (row0 + r < T) { dst[(size_t)(row0 + r) * stride + n * 16 + c] = __float2bfloat16(scratch[i]); }
        }
    }
    __syncwarp();
}

// ----------------------------------------------------------------------------
// forward: out (B,T,C), lse (B,NH,T) from qkv (B,T,3C)

template<int HS>
__global__ void __launch_bounds__(THREADS) forward_kernel(bf16* out, float* lse, const bf16* qkv, int T, int NH) {
    typedef FwdSmem<HS> L;
    constexpr int LDH = L::LDH;
    extern __shared__ char flash_smem_raw[];
    char* sm = align_smem(flash_smem_raw);
    bf16* sQ = (bf16*)(sm + L::q);
    bf16* sK = (bf16*)(sm + L::k);
    bf16* sV = (bf16*)(sm + L::v);
    float* sM = (float*)(sm + L::m);
    float* sL = (float*)(sm + L::l);
    float* sAlpha = (float*)(sm + L::alpha);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* S = (float*)(sm + L::s) + warp * 16 * LDS;
    bf16* P = (bf16*)(sm + L::p) + warp * 16 * LDP;
    float* O = (float*)(sm + L::o) + warp * 16 * HS;

    const int C = NH * HS, C3 = 3 * C;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * ROWS;   // the longest walks start first
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const bf16* base = qkv + (size_t)b * T * C3 + h * HS;  // q at +0, k at +C, v at +2C
    const float scale = 1.0f / sqrtf((float)HS);

    load_rows<HS>(sQ, LDH, base, C3, q0, ROWS, T);
    for (int i = lane; i < 16 * HS; i += 32) { O[i] = 0.0f; }
    if (threadIdx.x < ROWS) { sM[threadIdx.x] = -INFINITY; sL[threadIdx.x] = 0.0f; }
    __syncthreads();

    const int kend = min(T, q0 + ROWS);   // causal: no key after the block's last query
    for (int k0 = 0; k0 < kend; k0 += TILE) {
        load_rows<HS>(sK, LDH, base + C, C3, k0, TILE, T);
        load_rows<HS>(sV, LDH, base + 2 * C, C3, k0, TILE, T);
        __syncthreads();
        scores_tile<HS, TILE / 16>(S, LDS, sQ + warp * 16 * LDH, LDH, sK, LDH);   // S = Q_w K^T
        __syncwarp();
        if (lane < 16) {   // lane r: the recurrence for row r of the warp
            const int r = lane, row = warp * 16 + r, t = q0 + row;
            float* srow = S + r * LDS;
            const float m_old = sM[row];
            float m_new = m_old;
            for (int c = 0; c < TILE; c++) {
                int s = k0 + c;
                float x = (s <= t && s < T) ? srow[c] * scale : -INFINITY;
                srow[c] = x;
                m_new = fmaxf(m_new, x);
            }
            // m_new is finite: key 0 is in the first tile and every row (even padding, t >= T) sees it
            const float alpha = expf(m_old - m_new);   // 0 on the first tile (m_old = -inf)
            float sum = 0.0f;
            for (int c = 0; c < TILE; c++) {
                float p = expf(srow[c] - m_new);       // masked: exp(-inf) = 0
                P[r * LDP + c] = __float2bfloat16(p);
                sum += p;
            }
            sL[row] = alpha * sL[row] + sum;
            sM[row] = m_new;
            sAlpha[row] = alpha;
        }
        __syncwarp();
        for (int i = lane; i < 16 * HS; i += 32) { O[i] *= sAlpha[warp * 16 + i / HS]; }
        __syncwarp();
        for (int n = 0; n < HS / 16; n++) {   // O_w += P_w V
            FragC acc;
            wmma::load_matrix_sync(acc, O + n * 16, HS, wmma::mem_row_major);
            mma_tile<TILE, false>(acc, P, LDP, sV + n * 16, LDH);
            wmma::store_matrix_sync(O + n * 16, acc, HS, wmma::mem_row_major);
        }
        __syncthreads();   // sK, sV are rewritten next
    }
    for (int i = lane; i < 16 * HS; i += 32) {
        int r = i / HS, d = i % HS, t = q0 + warp * 16 + r;
        if (t < T) { out[((size_t)b * T + t) * C + h * HS + d] = __float2bfloat16(O[i] / sL[warp * 16 + r]); }
    }
    if (lane < 16) {
        int row = warp * 16 + lane, t = q0 + row;
        if (t < T) { lse[(size_t)bh * T + t] = sM[row] + logf(sL[row]); }
    }
}

// ----------------------------------------------------------------------------
// backward

// D[bh*T + t] = dout_t . out_t for head h; one warp per (b, t, h)
template<int HS>
__global__ void backward_dot_kernel(float* D, const bf16* dout, const bf16* out, int B, int T, int NH) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= B * T * NH) { return; }
    const int lane = threadIdx.x % 32, h = row % NH, t = (row / NH) % T, b = row / (NH * T);
    const size_t off = ((size_t)b * T + t) * NH * HS + h * HS;
    float acc = 0.0f;
    for (int d = lane; d < HS; d += 32) { acc += __bfloat162float(dout[off + d]) * __bfloat162float(out[off + d]); }
    acc = warp_reduce_sum(acc);
    if (lane == 0) { D[((size_t)b * NH + h) * T + t] = acc; }
}

// dk, dv for the block's 64 keys
template<int HS>
__global__ void __launch_bounds__(THREADS) backward_dkdv_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                                                const float* lse, const float* D, int T, int NH) {
    constexpr int LDH = BwdSmem<HS>::LDH;
    extern __shared__ char flash_smem_raw[];
    BwdTiles<HS> sm(flash_smem_raw);
    bf16 *sK = sm.own0, *sV = sm.own1, *sQ = sm.walk0, *sdO = sm.walk1;
    float *sLse = sm.lse, *sD = sm.D;
    float* S = sm.S;     // S^T_w, then P^T_w (fp32)
    float* dP = sm.dP;   // dP^T_w
    bf16* P = sm.P;      // P^T_w, then dS^T_w (bf16 operands)
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    const int C = NH * HS, C3 = 3 * C;
    const int k0 = blockIdx.x * ROWS;
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const bf16* base = qkv + (size_t)b * T * C3 + h * HS;
    const bf16* dbase = dout + (size_t)b * T * C + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);

    load_rows<HS>(sK, LDH, base + C, C3, k0, ROWS, T);
    load_rows<HS>(sV, LDH, base + 2 * C, C3, k0, ROWS, T);
    FragC dK[HS / 16], dV[HS / 16];
    for (int n = 0; n < HS / 16; n++) { wmma::fill_fragment(dK[n], 0.0f); wmma::fill_fragment(dV[n], 0.0f); }

    for (int q0 = k0 / TILE * TILE; q0 < T; q0 += TILE) {   // causal: queries before the first key see none
        __syncthreads();   // the previous tile's Q, dout are no longer read
        load_rows<HS>(sQ, LDH, base, C3, q0, TILE, T);
        load_rows<HS>(sdO, LDH, dbase, C, q0, TILE, T);
        sm.load_row_stats(lse, D, bh, q0, TILE, T);
        __syncthreads();
        scores_tile<HS, TILE / 16>(S, LDS, sK + warp * 16 * LDH, LDH, sQ, LDH);    // S^T_w = K_w Q^T
        scores_tile<HS, TILE / 16>(dP, LDS, sV + warp * 16 * LDH, LDH, sdO, LDH);  // dP^T_w = V_w dout^T
        __syncwarp();
        for (int i = lane; i < 16 * TILE; i += 32) {
            int r = i / TILE, c = i % TILE, s = k0 + warp * 16 + r, t = q0 + c;
            float p = (s <= t && t < T) ? expf(S[r * LDS + c] * scale - sLse[c]) : 0.0f;
            S[r * LDS + c] = p;
            P[r * LDP + c] = __float2bfloat16(p);
        }
        __syncwarp();
        for (int n = 0; n < HS / 16; n++) { mma_tile<TILE, false>(dV[n], P, LDP, sdO + n * 16, LDH); }   // dV_w += P^T_w dout
        __syncwarp();
        for (int i = lane; i < 16 * TILE; i += 32) {
            int r = i / TILE, c = i % TILE;
            P[r * LDP + c] = __float2bfloat16(S[r * LDS + c] * (dP[r * LDS + c] - sD[c]));   // dS^T
        }
        __syncwarp();
        for (int n = 0; n < HS / 16; n++) { mma_tile<TILE, false>(dK[n], P, LDP, sQ + n * 16, LDH); }    // dK_w += dS^T_w Q
    }
    bf16* dbase_qkv = dqkv + (size_t)b * T * C3 + h * HS;
    store_rows<HS>(dbase_qkv + C, C3, k0 + warp * 16, T, dK, scale, S);
    store_rows<HS>(dbase_qkv + 2 * C, C3, k0 + warp * 16, T, dV, 1.0f, S);
}

// dq for the block's 64 queries
template<int HS>
__global__ void __launch_bounds__(THREADS) backward_dq_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                                              const float* lse, const float* D, int T, int NH) {
    constexpr int LDH = BwdSmem<HS>::LDH;
    extern __shared__ char flash_smem_raw[];
    BwdTiles<HS> sm(flash_smem_raw);
    bf16 *sQ = sm.own0, *sdO = sm.own1, *sK = sm.walk0, *sV = sm.walk1;
    float *sLse = sm.lse, *sD = sm.D, *S = sm.S, *dP = sm.dP;
    bf16* dS = sm.P;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    const int C = NH * HS, C3 = 3 * C;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * ROWS;
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const bf16* base = qkv + (size_t)b * T * C3 + h * HS;
    const float scale = 1.0f / sqrtf((float)HS);

    load_rows<HS>(sQ, LDH, base, C3, q0, ROWS, T);
    load_rows<HS>(sdO, LDH, dout + (size_t)b * T * C + h * HS, C, q0, ROWS, T);
    sm.load_row_stats(lse, D, bh, q0, ROWS, T);
    FragC dQ[HS / 16];
    for (int n = 0; n < HS / 16; n++) { wmma::fill_fragment(dQ[n], 0.0f); }

    const int kend = min(T, q0 + ROWS);
    for (int k0 = 0; k0 < kend; k0 += TILE) {
        __syncthreads();
        load_rows<HS>(sK, LDH, base + C, C3, k0, TILE, T);
        load_rows<HS>(sV, LDH, base + 2 * C, C3, k0, TILE, T);
        __syncthreads();
        scores_tile<HS, TILE / 16>(S, LDS, sQ + warp * 16 * LDH, LDH, sK, LDH);    // S_w = Q_w K^T
        scores_tile<HS, TILE / 16>(dP, LDS, sdO + warp * 16 * LDH, LDH, sV, LDH);  // dP_w = dout_w V^T
        __syncwarp();
        for (int i = lane; i < 16 * TILE; i += 32) {
            int r = i / TILE, c = i % TILE, row = warp * 16 + r, t = q0 + row, s = k0 + c;
            float p = (s <= t && s < T) ? expf(S[r * LDS + c] * scale - sLse[row]) : 0.0f;
            dS[r * LDP + c] = __float2bfloat16(p * (dP[r * LDS + c] - sD[row]));
        }
        __syncwarp();
        for (int n = 0; n < HS / 16; n++) { mma_tile<TILE, false>(dQ[n], dS, LDP, sK + n * 16, LDH); }   // dQ_w += dS_w K
    }
    store_rows<HS>(dqkv + (size_t)b * T * C3 + h * HS, C3, q0 + warp * 16, T, dQ, scale, S);
}

// raises a kernel's dynamic shared memory limit (once per kernel)
template<typename K>
inline void allow_smem(K kernel, size_t bytes, bool* done) {
    if (*done) { return; }
    cudaCheck(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    *done = true;
}

template<int HS>
inline void forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH, cudaStream_t stream) {
    static bool ready = false;
    const size_t smem = FwdSmem<HS>::bytes;
    allow_smem(forward_kernel<HS>, smem, &ready);
    dim3 grid(CEIL_DIV(T, ROWS), B * NH);
    forward_kernel<HS><<<grid, THREADS, smem, stream>>>(out, lse, qkv, T, NH);
    cudaCheck(cudaGetLastError());
}

template<int HS>
inline void backward(bf16* dqkv, float* D, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse,
                     int B, int T, int NH, cudaStream_t stream) {
    static bool ready_kv = false, ready_q = false;
    const size_t smem = BwdSmem<HS>::bytes;
    allow_smem(backward_dkdv_kernel<HS>, smem, &ready_kv);
    allow_smem(backward_dq_kernel<HS>, smem, &ready_q);
    backward_dot_kernel<HS><<<CEIL_DIV(B * T * NH, THREADS / 32), THREADS, 0, stream>>>(D, dout, out, B, T, NH);
    cudaCheck(cudaGetLastError());
    dim3 grid(CEIL_DIV(T, ROWS), B * NH);
    backward_dkdv_kernel<HS><<<grid, THREADS, smem, stream>>>(dqkv, qkv, dout, lse, D, T, NH);
    cudaCheck(cudaGetLastError());
    backward_dq_kernel<HS><<<grid, THREADS, smem, stream>>>(dqkv, qkv, dout, lse, D, T, NH);
    cudaCheck(cudaGetLastError());
}
} // namespace flash

// ----------------------------------------------------------------------------
// launchers

// out (B,T,C) = causal self-attention of qkv (B,T,3C), C = NH*hs with hs 16, 32, 64 or 128; lse (B,NH,T) fp32:
// each row's logsumexp of the scaled logits, for the backward. qkv is only read (unlike
// attention_forward, which clobbers its input). out must not alias qkv.
inline void flash_attention_forward(floatX* out, float* lse, const floatX* qkv, int B, int T, int C, int NH,
                                    cudaStream_t stream) {
    hostCheck(C % NH == 0, "flash_attention_forward: C must be a multiple of NH");
    const int hs = C / NH;
    hostCheck(flash_attention_supports(hs), "flash_attention_forward: head size must be " FLASH_ATTENTION_HEAD_SIZES);
    switch (hs) {
    case 16: flash::forward<16>(out, lse, qkv, B, T, NH, stream); break;
    case 32: flash::forward<32>(out, lse, qkv, B, T, NH, stream); break;
    case 64: flash::forward<64>(out, lse, qkv, B, T, NH, stream); break;
    default: flash::forward<128>(out, lse, qkv, B, T, NH, stream); break;
    }
}

// dqkv (B,T,3C) = d loss / d qkv, OVERWRITTEN (every element written). dout (B,T,C): gradient of out;
// qkv, out, lse: as given to / written by flash_attention_forward. D: scratch of B*NH*T floats.
// dqkv must not alias any input.
inline void flash_attention_backward(floatX* dqkv, float* D, const floatX* dout, const floatX* qkv, const floatX* out,
                                     const float* lse, int B, int T, int C, int NH, cudaStream_t stream) {
    hostCheck(C % NH == 0, "flash_attention_backward: C must be a multiple of NH");
    const int hs = C / NH;
    hostCheck(flash_attention_supports(hs), "flash_attention_backward: head size must be " FLASH_ATTENTION_HEAD_SIZES);
    switch (hs) {
    case 16: flash::backward<16>(dqkv, D, dout, qkv, out, lse, B, T, NH, stream); break;
    case 32: flash::backward<32>(dqkv, D, dout, qkv, out, lse, B, T, NH, stream); break;
    case 64: flash::backward<64>(dqkv, D, dout, qkv, out, lse, B, T, NH, stream); break;
    default: flash::backward<128>(dqkv, D, dout, qkv, out, lse, B, T, NH, stream); break;
    }
}
#endif // FLASH_ATTENTION_AVAILABLE

#endif // LLMC_CUDA_FLASH_ATTENTION_CUH
