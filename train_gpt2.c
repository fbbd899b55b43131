/*
train_gpt2.c: GPT-2 training in fp32 on the CPU, the reference implementation of this project.

Read it in this order:
  1. the layers, each forward beside its backward (encoder, layernorm, matmul, attention, gelu,
     residual, classifier);
  2. the model: one parameter buffer with named views, activations, gpt2_forward / gpt2_backward;
  3. the Trainable: how the model plugs into the shared window (llmc/window.h), which does gradient
     accumulation over K micro-steps, the exact 1/N normalization, clipping and sharded AdamW;
  4. main: parse the flags, start MPI (or not), build the model, run llmc/trainer.h.

Conventions: tensors are row-major with shapes in comments; B batch rows, T time steps, C channels,
NH heads, V vocabulary (Vp padded), L layers. Every backward function ACCUMULATES into its gradient
outputs (+=): parameter gradients sum over micro-steps that way, and activation gradients sum where
a tensor feeds two consumers (the residual stream). Loops whose iterations are independent run with
OpenMP's static schedule (loops too small to repay a parallel region, below PARALLEL_MIN_WORK, run on
one thread), and every reduction has a fixed order, so results are deterministic for a
given thread count.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef OMP
#include <omp.h>
#endif
#include "llmc/utils.h"
#include "llmc/gpt2.h"
#include "llmc/comm.h"
#include "llmc/window.h"
#include "llmc/trainer.h"

// ----------------------------------------------------------------------------
// Layers
//
// Each op that has a fast version keeps its straightforward version beside it, named *_reference:
// the reference says what is computed, the fast one computes the same sums in a different (but
// fixed) order. dev/bench/profile_cpu.c times both and checks that they agree.
#include <stdint.h>

// Loops with less work than this (floats touched, or multiply-adds for matmul and attention) run on
// one thread: a parallel region forks and joins in microseconds on an idle machine, but when other
// processes compete for the cores every region waits for a scheduler time slice (milliseconds). At
// B*T = 256 that makes residual, layernorm and GELU faster serial; matmuls and attention stay parallel.
#define PARALLEL_MIN_WORK ((size_t)1 << 20)
#define MM_PARALLEL_MIN_WORK ((size_t)16 << 20)

// ---- Vectorizable exp and tanh. The loops that call these (softmax over V, GELU) would otherwise
// spend most of their time in libm's scalar expf/tanhf, which the compiler cannot vectorize without
// -ffast-math. Accurate to a few ulp, which is far below the fp32 noise of the sums around them.

// e^x: x = n ln2 + r with |r| <= ln2/2, e^r from a degree-6 polynomial (Cephes expf), 2^n put
// straight into the exponent bits. Inputs below -87 give e^-87 (1.6e-38) rather than 0.
// Non-finite inputs: +Inf is clamped like any large input and gives e^88 (1.65e38, finite), -Inf
// gives e^-87; NaN passes the clamps (its comparisons are false) and gives NaN, through r and the
// polynomial, whatever garbage its bits make of the scale. The bits are unsigned because NaN's are
// arbitrary: shifting them as a signed int would be undefined behaviour (a negative value shifted,
// or a positive one shifted into the sign bit), which the optimizer may assume never happens.
static inline float exp_fast(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float t = x * 1.44269504088896341f + 12582912.0f;  // adding 1.5 * 2^23 rounds x/ln2 to an integer n,
    float n = t - 12582912.0f;                          // which sits in t's low mantissa bits
    uint32_t bits;
    memcpy(&bits, &t, sizeof(bits));
    bits = (bits - 0x4B400000u + 127u) << 23;           // 0x4B400000 is 12582912.0f: bits of 2^n
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln2 in two parts, so r is exact
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * scale;
}

// tanh(u) = 1 - 2 / (e^(2u) + 1); saturates to +-1 where e^(2u) over- or underflows, so +-Inf
// give exactly +-1 (e^-87 vanishes beside the 1 it is added to), and NaN gives NaN.
static inline float tanh_fast(float u) {
    return 1.0f - 2.0f / (exp_fast(2.0f * u) + 1.0f);
}

// ---- Encoder

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
    // out (B,T,C), inp (B,T), wte (V,C), wpe (maxT,C)
    #pragma omp parallel for schedule(static) if ((size_t)B * T * C >= PARALLEL_MIN_WORK)
    for (int bt = 0; bt < B * T; bt++) {
        float* o = out + (size_t)bt * C;
        const float* we = wte + (size_t)inp[bt] * C;
        const float* pe = wpe + (size_t)(bt % T) * C;
        for (int i = 0; i < C; i++) o[i] = we[i] + pe[i];
    }
}

// Serial on purpose: two positions with the same token add into the same wte row.
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float* d = dout + ((size_t)b * T + t) * C;
            float* dwe = dwte + (size_t)inp[b * T + t] * C;
            float* dpe = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) { dwe[i] += d[i]; dpe[i] += d[i]; }
        }
}

// ---- LayerNorm

// y = (x - mean) * rstd * w + b, per (b,t) row; saves mean and rstd for the backward pass.
// (The row sums run as fixed-width vector sums, `omp simd reduction`: a fixed order, decided at
// compile time.)
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C) {
    // out, inp (N,C) with N = B*T; mean, rstd (N)
    #pragma omp parallel for schedule(static) if ((size_t)N * C >= PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        float m = 0.0f;
        #pragma omp simd reduction(+:m)
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        float var = 0.0f;
        #pragma omp simd reduction(+:var)
        for (int i = 0; i < C; i++) { float d = x[i] - m; var += d * d; }
        var /= C;
        float s = 1.0f / sqrtf(var + 1e-5f);
        float* y = out + (size_t)n * C;
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * s * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = s;
    }
}

// With xhat = (x - mean) * rstd and g = dout * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum dout * xhat,  db = sum dout
void layernorm_backward_reference(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, const float* mean, const float* rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float* d = dout + (size_t)n * C;
        const float* x = inp + (size_t)n * C;
        float* dx = dinp + (size_t)n * C;
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - mean[n]) * rstd[n];
            float g = d[i] * weight[i];
            g_mean += g;
            gx_mean += g * xhat;
        }
        g_mean /= C;
        gx_mean /= C;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - mean[n]) * rstd[n];
            dx[i] += rstd[n] * (d[i] * weight[i] - g_mean - xhat * gx_mean);
            dweight[i] += d[i] * xhat;
            dbias[i] += d[i];
        }
    }
}

// Fast: rows in parallel for dx; the parameter gradients in parallel over channels, each channel
// summing its rows in order (so reading rows, not columns, and still deterministic). The two loops
// are independent and share one parallel region.
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
    #pragma omp parallel if ((size_t)N * C >= PARALLEL_MIN_WORK)
    {
        #pragma omp for schedule(static) nowait
        for (int n = 0; n < N; n++) {
            const float* d = dout + (size_t)n * C;
            const float* x = inp + (size_t)n * C;
            float* dx = dinp + (size_t)n * C;
            float mu = mean[n], rs = rstd[n];
            float g_mean = 0.0f, gx_mean = 0.0f;
            #pragma omp simd reduction(+:g_mean, gx_mean)
            for (int i = 0; i < C; i++) {
                float xhat = (x[i] - mu) * rs;
                float g = d[i] * weight[i];
                g_mean += g;
                gx_mean += g * xhat;
            }
            g_mean /= C;
            gx_mean /= C;
            for (int i = 0; i < C; i++) {
                float xhat = (x[i] - mu) * rs;
                dx[i] += rs * (d[i] * weight[i] - g_mean - xhat * gx_mean);
            }
        }
        enum { CH = 64 };  // channels per task
        #pragma omp for schedule(static) nowait
        for (int i0 = 0; i0 < C; i0 += CH) {
            int i1 = i0 + CH < C ? i0 + CH : C;
            float dw[CH] = {0}, db[CH] = {0};
            for (int n = 0; n < N; n++) {
                const float* d = dout + (size_t)n * C;
                const float* x = inp + (size_t)n * C;
                float mu = mean[n], rs = rstd[n];
                for (int i = i0; i < i1; i++) {
                    dw[i - i0] += d[i] * ((x[i] - mu) * rs);
                    db[i - i0] += d[i];
                }
            }
            for (int i = i0; i < i1; i++) { dweight[i] += dw[i - i0]; dbias[i] += db[i - i0]; }
        }
    }
}

// ---- Matmul: out = inp @ weight^T + bias, weight stored (OC, C) as nn.Linear does.

void matmul_forward_reference(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
    // out (N,OC), inp (N,C), weight (OC,C), bias (OC) or NULL
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float s = bias ? bias[o] : 0.0f;
            for (int i = 0; i < C; i++) s += inp[(size_t)n * C + i] * weight[(size_t)o * C + i];
            out[(size_t)n * OC + o] = s;
        }
}

// dinp += dout @ weight;  dweight += dout^T @ inp;  dbias += sum over rows of dout
void matmul_backward_reference(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, int N, int C, int OC) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) {
            float s = 0.0f;
            for (int o = 0; o < OC; o++) s += dout[(size_t)n * OC + o] * weight[(size_t)o * C + i];
            dinp[(size_t)n * C + i] += s;
        }
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        for (int i = 0; i < C; i++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + o] * inp[(size_t)n * C + i];
            dweight[(size_t)o * C + i] += s;
        }
        if (dbias) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + o];
            dbias[o] += s;
        }
    }
}

// The fast matmuls are three uses of one blocked product, Z (+)= X @ Y, Z (M,Nc), X (M,K), Y (K,Nc):
//   forward  out   = inp @ weight^T     M = N,  K = C,  Nc = OC   (Y = weight^T: packed, see below)
//   backward dinp += dout @ weight      M = N,  K = OC, Nc = C
//            dw   += dout^T @ inp      M = OC, K = N,  Nc = C    (X = dout^T: read with strides)
// Z is cut into tiles of MM_MR rows x MM_NR columns. A tile's MM_MR*MM_NR sums live in vector
// registers (24 of them with AVX-512) while k runs: per k, one row of Y (MM_NR floats, a few vector
// loads) is multiplied by MM_MR broadcast scalars of X, so every load feeds several FMAs. K is cut
// into blocks of MM_KC; each block's sum is added to Z, in block order. Every element of Z is summed
// by one thread in an order fixed by the shapes alone: deterministic for any thread count.
// The tile's inner loop is written for the widest vectors the CPU has, with intrinsics, so that the
// speed does not depend on what the compiler's tuning for this CPU prefers (GCC tunes some AVX-512
// CPUs to 256-bit vectors and would otherwise emit no 512-bit instruction here). The path is chosen
// at build time from the target (-march=native: this machine's CPU):
//   AVX-512: 6 x 64 tiles, 6 rows of 4 zmm registers = 24 of its 32 registers;
//   AVX2+FMA: 4 x 24 tiles, 4 rows of 3 ymm registers = 12 of its 16;
//   portable C for any other CPU (-DMM_PORTABLE forces it).
// Every path adds a * y into each sum once per k, in k order, with one fused multiply-add where the
// CPU has FMA: the intrinsics give the portable path's bits (dev/test/test_cpu_vector.py checks it).
// train_gpt2 names its path at start-up.
#if (defined(__AVX512F__) || defined(__AVX2__)) && !defined(MM_PORTABLE)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && !defined(MM_PORTABLE)
#define MM_MR 6
#define MM_NR 64
#define MM_PATH "AVX-512 (zmm FMA, 6x64 tiles)"
#elif defined(__AVX2__) && defined(__FMA__) && !defined(MM_PORTABLE)
#define MM_MR 4
#define MM_NR 24
#define MM_PATH "AVX2 (ymm FMA, 4x24 tiles)"
#else
#define MM_MR 4
#define MM_NR 16
#define MM_PATH "portable C (4x16 tiles, the compiler's vectors)"
#endif
#define MM_KC 256  // k per block: a block of Y (MM_KC x MM_NR) stays in the core's L2 cache
#define MM_MC 64   // tiles of rows per task: the block of X they read stays in L2 across tasks

// A strided matrix view: element (i, j) at p[i * rs + j * cs].
typedef struct { const float* p; size_t rs, cs; } MatView;

// out = X (MM_MR x kc, view x) @ Y (kc x MM_NR, row k at y + k * ldy). Per k: one row of Y in
// MM_NR / lanes vector loads, each row of X one broadcast, and MM_MR * MM_NR / lanes FMAs into sums
// that stay in registers for the whole k loop. Not inlined, so that the test can find its FMAs.
#if defined(__AVX512F__) && !defined(MM_PORTABLE)
__attribute__((noinline)) static void mm_tile(float out[MM_MR * MM_NR], int kc, MatView x, const float* y, size_t ldy) {
    __m512 acc[MM_MR][4];
    for (int r = 0; r < MM_MR; r++)
        for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float* yk = y + k * ldy;
        __m512 y0 = _mm512_loadu_ps(yk), y1 = _mm512_loadu_ps(yk + 16);
        __m512 y2 = _mm512_loadu_ps(yk + 32), y3 = _mm512_loadu_ps(yk + 48);
        for (int r = 0; r < MM_MR; r++) {
            __m512 a = _mm512_set1_ps(x.p[r * x.rs + k * x.cs]);
            acc[r][0] = _mm512_fmadd_ps(a, y0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, y1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(a, y2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(a, y3, acc[r][3]);
        }
    }
    for (int r = 0; r < MM_MR; r++)
        for (int j = 0; j < 4; j++) _mm512_storeu_ps(out + r * MM_NR + 16 * j, acc[r][j]);
}
#elif defined(__AVX2__) && defined(__FMA__) && !defined(MM_PORTABLE)
__attribute__((noinline)) static void mm_tile(float out[MM_MR * MM_NR], int kc, MatView x, const float* y, size_t ldy) {
    __m256 acc[MM_MR][3];
    for (int r = 0; r < MM_MR; r++)
        for (int j = 0; j < 3; j++) acc[r][j] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float* yk = y + k * ldy;
        __m256 y0 = _mm256_loadu_ps(yk), y1 = _mm256_loadu_ps(yk + 8), y2 = _mm256_loadu_ps(yk + 16);
        for (int r = 0; r < MM_MR; r++) {
            __m256 a = _mm256_set1_ps(x.p[r * x.rs + k * x.cs]);
            acc[r][0] = _mm256_fmadd_ps(a, y0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, y1, acc[r][1]);
            acc[r][2] = _mm256_fmadd_ps(a, y2, acc[r][2]);
        }
    }
    for (int r = 0; r < MM_MR; r++)
        for (int j = 0; j < 3; j++) _mm256_storeu_ps(out + r * MM_NR + 8 * j, acc[r][j]);
}
#else
__attribute__((noinline)) static void mm_tile(float out[MM_MR * MM_NR], int kc, MatView x, const float* y, size_t ldy) {
    float acc[MM_MR][MM_NR] = {{0.0f}};
    for (int k = 0; k < kc; k++) {
        const float* yk = y + k * ldy;
        for (int r = 0; r < MM_MR; r++) {
            float a = x.p[r * x.rs + k * x.cs];
            for (int j = 0; j < MM_NR; j++) acc[r][j] += a * yk[j];
        }
    }
    memcpy(out, acc, sizeof(acc));
}
#endif

// Z (M x Nc, row stride ldz) = (accumulate ? Z : bias per column or 0) + X @ Y.
// Called by every thread of a parallel region: the tiles are shared out with `omp for nowait`, so
// the callers can run independent products in one region with no barrier between them.
static void matmul_blocked(float* z, size_t ldz, MatView X, MatView Y, const float* bias, int accumulate,
                           int M, int K, int Nc) {
    int tiles = (M + MM_MR - 1) / MM_MR, panels = (Nc + MM_NR - 1) / MM_NR;
    int row_blocks = (tiles + MM_MC - 1) / MM_MC;
#ifdef OMP
    // enough tasks for every thread (splits the rows finer when there are few column panels)
    int want = 2 * omp_get_num_threads();
    if (row_blocks * panels < want) row_blocks = (want + panels - 1) / panels;
    if (row_blocks > tiles) row_blocks = tiles;
#endif
    int tiles_per_block = (tiles + row_blocks - 1) / row_blocks;
    #pragma omp for collapse(2) schedule(static) nowait
    for (int rb = 0; rb < row_blocks; rb++)
        for (int p = 0; p < panels; p++) {
            float ypack[MM_KC * MM_NR];  // Y's block, when it has to be copied (transposed or ragged)
            float xpack[MM_MR * MM_KC];  // X's last tile of rows, zero-padded
            float tile[MM_MR * MM_NR];
            int j0 = p * MM_NR, nr = Nc - j0 < MM_NR ? Nc - j0 : MM_NR;
            int t0 = rb * tiles_per_block, t1 = t0 + tiles_per_block < tiles ? t0 + tiles_per_block : tiles;
            for (int k0 = 0; k0 < K; k0 += MM_KC) {
                int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
                const float* y = Y.p + k0 * Y.rs + j0 * Y.cs;
                size_t ldy = Y.rs;
                if (Y.cs != 1 || nr < MM_NR) {
                    for (int j = 0; j < MM_NR; j++)
                        for (int k = 0; k < kc; k++)
                            ypack[k * MM_NR + j] = j < nr ? y[k * Y.rs + j * Y.cs] : 0.0f;
                    y = ypack;
                    ldy = MM_NR;
                }
                for (int t = t0; t < t1; t++) {
                    int m0 = t * MM_MR, mr = M - m0 < MM_MR ? M - m0 : MM_MR;
                    MatView x = { X.p + m0 * X.rs + k0 * X.cs, X.rs, X.cs };
                    if (mr < MM_MR) {
                        for (int r = 0; r < MM_MR; r++)
                            for (int k = 0; k < kc; k++)
                                xpack[r * kc + k] = r < mr ? x.p[r * x.rs + k * x.cs] : 0.0f;
                        x = (MatView){ xpack, (size_t)kc, 1 };
                    }
                    mm_tile(tile, kc, x, y, ldy);
                    for (int r = 0; r < mr; r++) {
                        float* zr = z + (m0 + r) * ldz + j0;
                        const float* tr = tile + r * MM_NR;
                        if (k0 > 0 || accumulate) for (int j = 0; j < nr; j++) zr[j] += tr[j];
                        else if (bias) for (int j = 0; j < nr; j++) zr[j] = bias[j0 + j] + tr[j];
                        else for (int j = 0; j < nr; j++) zr[j] = tr[j];
                    }
                }
            }
        }
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
    MatView x = { inp, (size_t)C, 1 };     // inp (N,C)
    MatView y = { weight, 1, (size_t)C };  // weight^T (C,OC): copied into ypack block by block
    #pragma omp parallel if ((size_t)N * C * OC >= MM_PARALLEL_MIN_WORK)
    matmul_blocked(out, OC, x, y, bias, 0, N, C, OC);
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
    // the three gradients are independent: one parallel region, no barrier between them
    #pragma omp parallel if (2 * (size_t)N * C * OC >= MM_PARALLEL_MIN_WORK)
    {
        matmul_blocked(dinp, C, (MatView){ dout, (size_t)OC, 1 }, (MatView){ weight, (size_t)C, 1 }, NULL, 1, N, OC, C);
        matmul_blocked(dweight, C, (MatView){ dout, 1, (size_t)OC }, (MatView){ inp, (size_t)C, 1 }, NULL, 1, OC, N, C);
        enum { CH = 256 };  // dbias: columns per task, each summing its rows in order
        #pragma omp for schedule(static) nowait
        for (int o0 = 0; o0 < (dbias ? OC : 0); o0 += CH) {
            int o1 = o0 + CH < OC ? o0 + CH : OC;
            float db[CH] = {0};
            for (int n = 0; n < N; n++)
                for (int o = o0; o < o1; o++) db[o - o0] += dout[(size_t)n * OC + o];
            for (int o = o0; o < o1; o++) dbias[o] += db[o - o0];
        }
    }
}

// ---- Attention

// Causal self-attention. qkv holds q, k, v side by side per position: (B,T,3C), heads of size hs = C/NH.
// preatt[b,h,t,s] = q_t . k_s / sqrt(hs) for s <= t; att = softmax over s; out_t = sum_s att[t,s] v_s.
void attention_forward_reference(float* out, float* preatt, float* att, const float* qkv, int B, int T, int C, int NH) {
    // out (B,T,C), preatt and att (B,NH,T,T), qkv (B,T,3C)
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                float* pre = preatt + (((size_t)b * NH + h) * T + t) * T;
                float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float* k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    float dot = 0.0f;
                    for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                    pre[s] = dot * scale;
                    if (pre[s] > maxv) maxv = pre[s];
                }
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) { a[s] = expf(pre[s] - maxv); sum += a[s]; }
                for (int s = 0; s <= t; s++) a[s] /= sum;
                for (int s = t + 1; s < T; s++) { a[s] = 0.0f; pre[s] = 0.0f; }
                float* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int s = 0; s <= t; s++) {
                    const float* v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
                    for (int i = 0; i < hs; i++) o[i] += a[s] * v[i];
                }
            }
}

// Fast: the same loops with the dot products as vector sums (`omp simd reduction`, a fixed order).
void attention_forward(float* out, float* preatt, float* att, const float* qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(3) schedule(static) if ((size_t)B * NH * T * T * hs >= PARALLEL_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                float* pre = preatt + (((size_t)b * NH + h) * T + t) * T;
                float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int s = 0; s <= t; s++) {
                    const float* k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int i = 0; i < hs; i++) dot += q[i] * k[i];
                    pre[s] = dot * scale;
                    maxv = pre[s] > maxv ? pre[s] : maxv;
                }
                float sum = 0.0f;
                for (int s = 0; s <= t; s++) { a[s] = expf(pre[s] - maxv); sum += a[s]; }
                float inv = 1.0f / sum;
                for (int s = 0; s <= t; s++) a[s] *= inv;
                for (int s = t + 1; s < T; s++) { a[s] = 0.0f; pre[s] = 0.0f; }
                float* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int s = 0; s <= t; s++) {
                    const float* v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
                    float as = a[s];
                    #pragma omp simd
                    for (int i = 0; i < hs; i++) o[i] += as * v[i];
                }
            }
}

// dv_s += att[t,s] dout_t;  datt[t,s] = dout_t . v_s;  dpre = att * (datt - sum_s att*datt)  (softmax);
// dq_t += sum_s dpre[t,s] k_s * scale;  dk_s += dpre[t,s] q_t * scale.
// Parallel over (b, h): every write lands in that head's slice, so threads never collide.
void attention_backward_reference(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
                                  const float* att, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float* da = datt + (((size_t)b * NH + h) * T + t) * T;
                float* dpre = dpreatt + (((size_t)b * NH + h) * T + t) * T;
                const float* d = dout + ((size_t)b * T + t) * C + h * hs;
                for (int s = 0; s <= t; s++) {
                    const float* v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
                    float* dv = dqkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
                    float dot = 0.0f;
                    for (int i = 0; i < hs; i++) { dot += d[i] * v[i]; dv[i] += a[s] * d[i]; }
                    da[s] = dot;
                }
                float ad = 0.0f;
                for (int s = 0; s <= t; s++) ad += a[s] * da[s];
                for (int s = 0; s <= t; s++) dpre[s] = a[s] * (da[s] - ad);
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                float* dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
                for (int s = 0; s <= t; s++) {
                    const float* k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    float* dk = dqkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    float g = dpre[s] * scale;
                    for (int i = 0; i < hs; i++) { dq[i] += g * k[i]; dk[i] += g * q[i]; }
                }
            }
}

// Fast: the same loops, vectorized over the head dimension (dq_t, dk_s, dv_s are distinct rows).
void attention_backward(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
                        const float* att, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(static) if ((size_t)B * NH * T * T * hs >= PARALLEL_MIN_WORK)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float* da = datt + (((size_t)b * NH + h) * T + t) * T;
                float* dpre = dpreatt + (((size_t)b * NH + h) * T + t) * T;
                const float* d = dout + ((size_t)b * T + t) * C + h * hs;
                for (int s = 0; s <= t; s++) {
                    const float* v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
                    float* dv = dqkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
                    float as = a[s], dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int i = 0; i < hs; i++) { dot += d[i] * v[i]; dv[i] += as * d[i]; }
                    da[s] = dot;
                }
                float ad = 0.0f;
                for (int s = 0; s <= t; s++) ad += a[s] * da[s];
                for (int s = 0; s <= t; s++) dpre[s] = a[s] * (da[s] - ad);
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                float* dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
                for (int s = 0; s <= t; s++) {
                    const float* k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    float* dk = dqkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    float g = dpre[s] * scale;
                    #pragma omp simd
                    for (int i = 0; i < hs; i++) { dq[i] += g * k[i]; dk[i] += g * q[i]; }
                }
            }
}

// ---- GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)
void gelu_forward_reference(float* out, const float* inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_forward(float* out, const float* inp, size_t n) {
    #pragma omp parallel for simd schedule(static) if (parallel: n >= PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanh_fast(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward_reference(float* dinp, const float* inp, const float* dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float sech2 = 1.0f - th * th;
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
    }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
    #pragma omp parallel for simd schedule(static) if (parallel: n >= PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanh_fast(u);
        float sech2 = 1.0f - th * th;
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
    }
}

// ---- Residual

void residual_forward(float* out, const float* a, const float* b, size_t n) {
    #pragma omp parallel for simd schedule(static) if (parallel: n >= PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float* da, float* db, const float* dout, size_t n) {
    #pragma omp parallel for simd schedule(static) if (parallel: n >= PARALLEL_MIN_WORK)
    for (size_t i = 0; i < n; i++) { da[i] += dout[i]; db[i] += dout[i]; }
}

// ---- Classifier

// Softmax over the first V of Vp logits and the cross-entropy of each valid target.
// losses[n] = -log probs[n, target[n]], or 0 where target[n] == -1. Returns the sum over rows.
double classifier_forward_reference(float* probs, float* losses, const float* logits, const int* targets, int N, int V, int Vp) {
    // probs, logits (N,Vp); losses, targets (N)
    for (int n = 0; n < N; n++) {
        const float* z = logits + (size_t)n * Vp;
        float* p = probs + (size_t)n * Vp;
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) if (z[v] > maxv) maxv = z[v];
        float sum = 0.0f;
        for (int v = 0; v < V; v++) { p[v] = expf(z[v] - maxv); sum += p[v]; }
        for (int v = 0; v < V; v++) p[v] /= sum;
        for (int v = V; v < Vp; v++) p[v] = 0.0f;
        losses[n] = (targets && targets[n] != -1) ? -logf(p[targets[n]]) : 0.0f;
    }
    double total = 0.0;
    for (int n = 0; n < N; n++) total += losses[n];
    return total;
}

// Fast: vector max, vector exp and sum (fixed-order vector reductions), one multiply to normalize.
// The loss comes from the logits, -log p = log(sum) - (z - max), not from the rounded probability.
double classifier_forward(float* probs, float* losses, const float* logits, const int* targets, int N, int V, int Vp) {
    #pragma omp parallel for schedule(static) if ((size_t)N * Vp >= PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float* z = logits + (size_t)n * Vp;
        float* p = probs + (size_t)n * Vp;
        float maxv = -INFINITY;
        #pragma omp simd reduction(max:maxv)
        for (int v = 0; v < V; v++) maxv = z[v] > maxv ? z[v] : maxv;
        float sum = 0.0f;
        #pragma omp simd reduction(+:sum)
        for (int v = 0; v < V; v++) { p[v] = exp_fast(z[v] - maxv); sum += p[v]; }
        float inv = 1.0f / sum;
        #pragma omp simd
        for (int v = 0; v < V; v++) p[v] *= inv;
        for (int v = V; v < Vp; v++) p[v] = 0.0f;
        losses[n] = (targets && targets[n] != -1) ? logf(sum) - (z[targets[n]] - maxv) : 0.0f;
    }
    double total = 0.0;
    for (int n = 0; n < N; n++) total += losses[n];  // fixed order: deterministic
    return total;
}

// d(sum of losses)/dlogits = probs - onehot(target) for valid rows (dloss = 1 each), 0 for masked
// rows and for the padded columns. The 1/N normalization happens once, at the update.
void classifier_backward(float* dlogits, const float* probs, const int* targets, int N, int V, int Vp) {
    #pragma omp parallel for schedule(static) if ((size_t)N * Vp >= PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        float* d = dlogits + (size_t)n * Vp;
        const float* p = probs + (size_t)n * Vp;
        if (targets[n] == -1) { memset(d, 0, (size_t)Vp * sizeof(float)); continue; }
        for (int v = 0; v < V; v++) d[v] = p[v];
        for (int v = V; v < Vp; v++) d[v] = 0.0f;
        d[targets[n]] -= 1.0f;
    }
}

// ----------------------------------------------------------------------------
// The model

#define FLOAT_VIEW_(name, numel, decay, shape) float* name;
typedef struct { GPT2_PARAMETER_TENSORS(FLOAT_VIEW_) } ParameterTensors;
_Static_assert(sizeof(ParameterTensors) == NUM_PARAMETER_TENSORS * sizeof(float*), "one pointer per tensor");

// Activations of one micro-step, X(name, numel, shape) with B, T, C, NH, L, Vp in scope.
#define GPT2_ACTIVATIONS(X) \
    X(encoded,   B * T * C,          "(B,T,C)")      \
    X(ln1,       L * B * T * C,      "(L,B,T,C)")    \
    X(ln1_mean,  L * B * T,          "(L,B,T)")      \
    X(ln1_rstd,  L * B * T,          "(L,B,T)")      \
    X(qkv,       L * B * T * 3 * C,  "(L,B,T,3C)")   \
    X(atty,      L * B * T * C,      "(L,B,T,C)")    \
    X(preatt,    L * B * NH * T * T, "(L,B,NH,T,T)") \
    X(att,       L * B * NH * T * T, "(L,B,NH,T,T)") \
    X(attproj,   L * B * T * C,      "(L,B,T,C)")    \
    X(residual2, L * B * T * C,      "(L,B,T,C)")    \
    X(ln2,       L * B * T * C,      "(L,B,T,C)")    \
    X(ln2_mean,  L * B * T,          "(L,B,T)")      \
    X(ln2_rstd,  L * B * T,          "(L,B,T)")      \
    X(fch,       L * B * T * 4 * C,  "(L,B,T,4C)")   \
    X(fch_gelu,  L * B * T * 4 * C,  "(L,B,T,4C)")   \
    X(fcproj,    L * B * T * C,      "(L,B,T,C)")    \
    X(residual3, L * B * T * C,      "(L,B,T,C)")    \
    X(lnf,       B * T * C,          "(B,T,C)")      \
    X(lnf_mean,  B * T,              "(B,T)")        \
    X(lnf_rstd,  B * T,              "(B,T)")        \
    X(logits,    B * T * Vp,         "(B,T,Vp)")     \
    X(probs,     B * T * Vp,         "(B,T,Vp)")     \
    X(losses,    B * T,              "(B,T)")

#define ACT_VIEW_(name, numel, shape) float* name;
typedef struct { GPT2_ACTIVATIONS(ACT_VIEW_) } ActivationTensors;
#define ACT_COUNT_(name, numel, shape) +1
enum { NUM_ACTIVATION_TENSORS = 0 GPT2_ACTIVATIONS(ACT_COUNT_) };

static size_t point_activations(ActivationTensors* a, float* base, const GPT2Config* c, int B, int T) {
    size_t C = c->channels, NH = c->num_heads, L = c->num_layers, Vp = c->padded_vocab_size;
    float** ptrs = (float**)a;
    size_t total = 0, i = 0;
#define ACT_POINT_(name, numel, shape) ptrs[i++] = base ? base + total : NULL; total += (numel);
    GPT2_ACTIVATIONS(ACT_POINT_)
#undef ACT_POINT_
    return total;
}

typedef struct {
    GPT2Config config;
    int B, T;
    size_t num_params, shard_size;
    int world;                      // P: the buffers hold shard_size * P elements
    float* params_memory;           // (S*P): params, with the padding tail zero
    float* grads_memory;            // (S*P): gradients summed over the window's micro-steps
    ParameterTensors params, grads; // named views into the two buffers
    float* grad_shard;              // (S)
    float* grad_shard_acc;          // (S) with sync-each-micro-step
    float* m_memory;                // AdamW first moment, for the owned range
    float* v_memory;                // AdamW second moment
    size_t opt_count;
    float* acts_memory;
    float* grad_acts_memory;
    ActivationTensors acts, grad_acts;
    const int* inputs;              // the micro-step's batch, kept for the backward pass
    const int* targets;
} GPT2;

// Forward pass over (B,T) inputs. With targets, returns the summed cross-entropy of valid targets.
double gpt2_forward(GPT2* model, const int* inputs, const int* targets) {
    const GPT2Config* c = &model->config;
    int B = model->B, T = model->T, C = c->channels, NH = c->num_heads, V = c->vocab_size, Vp = c->padded_vocab_size;
    int BT = B * T;
    ParameterTensors* p = &model->params;
    ActivationTensors* a = &model->acts;
    model->inputs = inputs;
    model->targets = targets;
    encoder_forward(a->encoded, inputs, p->wte, p->wpe, B, T, C);
    float* residual = a->encoded;
    for (int l = 0; l < c->num_layers; l++) {
        size_t btc = (size_t)BT * C, att_n = (size_t)B * NH * T * T;
        float* ln1 = a->ln1 + l * btc;
        float* qkv = a->qkv + l * 3 * btc;
        float* atty = a->atty + l * btc;
        float* attproj = a->attproj + l * btc;
        float* residual2 = a->residual2 + l * btc;
        float* ln2 = a->ln2 + l * btc;
        float* fch = a->fch + l * 4 * btc;
        float* fch_gelu = a->fch_gelu + l * 4 * btc;
        float* fcproj = a->fcproj + l * btc;
        float* residual3 = a->residual3 + l * btc;
        layernorm_forward(ln1, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, residual, p->ln1w + l * C, p->ln1b + l * C, BT, C);
        matmul_forward(qkv, ln1, p->qkvw + (size_t)l * 3 * C * C, p->qkvb + l * 3 * C, BT, C, 3 * C);
        attention_forward(atty, a->preatt + l * att_n, a->att + l * att_n, qkv, B, T, C, NH);
        matmul_forward(attproj, atty, p->attprojw + (size_t)l * C * C, p->attprojb + l * C, BT, C, C);
        residual_forward(residual2, residual, attproj, btc);
        layernorm_forward(ln2, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, residual2, p->ln2w + l * C, p->ln2b + l * C, BT, C);
        matmul_forward(fch, ln2, p->fcw + (size_t)l * 4 * C * C, p->fcb + l * 4 * C, BT, C, 4 * C);
        gelu_forward(fch_gelu, fch, 4 * btc);
        matmul_forward(fcproj, fch_gelu, p->fcprojw + (size_t)l * 4 * C * C, p->fcprojb + l * C, BT, 4 * C, C);
        residual_forward(residual3, residual2, fcproj, btc);
        residual = residual3;
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, residual, p->lnfw, p->lnfb, BT, C);
    matmul_forward(a->logits, a->lnf, p->wte, NULL, BT, C, Vp);  // LM head tied to the token embedding
    return classifier_forward(a->probs, a->losses, a->logits, targets, BT, V, Vp);
}

// Backward pass of the last forward: adds d(sum of valid losses)/dparams into model->grads.
void gpt2_backward(GPT2* model) {
    const GPT2Config* c = &model->config;
    int B = model->B, T = model->T, C = c->channels, NH = c->num_heads, V = c->vocab_size, Vp = c->padded_vocab_size;
    int BT = B * T, L = c->num_layers;
    ParameterTensors* p = &model->params;
    ParameterTensors* g = &model->grads;
    ActivationTensors* a = &model->acts;
    ActivationTensors* d = &model->grad_acts;
    // Activation gradients are per micro-step: start from zero (parameter gradients keep accumulating).
    memset(model->grad_acts_memory, 0, point_activations(d, NULL, c, B, T) * sizeof(float));
    point_activations(d, model->grad_acts_memory, c, B, T);

    classifier_backward(d->logits, a->probs, model->targets, BT, V, Vp);
    matmul_backward(d->lnf, g->wte, NULL, d->logits, a->lnf, p->wte, BT, C, Vp);
    float* residual = L > 0 ? a->residual3 + (size_t)(L - 1) * BT * C : a->encoded;
    float* dresidual = L > 0 ? d->residual3 + (size_t)(L - 1) * BT * C : d->encoded;
    layernorm_backward(dresidual, g->lnfw, g->lnfb, d->lnf, residual, p->lnfw, a->lnf_mean, a->lnf_rstd, BT, C);
    for (int l = L - 1; l >= 0; l--) {
        size_t btc = (size_t)BT * C, att_n = (size_t)B * NH * T * T;
        float* residual_in = l == 0 ? a->encoded : a->residual3 + (l - 1) * btc;
        float* dresidual_in = l == 0 ? d->encoded : d->residual3 + (l - 1) * btc;
        float* dresidual3 = d->residual3 + l * btc;
        float* dresidual2 = d->residual2 + l * btc;
        // residual3 = residual2 + fcproj
        residual_backward(dresidual2, d->fcproj + l * btc, dresidual3, btc);
        matmul_backward(d->fch_gelu + l * 4 * btc, g->fcprojw + (size_t)l * 4 * C * C, g->fcprojb + l * C,
                        d->fcproj + l * btc, a->fch_gelu + l * 4 * btc, p->fcprojw + (size_t)l * 4 * C * C, BT, 4 * C, C);
        gelu_backward(d->fch + l * 4 * btc, a->fch + l * 4 * btc, d->fch_gelu + l * 4 * btc, 4 * btc);
        matmul_backward(d->ln2 + l * btc, g->fcw + (size_t)l * 4 * C * C, g->fcb + l * 4 * C,
                        d->fch + l * 4 * btc, a->ln2 + l * btc, p->fcw + (size_t)l * 4 * C * C, BT, C, 4 * C);
        layernorm_backward(dresidual2, g->ln2w + l * C, g->ln2b + l * C, d->ln2 + l * btc, a->residual2 + l * btc,
                           p->ln2w + l * C, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, BT, C);
        // residual2 = residual_in + attproj
        residual_backward(dresidual_in, d->attproj + l * btc, dresidual2, btc);
        matmul_backward(d->atty + l * btc, g->attprojw + (size_t)l * C * C, g->attprojb + l * C,
                        d->attproj + l * btc, a->atty + l * btc, p->attprojw + (size_t)l * C * C, BT, C, C);
        attention_backward(d->qkv + l * 3 * btc, d->preatt + l * att_n, d->att + l * att_n, d->atty + l * btc,
                           a->qkv + l * 3 * btc, a->att + l * att_n, B, T, C, NH);
        matmul_backward(d->ln1 + l * btc, g->qkvw + (size_t)l * 3 * C * C, g->qkvb + l * 3 * C,
                        d->qkv + l * 3 * btc, a->ln1 + l * btc, p->qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C);
        layernorm_backward(dresidual_in, g->ln1w + l * C, g->ln1b + l * C, d->ln1 + l * btc, residual_in,
                           p->ln1w + l * C, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, BT, C);
    }
    encoder_backward(g->wte, g->wpe, d->encoded, model->inputs, B, T, C);
}

// Allocates everything for micro-batches of (B,T) on a rank of `world`; params from host fp32.
void gpt2_build(GPT2* model, const GPT2Config* c, const float* init_params, int B, int T, int world,
                int zero_stage, int sync_each_microstep) {
    memset(model, 0, sizeof(*model));
    model->config = *c;
    model->B = B;
    model->T = T;
    model->num_params = gpt2_num_parameters(c);
    model->world = world;
    model->shard_size = (model->num_params + world - 1) / world;  // padded so P divides the buffer
    size_t padded = model->shard_size * world;
    model->params_memory = (float*)callocCheck(padded, sizeof(float));
    model->grads_memory = (float*)callocCheck(padded, sizeof(float));
    memcpy(model->params_memory, init_params, model->num_params * sizeof(float));
    gpt2_point_views(&model->params, model->params_memory, sizeof(float), c);
    gpt2_point_views(&model->grads, model->grads_memory, sizeof(float), c);
    // With one rank the shard is the whole buffer: alias it, so the reduce-scatter copies nothing
    // and the memory of a second gradient copy is saved.
    model->grad_shard = world == 1 ? model->grads_memory : (float*)callocCheck(model->shard_size, sizeof(float));
    if (sync_each_microstep) model->grad_shard_acc = (float*)callocCheck(model->shard_size, sizeof(float));
    model->opt_count = zero_stage == 1 ? model->shard_size : padded;
    model->m_memory = (float*)callocCheck(model->opt_count, sizeof(float));
    model->v_memory = (float*)callocCheck(model->opt_count, sizeof(float));
    size_t num_acts = point_activations(&model->acts, NULL, c, B, T);
    model->acts_memory = (float*)calloc(num_acts, sizeof(float));
    model->grad_acts_memory = (float*)calloc(num_acts, sizeof(float));
    // The activations are the allocation that grows with the flags: say which flags when it fails.
    if (model->acts_memory == NULL || model->grad_acts_memory == NULL)
        die("flags -b %d -t %d: the activations and their gradients need 2 x %zu bytes, more than this machine "
            "can allocate (give a smaller -b or -t)", B, T, num_acts * sizeof(float));
    point_activations(&model->acts, model->acts_memory, c, B, T);
    point_activations(&model->grad_acts, model->grad_acts_memory, c, B, T);
}

void gpt2_free(GPT2* model) {
    if (model->grad_shard != model->grads_memory) free(model->grad_shard);  // one rank: an alias
    free(model->params_memory);
    free(model->grads_memory);
    free(model->grad_shard_acc);
    free(model->m_memory); free(model->v_memory); free(model->acts_memory); free(model->grad_acts_memory);
}

// ----------------------------------------------------------------------------
// The Trainable: what llmc/window.h needs from the model, on host memory.

static GPT2* self_of(Trainable* tr) { return (GPT2*)tr->self; }

static void cpu_zero_grads(Trainable* tr) {
    GPT2* m = self_of(tr);
    memset(m->grads_memory, 0, m->shard_size * m->world * sizeof(float));
}

static double cpu_forward_backward(Trainable* tr, const int* inputs, const int* targets) {
    double loss_sum = gpt2_forward(self_of(tr), inputs, targets);
    gpt2_backward(self_of(tr));
    return loss_sum;
}

static double cpu_forward_loss(Trainable* tr, const int* inputs, const int* targets) {
    return gpt2_forward(self_of(tr), inputs, targets);
}

static void cpu_token_losses(Trainable* tr, const int* inputs, const int* targets, float* losses) {
    GPT2* m = self_of(tr);
    gpt2_forward(m, inputs, targets);
    memcpy(losses, m->acts.losses, (size_t)m->B * m->T * sizeof(float));
}

// Logits for the token after position t-1 of row 0 (the other rows are ignored).
static void cpu_next_token_logits(Trainable* tr, const int* tokens, int t, float* logits) {
    GPT2* m = self_of(tr);
    gpt2_forward(m, tokens, NULL);
    memcpy(logits, m->acts.logits + (size_t)(t - 1) * m->config.padded_vocab_size, m->config.vocab_size * sizeof(float));
}

static void cpu_zero_shard_acc(Trainable* tr) {
    memset(self_of(tr)->grad_shard_acc, 0, tr->shard_size * sizeof(float));
}

static void cpu_accumulate_shard(Trainable* tr) {
    GPT2* m = self_of(tr);
    for (size_t i = 0; i < m->shard_size; i++) m->grad_shard_acc[i] += m->grad_shard[i];
}

// Sum of squares in double, in fixed-size chunks summed in order: deterministic for any thread count.
#define SUMSQ_CHUNK 65536
static double cpu_sumsq(Trainable* tr, const void* grad, size_t count) {
    (void)tr;
    const float* g = (const float*)grad;
    size_t chunks = (count + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double* partial = (double*)callocCheck(chunks, sizeof(double));
    #pragma omp parallel for schedule(static)
    for (size_t ch = 0; ch < chunks; ch++) {
        size_t end = (ch + 1) * SUMSQ_CHUNK < count ? (ch + 1) * SUMSQ_CHUNK : count;
        double s = 0.0;
        for (size_t i = ch * SUMSQ_CHUNK; i < end; i++) s += (double)g[i] * g[i];
        partial[ch] = s;
    }
    double total = 0.0;
    for (size_t ch = 0; ch < chunks; ch++) total += partial[ch];
    free(partial);
    return total;
}

// AdamW as PyTorch's, on one tensor's slice; the gradient arrives as G and is scaled by clip/N here.
static void cpu_adamw(Trainable* tr, const AdamWArgs* a) {
    GPT2* model = self_of(tr);
    const float* grad = (const float*)a->grad;
    float* p = model->params_memory + a->param_offset;
    float* m = model->m_memory + a->state_offset;
    float* v = model->v_memory + a->state_offset;
    float bc1 = 1.0f - powf(a->beta1, (float)a->t), bc2 = 1.0f - powf(a->beta2, (float)a->t);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < a->count; i++) {
        float g = grad[i] * a->grad_scale;
        m[i] = a->beta1 * m[i] + (1.0f - a->beta1) * g;
        v[i] = a->beta2 * v[i] + (1.0f - a->beta2) * g * g;
        float mhat = m[i] / bc1, vhat = v[i] / bc2;
        p[i] -= a->lr * (mhat / (sqrtf(vhat) + a->eps) + a->weight_decay * p[i]);
    }
}

static void cpu_grads_to_host(Trainable* tr, const void* grad, size_t count, float* out) {
    (void)tr;
    memcpy(out, grad, count * sizeof(float));
}

static void cpu_params_to_host(Trainable* tr, float* out) {
    memcpy(out, self_of(tr)->params_memory, tr->num_params * sizeof(float));
}

static void cpu_params_from_host(Trainable* tr, const float* in) {
    memcpy(self_of(tr)->params_memory, in, tr->num_params * sizeof(float));
}

// Optimizer state of this rank: m then v over its range.
static size_t cpu_opt_state_bytes(Trainable* tr) { return 2 * self_of(tr)->opt_count * sizeof(float); }

static void cpu_opt_state_to_host(Trainable* tr, void* out) {
    GPT2* m = self_of(tr);
    memcpy(out, m->m_memory, m->opt_count * sizeof(float));
    memcpy((float*)out + m->opt_count, m->v_memory, m->opt_count * sizeof(float));
}

static void cpu_opt_state_from_host(Trainable* tr, const void* in) {
    GPT2* m = self_of(tr);
    memcpy(m->m_memory, in, m->opt_count * sizeof(float));
    memcpy(m->v_memory, (const float*)in + m->opt_count, m->opt_count * sizeof(float));
}

Trainable gpt2_trainable(GPT2* m) {
    Trainable tr;
    memset(&tr, 0, sizeof(tr));
    tr.self = m;
    tr.config = m->config;
    tr.num_params = m->num_params;
    tr.shard_size = m->shard_size;
    tr.B = m->B;
    tr.T = m->T;
    tr.grad_type = DTYPE_F32;
    tr.param_type = DTYPE_F32;
    tr.params = m->params_memory;
    tr.grads = m->grads_memory;
    tr.grad_shard = m->grad_shard;
    tr.grad_shard_acc = m->grad_shard_acc;
    tr.peak_flops = 0.0;  // no MFU on the CPU
    tr.zero_grads = cpu_zero_grads;
    tr.forward_backward = cpu_forward_backward;
    tr.forward_loss = cpu_forward_loss;
    tr.token_losses = cpu_token_losses;
    tr.next_token_logits = cpu_next_token_logits;
    tr.zero_shard_acc = cpu_zero_shard_acc;
    tr.accumulate_shard = cpu_accumulate_shard;
    tr.sumsq = cpu_sumsq;
    tr.adamw = cpu_adamw;
    tr.grads_to_host = cpu_grads_to_host;
    tr.params_to_host = cpu_params_to_host;
    tr.params_from_host = cpu_params_from_host;
    tr.opt_state_bytes = cpu_opt_state_bytes;
    tr.opt_state_to_host = cpu_opt_state_to_host;
    tr.opt_state_from_host = cpu_opt_state_from_host;
    return tr;
}

// ----------------------------------------------------------------------------
#ifndef TESTING
int main(int argc, char** argv) {
    Comm comm;
    comm_init(&comm, &argc, &argv);
    TrainOptions opt;
    parse_args_on_every_rank(&opt, argc, argv, &comm);
    if (opt.grad_bf16) die("flag -grad_bf16 is for train_gpt2cu: the CPU trainer keeps fp32 gradients");
    if (opt.plan) die("flag -plan is for train_gpt2cu: it prints the GPU memory plan");
    GPT2Config config;
    float* init = load_initial_parameters(&opt, &config, &comm);
    GPT2 model;
    gpt2_build(&model, &config, init, opt.B, opt.T, comm.world, opt.zero_stage, opt.sync_each_microstep);
    free(init);
    if (comm.rank == 0) {
        gpt2_print_config(&config, model.num_params);
#ifdef OMP
        printf("threads: %d OpenMP thread(s) per rank, %d rank(s)\n", omp_get_max_threads(), comm.world);
#endif
        printf("vector path: matmul %s\n", MM_PATH);
    }
    Trainable tr = gpt2_trainable(&model);
    int rc = run_training(&opt, &tr, &comm);  // 0, or EXIT_STOPPED(_UNSAVED) when told to stop
    gpt2_free(&model);
    comm_finalize(&comm);
    return rc;
}
#endif
