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
OpenMP's static schedule, and every reduction has a fixed order, so results are deterministic for a
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

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
    // out (B,T,C), inp (B,T), wte (V,C), wpe (maxT,C)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* we = wte + (size_t)inp[b * T + t] * C;
            const float* pe = wpe + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] = we[i] + pe[i];
        }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float* d = dout + ((size_t)b * T + t) * C;
            float* dwe = dwte + (size_t)inp[b * T + t] * C;
            float* dpe = dwpe + (size_t)t * C;
            for (int i = 0; i < C; i++) { dwe[i] += d[i]; dpe[i] += d[i]; }
        }
}

// y = (x - mean) * rstd * w + b, per (b,t) row; saves mean and rstd for the backward pass.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C) {
    // out, inp (N,C) with N = B*T; mean, rstd (N)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float* x = inp + (size_t)n * C;
        float m = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        float var = 0.0f;
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
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
    #pragma omp parallel for schedule(static)
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
        }
    }
    // Parameter gradients sum over rows: one thread per channel keeps the order fixed.
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        float dw = 0.0f, db = 0.0f;
        for (int n = 0; n < N; n++) {
            float xhat = (inp[(size_t)n * C + i] - mean[n]) * rstd[n];
            dw += dout[(size_t)n * C + i] * xhat;
            db += dout[(size_t)n * C + i];
        }
        dweight[i] += dw;
        dbias[i] += db;
    }
}

// out = inp @ weight^T + bias, weight stored (OC, C) as nn.Linear does.
// The straightforward loop is:  out[n,o] = bias[o] + sum_i inp[n,i] * weight[o,i].
// The version below computes a tile of MM_ROWS rows per pass over a weight row, so each weight
// row is read from memory once per tile instead of once per row.
#define MM_ROWS 8
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C, int OC) {
    // out (N,OC), inp (N,C), weight (OC,C), bias (OC) or NULL
    int tiles = (N + MM_ROWS - 1) / MM_ROWS;
    #pragma omp parallel for schedule(static)
    for (int tile = 0; tile < tiles; tile++) {
        int n0 = tile * MM_ROWS;
        int rows = N - n0 < MM_ROWS ? N - n0 : MM_ROWS;
        for (int o = 0; o < OC; o++) {
            const float* w = weight + (size_t)o * C;
            float acc[MM_ROWS];
            for (int r = 0; r < MM_ROWS; r++) acc[r] = bias ? bias[o] : 0.0f;
            for (int r = 0; r < rows; r++) {
                const float* x = inp + (size_t)(n0 + r) * C;
                float s = 0.0f;
                #pragma omp simd reduction(+:s)
                for (int i = 0; i < C; i++) s += x[i] * w[i];
                acc[r] += s;
            }
            for (int r = 0; r < rows; r++) out[(size_t)(n0 + r) * OC + o] = acc[r];
        }
    }
}

// dinp += dout @ weight;  dweight += dout^T @ inp;  dbias += sum over rows of dout
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float* d = dout + (size_t)n * OC;
        float* dx = dinp + (size_t)n * C;
        for (int o = 0; o < OC; o++) {
            const float* w = weight + (size_t)o * C;
            float g = d[o];
            #pragma omp simd
            for (int i = 0; i < C; i++) dx[i] += g * w[i];
        }
    }
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++) {
        float* dw = dweight + (size_t)o * C;
        float db = 0.0f;
        for (int n = 0; n < N; n++) {
            const float* x = inp + (size_t)n * C;
            float g = dout[(size_t)n * OC + o];
            db += g;
            #pragma omp simd
            for (int i = 0; i < C; i++) dw[i] += g * x[i];
        }
        if (dbias) dbias[o] += db;
    }
}

// Causal self-attention. qkv holds q, k, v side by side per position: (B,T,3C), heads of size hs = C/NH.
// preatt[b,h,t,s] = q_t . k_s / sqrt(hs) for s <= t; att = softmax over s; out_t = sum_s att[t,s] v_s.
void attention_forward(float* out, float* preatt, float* att, const float* qkv, int B, int T, int C, int NH) {
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

// dv_s += att[t,s] dout_t;  datt[t,s] = dout_t . v_s;  dpre = att * (datt - sum_s att*datt)  (softmax);
// dq_t += sum_s dpre[t,s] k_s * scale;  dk_s += dpre[t,s] q_t * scale.
// Parallel over (b, h): every write lands in that head's slice, so threads never collide.
void attention_backward(float* dqkv, float* dpreatt, float* datt, const float* dout, const float* qkv,
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

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)
void gelu_forward(float* out, const float* inp, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + 0.044715f * x * x * x)));
    }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float sech2 = 1.0f - th * th;
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
    }
}

void residual_forward(float* out, const float* a, const float* b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void residual_backward(float* da, float* db, const float* dout, size_t n) {
    for (size_t i = 0; i < n; i++) { da[i] += dout[i]; db[i] += dout[i]; }
}

// Softmax over the first V of Vp logits and the cross-entropy of each valid target.
// losses[n] = -log probs[n, target[n]], or 0 where target[n] == -1. Returns the sum over rows.
double classifier_forward(float* probs, float* losses, const float* logits, const int* targets, int N, int V, int Vp) {
    // probs, logits (N,Vp); losses, targets (N)
    #pragma omp parallel for schedule(static)
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
    for (int n = 0; n < N; n++) total += losses[n];  // fixed order: deterministic
    return total;
}

// d(sum of losses)/dlogits = probs - onehot(target) for valid rows (dloss = 1 each), 0 for masked
// rows and for the padded columns. The 1/N normalization happens once, at the update.
void classifier_backward(float* dlogits, const float* probs, const int* targets, int N, int V, int Vp) {
    #pragma omp parallel for schedule(static)
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
    model->grad_shard = (float*)callocCheck(model->shard_size, sizeof(float));
    if (sync_each_microstep) model->grad_shard_acc = (float*)callocCheck(model->shard_size, sizeof(float));
    model->opt_count = zero_stage == 1 ? model->shard_size : padded;
    model->m_memory = (float*)callocCheck(model->opt_count, sizeof(float));
    model->v_memory = (float*)callocCheck(model->opt_count, sizeof(float));
    size_t num_acts = point_activations(&model->acts, NULL, c, B, T);
    model->acts_memory = (float*)callocCheck(num_acts, sizeof(float));
    model->grad_acts_memory = (float*)callocCheck(num_acts, sizeof(float));
    point_activations(&model->acts, model->acts_memory, c, B, T);
    point_activations(&model->grad_acts, model->grad_acts_memory, c, B, T);
}

void gpt2_free(GPT2* model) {
    free(model->params_memory); free(model->grads_memory); free(model->grad_shard); free(model->grad_shard_acc);
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
    parse_args(&opt, argc, argv);
    if (opt.grad_bf16) die("flag -grad_bf16 is for train_gpt2cu: the CPU trainer keeps fp32 gradients");
    GPT2Config config;
    float* init = load_initial_parameters(&opt, &config);
    GPT2 model;
    gpt2_build(&model, &config, init, opt.B, opt.T, comm.world, opt.zero_stage, opt.sync_each_microstep);
    free(init);
    if (comm.rank == 0) {
        gpt2_print_config(&config, model.num_params);
#ifdef OMP
        printf("threads: %d OpenMP thread(s) per rank, %d rank(s)\n", omp_get_max_threads(), comm.world);
#endif
    }
    Trainable tr = gpt2_trainable(&model);
    run_training(&opt, &tr, &comm);
    gpt2_free(&model);
    comm_finalize(&comm);
    return 0;
}
#endif
