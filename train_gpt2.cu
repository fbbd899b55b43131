/*
train_gpt2.cu: GPT-2 training on NVIDIA GPUs, one process per GPU, NCCL between them. The same program
as train_gpt2.c: the window (llmc/window.h), the training loop (llmc/trainer.h), the flags, the files and
the semantics are shared; only the device math below differs.

Read it in this order:
  1. the model: one bf16 parameter buffer with named views (the tensor table of llmc/gpt2.h), the
     activations (one allocation, buffers reused where their lifetimes do not overlap), forward and
     backward built from the kernels in llmc/cuda_*.cuh;
  2. the Trainable: how the model plugs into the shared window;
  3. main: MPI (if launched by mpirun), flags, initial parameters on the host, NCCL, the GPU model,
     llmc/trainer.h's run_training.
-plan's memory plan (the sizes gpt2_build allocates) and the device report are in llmc/cuda_plan.cuh.

Precision (mixed, as llm.c):
  - parameters and activations bf16; LayerNorm statistics, losses and all reductions fp32;
  - the gradient buffer fp32 (default) or bf16 (-grad_bf16 1). Weight gradients are summed straight into
    it by the GEMMs and kernels (+=), over the K micro-steps of a window; the 1/N of the window, the
    clipping and AdamW follow in the window (llmc/window.h);
  - AdamW keeps fp32 master weights, m and v for this rank's range of the parameters only (ZeRO-1:
    opt_offset, opt_count); updated parameters are written back to bf16 with stochastic rounding whose
    noise is keyed by (step, global parameter index), so runs are reproducible bit for bit and the
    bf16 weights do not depend on how the parameters are sharded over ranks.
All kernels are deterministic (no float atomics), so a run repeats bit for bit on the same GPU type.

The fp32 build (-DENABLE_FP32: make train_gpt2fp32cu; make cpucuda-fp32 for the CPU emulation) makes
floatX float (llmc/cuda_common.cuh): parameters and activations fp32, fp32 cuBLASLt operands, AdamW
writes its fp32 result without rounding, -grad_bf16 is refused. Its gradients then match train_gpt2.c's
to fp32 precision (dev/test/test_cuda_fp32.py), which bf16's rounding noise would hide.

Activation gradients follow the kernels' contracts (see each header): matmul_backward OVERWRITES its
input gradient, attention_backward and gelu_backward overwrite, layernorm_backward and
encoder_backward ACCUMULATE. The residual stream's gradient lives in one buffer (dresidual) that the
LayerNorm backwards add into.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "llmc/utils.h"
#include "llmc/gpt2.h"
#include "llmc/comm.h"
#include "llmc/window.h"
#include "llmc/trainer.h"
#include "llmc/cuda_common.cuh"
#include "llmc/cuda_encoder.cuh"
#include "llmc/cuda_layernorm.cuh"
#include "llmc/cuda_matmul.cuh"
#include "llmc/cuda_attention.cuh"
#include "llmc/cuda_flash_attention.cuh"
#include "llmc/cuda_gelu.cuh"
#include "llmc/cuda_classifier.cuh"
#include "llmc/cuda_adamw.cuh"
#include "llmc/cuda_global_norm.cuh"
#include "llmc/comm_nccl.cuh"

// ----------------------------------------------------------------------------
// Parameters: one pointer per tensor of the table in llmc/gpt2.h, of element type T.

#define TENSOR_VIEW_(name, numel, decay, shape) T* name;
template<typename T> struct ParameterViews { GPT2_PARAMETER_TENSORS(TENSOR_VIEW_) };
static_assert(sizeof(ParameterViews<floatX>) == NUM_PARAMETER_TENSORS * sizeof(void*), "one pointer per tensor");

// ----------------------------------------------------------------------------
// Activations of one micro-step: X(name, element type, numel), with B, T, BT, C, NH, L, Vp and
// OUT (see below) in scope. Kept for the backward: everything per layer (L * ...). Scratch, reused:
//   output    (B,T,*): qkv before the attention (which clobbers it), the attention and MLP projections
//             until the fused residual+LayerNorm consumes them, the logits, then dlogits (the fused
//             classifier writes them in place); in the backward, after the LM head, dqkvr and datt.
//   dresidual (B,T,C): the residual stream's gradient; dbtc (B,T,C), dbt4c (B,T,4C): per-layer gradients.
// The attention (-attn) decides two sizes: ATT, the (B,NH,T,T) probabilities of the materialized
// attention (0 with flash attention), and LSE, flash attention's logsumexp per row (0 without). With
// flash, qkvr holds qkv (B,T,3C) as the qkv matmul wrote it (the kernels read it in place); without,
// q, k, v split by head.
#define GPU_ACTIVATIONS(X) \
    X(encoded,   floatX, BT * C)              \
    X(ln1,       floatX, L * BT * C)          \
    X(ln1_mean,  float,  L * BT)              \
    X(ln1_rstd,  float,  L * BT)              \
    X(qkvr,      floatX, L * BT * 3 * C)      \
    X(att,       floatX, ATT)                 \
    X(lse,       float,  LSE)                 \
    X(atty,      floatX, L * BT * C)          \
    X(residual2, floatX, L * BT * C)          \
    X(ln2,       floatX, L * BT * C)          \
    X(ln2_mean,  float,  L * BT)              \
    X(ln2_rstd,  float,  L * BT)              \
    X(fch,       floatX, L * BT * 4 * C)      \
    X(fch_gelu,  floatX, L * BT * 4 * C)      \
    X(residual3, floatX, L * BT * C)          \
    X(lnf,       floatX, BT * C)              \
    X(lnf_mean,  float,  BT)                  \
    X(lnf_rstd,  float,  BT)                  \
    X(losses,    float,  BT)                  \
    X(output,    floatX, OUT)                 \
    X(dresidual, floatX, BT * C)              \
    X(dbtc,      floatX, BT * C)              \
    X(dbt4c,     floatX, BT * 4 * C)

#define ACT_FIELD_(name, type, numel) type* name;
typedef struct { GPU_ACTIVATIONS(ACT_FIELD_) } Activations;
#define ACT_NAME_(name, type, numel) #name,
static const char* const ACTIVATION_NAMES[] = { GPU_ACTIVATIONS(ACT_NAME_) };
#define NUM_ACTIVATIONS ((int)(sizeof(ACTIVATION_NAMES) / sizeof(ACTIVATION_NAMES[0])))

#define ACT_ALIGN 256   // bytes: every buffer starts 256-byte aligned (128-bit loads, cuBLASLt)
static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// In the backward the output scratch holds dqkvr (3*BT*C) and, after it, datt (B*NH*T*T); with flash
// attention it holds the backward's D (B*NH*T floats) instead.
static size_t datt_offset(size_t BT, size_t C) { return align_up(3 * BT * C, 128); }

// Points a at base (NULL: only counts) and returns the bytes needed; flash: 1 for flash attention's
// buffers, 0 for the materialized attention's; each (NUM_ACTIVATIONS), if not NULL, receives every
// buffer's bytes (with its alignment padding), in table order.
static size_t point_activations(Activations* a, char* base, const GPT2Config* c, int B_, int T_, int flash, size_t* each = NULL) {
    size_t B = (size_t)B_, T = (size_t)T_, BT = B * T, C = (size_t)c->channels, NH = (size_t)c->num_heads;
    size_t L = (size_t)c->num_layers, Vp = (size_t)c->padded_vocab_size;
    size_t OUT = BT * Vp;
    size_t ATT = flash ? 0 : L * B * NH * T * T, LSE = flash ? L * B * NH * T : 0;
    size_t backward_scratch = flash ? CEIL_DIV(B * NH * T * sizeof(float), sizeof(floatX)) : datt_offset(BT, C) + B * NH * T * T;
    if (backward_scratch > OUT) OUT = backward_scratch;
    size_t offset = 0;
    int index = 0;
#define ACT_POINT_(name, type, numel) \
    a->name = base ? (type*)(base + offset) : NULL; \
    if (each) each[index] = align_up((size_t)(numel) * sizeof(type), ACT_ALIGN); \
    index++; offset += align_up((size_t)(numel) * sizeof(type), ACT_ALIGN);
    GPU_ACTIVATIONS(ACT_POINT_)
#undef ACT_POINT_
    return offset;
}

// -attn auto|flash|ref -> 1 for flash attention. flash where it cannot run stops with one line.
static int use_flash_attention(const char* attn, const GPT2Config* c) {
    int hs = c->channels / c->num_heads;
    if (strcmp(attn, "ref") == 0) return 0;
    if (flash_attention_supports(hs)) return 1;
    if (strcmp(attn, "flash") == 0)
        die("flag -attn flash: supported for head sizes " FLASH_ATTENTION_HEAD_SIZES " in the bf16 build%s; this model's is %d "
            "(use -attn ref or auto)", FLASH_ATTENTION_AVAILABLE ? "" : " (this is the fp32 build)", hs);
    return 0;   // auto
}

#include "llmc/cuda_plan.cuh"

// ----------------------------------------------------------------------------
// The model

typedef struct {
    GPT2Config config;
    int B, T;
    int flash;                      // 1: flash attention (llmc/cuda_flash_attention.cuh), 0: materialized
    size_t num_params, shard_size;  // S = ceil(num_params / P); parameter and gradient buffers hold S*P
    int rank, world;
    DType grad_type;                // DTYPE_F32 or DTYPE_BF16
    int fuse_gelu;                  // 1: the MLP's GELU in the matmul's cuBLASLt epilogue (-fuse_gelu)
    floatX* params_memory;          // (S*P) bf16, padding zero
    ParameterViews<floatX> params;
    void* grads_memory;             // (S*P) of grad_type
    void* grad_shard;               // (S) this rank's slice of grads_memory: the reduce-scatter is in place
    void* grad_shard_acc;           // (S) with -sync_each_microstep, else NULL
    size_t opt_offset, opt_count;   // this rank's optimizer range of the parameter buffer
    float* master;                  // (opt_count) fp32 master weights of that range
    float* m_memory;                // (opt_count) AdamW first moment
    float* v_memory;                // (opt_count) AdamW second moment
    char* acts_memory;
    Activations acts;
    int* inputs;                    // (B,T) device copy of the micro-step's inputs
    int* targets;                   // (B,T) device
    int* inputs_pinned;             // (B,T) pinned host staging, so the copies are asynchronous
    int* targets_pinned;
    double* scalar_dev;             // one device double: loss sum, sum of squares
    double* scalar_pinned;          // its pinned host copy
    cudaEvent_t scalar_ready;
    float* norm_scratch;            // (GLOBAL_NORM_MAX_BLOCKS)
    float* ln_scratch;              // layernorm_backward's counter and partial sums (zeroed at allocation)
    cudaStream_t stream;            // every kernel of the model runs on it
    MatmulContext mm;
    size_t bytes_params, bytes_grads, bytes_opt, bytes_acts, bytes_other;
} GPT2;

static size_t device_bytes_total(const GPT2* m) {
    return m->bytes_params + m->bytes_grads + m->bytes_opt + m->bytes_acts + m->bytes_other;
}

// cudaMalloc that names what it was allocating when the GPU is full, and counts the bytes.
static void* gpu_alloc(GPT2* m, size_t bytes, size_t* counter, const char* what) {
    void* p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        die("out of GPU memory allocating %s (%.1f MiB) after %.1f MiB for this model (device: %.1f MiB free of %.1f MiB): "
            "reduce -b (the micro-batch B; raise K with -d to keep the total batch) or use more GPUs (%s)",
            what, bytes / 1048576.0, device_bytes_total(m) / 1048576.0, free_b / 1048576.0, total_b / 1048576.0,
            cudaGetErrorString(e));
    }
    cudaCheck(cudaMemsetAsync(p, 0, bytes == 0 ? 1 : bytes, m->stream));
    *counter += bytes;
    return p;
}

#ifndef ENABLE_FP32
// Round to nearest even, as __float2bfloat16_rn (NaN stays NaN).
static uint16_t float_to_bf16_bits_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
#endif

// n host floats -> device floatX: bf16 rounded to nearest even, fp32 (ENABLE_FP32) copied as is.
// Synchronizes the stream (the staging copy is freed before returning).
static void floatX_from_host(floatX* dev, const float* in, size_t n, cudaStream_t s) {
#ifdef ENABLE_FP32
    cudaCheck(cudaMemcpyAsync(dev, in, n * sizeof(float), cudaMemcpyHostToDevice, s));
    cudaCheck(cudaStreamSynchronize(s));
#else
    uint16_t* tmp = (uint16_t*)mallocCheck(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) tmp[i] = float_to_bf16_bits_rn(in[i]);
    cudaCheck(cudaMemcpyAsync(dev, tmp, n * sizeof(uint16_t), cudaMemcpyHostToDevice, s));
    cudaCheck(cudaStreamSynchronize(s));
    free(tmp);
#endif
}

// n device floatX -> host floats (bf16 widens exactly). Synchronizes the stream.
static void floatX_to_host(float* out, const floatX* dev, size_t n, cudaStream_t s) {
#ifdef ENABLE_FP32
    cudaCheck(cudaMemcpyAsync(out, dev, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    cudaCheck(cudaStreamSynchronize(s));
#else
    uint16_t* tmp = (uint16_t*)mallocCheck(n * sizeof(uint16_t));
    cudaCheck(cudaMemcpyAsync(tmp, dev, n * sizeof(uint16_t), cudaMemcpyDeviceToHost, s));
    cudaCheck(cudaStreamSynchronize(s));
    for (size_t i = 0; i < n; i++) out[i] = bf16_bits_to_float(tmp[i]);
    free(tmp);
#endif
}

static void gpt2_params_from_host(GPT2* m, const float* in);

// Allocates everything for micro-batches of (B,T) on rank `rank` of `world`; parameters from host fp32.
static void gpt2_build(GPT2* m, const GPT2Config* c, const float* init_params, int B, int T, int rank, int world,
                       int zero_stage, int sync_each_microstep, DType grad_type, int flash) {
    memset(m, 0, sizeof(*m));
    m->flash = flash;
    m->config = *c;
    m->B = B;
    m->T = T;
    m->rank = rank;
    m->world = world;
    m->grad_type = grad_type;
#ifdef ENABLE_FP32
    if (grad_type != DTYPE_F32) die("the fp32 build (-DENABLE_FP32) keeps fp32 gradients: -grad_bf16 1 is not available");
#endif
    m->fuse_gelu = 1;
    m->num_params = gpt2_num_parameters(c);
    MemoryPlan plan = gpt2_memory_plan(c, B, T, rank, world, zero_stage, sync_each_microstep, grad_type, flash);
    m->shard_size = plan.shard_size;
    cudaCheck(cudaStreamCreate(&m->stream));
    cudaCheck(cudaEventCreateWithFlags(&m->scalar_ready, cudaEventDisableTiming));
    m->mm = matmul_context_create(m->stream, plan.workspace);
    m->bytes_other += plan.workspace;

    m->params_memory = (floatX*)gpu_alloc(m, plan.params, &m->bytes_params, "the " FLOATX_NAME " parameters");
    gpt2_point_views(&m->params, m->params_memory, sizeof(floatX), c);
    m->grads_memory = gpu_alloc(m, plan.grads, &m->bytes_grads, "the gradient buffer");
    // The reduce-scatter leaves rank r's shard where NCCL's in-place form puts it, in slice r of the
    // buffer it sums (recvbuff == sendbuff + r * S): no separate shard buffer.
    m->grad_shard = (char*)m->grads_memory + (size_t)rank * m->shard_size * dtype_size(grad_type);
    if (sync_each_microstep)
        m->grad_shard_acc = gpu_alloc(m, plan.grad_shard_acc, &m->bytes_grads, "the gradient shard accumulator");
    m->opt_offset = plan.opt_offset;
    m->opt_count = plan.opt_count;
    m->master = (float*)gpu_alloc(m, plan.master, &m->bytes_opt, "the fp32 master weights");
    m->m_memory = (float*)gpu_alloc(m, plan.adam_m, &m->bytes_opt, "AdamW's m");
    m->v_memory = (float*)gpu_alloc(m, plan.adam_v, &m->bytes_opt, "AdamW's v");

    m->acts_memory = (char*)gpu_alloc(m, plan.acts_total, &m->bytes_acts, "the activations");
    point_activations(&m->acts, m->acts_memory, c, B, T, flash);

    size_t BT = (size_t)B * T;
    m->inputs = (int*)gpu_alloc(m, plan.inputs, &m->bytes_other, "the inputs");
    m->targets = (int*)gpu_alloc(m, plan.targets, &m->bytes_other, "the targets");
    m->scalar_dev = (double*)gpu_alloc(m, plan.scalar, &m->bytes_other, "a scalar");
    m->norm_scratch = (float*)gpu_alloc(m, plan.norm_scratch, &m->bytes_other, "norm scratch");
    // layernorm_backward's blocks-done counter (the scratch's first word) must be zero before its first
    // call, and each call leaves it zero: gpu_alloc's cudaMemsetAsync zeroes it here.
    m->ln_scratch = (float*)gpu_alloc(m, plan.ln_scratch, &m->bytes_other, "layernorm scratch");
    cudaCheck(cudaMallocHost((void**)&m->inputs_pinned, BT * sizeof(int)));
    cudaCheck(cudaMallocHost((void**)&m->targets_pinned, BT * sizeof(int)));
    cudaCheck(cudaMallocHost((void**)&m->scalar_pinned, sizeof(double)));
    gpt2_params_from_host(m, init_params);
}

static void gpt2_free(GPT2* m) {
    cudaCheck(cudaStreamSynchronize(m->stream));
    void* device[] = { m->params_memory, m->grads_memory, m->grad_shard_acc, m->master, m->m_memory,
                       m->v_memory, m->acts_memory, m->inputs, m->targets, m->scalar_dev, m->norm_scratch, m->ln_scratch };
    for (size_t i = 0; i < sizeof(device) / sizeof(device[0]); i++) if (device[i]) cudaCheck(cudaFree(device[i]));
    cudaCheck(cudaFreeHost(m->inputs_pinned));
    cudaCheck(cudaFreeHost(m->targets_pinned));
    cudaCheck(cudaFreeHost(m->scalar_pinned));
    matmul_context_destroy(&m->mm);
    cudaCheck(cudaEventDestroy(m->scalar_ready));
    cudaCheck(cudaStreamDestroy(m->stream));
}

// Copies a host (B,T) batch to the device through the pinned staging buffer. The staging buffer is
// free: every function that issued an earlier copy waited for an event recorded after it.
static void upload_batch(GPT2* m, int* device, int* pinned, const int* host) {
    size_t n = (size_t)m->B * m->T;
    memcpy(pinned, host, n * sizeof(int));
    cudaCheck(cudaMemcpyAsync(device, pinned, n * sizeof(int), cudaMemcpyHostToDevice, m->stream));
}

// Issues the copy of the device scalar to the host; scalar_wait returns it.
static void scalar_issue(GPT2* m) {
    cudaCheck(cudaMemcpyAsync(m->scalar_pinned, m->scalar_dev, sizeof(double), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaEventRecord(m->scalar_ready, m->stream));
}
static double scalar_wait(GPT2* m) {
    cudaCheck(cudaEventSynchronize(m->scalar_ready));
    return *m->scalar_pinned;
}

// Flash attention where it is compiled (not in the fp32 build, where use_flash_attention never selects it).
static void attention_forward_flash(floatX* out, float* lse, const floatX* qkv, int B, int T, int C, int NH, cudaStream_t s) {
#if FLASH_ATTENTION_AVAILABLE
    flash_attention_forward(out, lse, qkv, B, T, C, NH, s);
#else
    die("internal: flash attention is not compiled in this build");
#endif
}
static void attention_backward_flash(floatX* dqkv, float* D, const floatX* dout, const floatX* qkv, const floatX* out,
                                     const float* lse, int B, int T, int C, int NH, cudaStream_t s) {
#if FLASH_ATTENTION_AVAILABLE
    flash_attention_backward(dqkv, D, dout, qkv, out, lse, B, T, C, NH, s);
#else
    die("internal: flash attention is not compiled in this build");
#endif
}

// Forward pass over (B,T) inputs. With targets (host, -1 = masked), the fused classifier then writes
// the per-position losses and, in place of the logits, d(sum of losses)/dlogits; without targets the
// logits stay in acts.output (sampling, tests).
static void gpt2_forward(GPT2* m, const int* inputs, const int* targets) {
    const GPT2Config* c = &m->config;
    int B = m->B, T = m->T, C = c->channels, NH = c->num_heads, L = c->num_layers;
    int V = c->vocab_size, Vp = c->padded_vocab_size, BT = B * T;
    size_t BTC = (size_t)BT * C, CC = (size_t)C * C, att_n = (size_t)B * NH * T * T;
    ParameterViews<floatX>* p = &m->params;
    Activations* a = &m->acts;
    cudaStream_t s = m->stream;
    const MatmulContext* mm = &m->mm;

    upload_batch(m, m->inputs, m->inputs_pinned, inputs);
    if (targets) upload_batch(m, m->targets, m->targets_pinned, targets);
    encoder_forward(a->encoded, m->inputs, p->wte, p->wpe, B, T, C, s);
    layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, a->encoded, p->ln1w, p->ln1b, BT, C, s);
    floatX* residual = a->encoded;
    floatX* scratch = a->output;
    for (int l = 0; l < L; l++) {
        floatX* ln1 = a->ln1 + l * BTC;
        floatX* qkvr = a->qkvr + l * 3 * BTC;
        floatX* att = m->flash ? NULL : a->att + l * att_n;
        floatX* atty = a->atty + l * BTC;
        floatX* residual2 = a->residual2 + l * BTC;
        floatX* ln2 = a->ln2 + l * BTC;
        floatX* fch = a->fch + l * 4 * BTC;
        floatX* fch_gelu = a->fch_gelu + l * 4 * BTC;
        floatX* residual3 = a->residual3 + l * BTC;
        // attention: qkv -> atty; residual2 = residual + atty . attprojw^T + attprojb
        if (m->flash) {   // qkv straight into qkvr, kept for the backward
            matmul_forward(qkvr, ln1, p->qkvw + l * 3 * CC, p->qkvb + l * 3 * C, BT, C, 3 * C, NULL, mm);
            attention_forward_flash(atty, a->lse + l * (size_t)B * NH * T, qkvr, B, T, C, NH, s);
        } else {          // qkv in scratch, split by head into qkvr
            matmul_forward(scratch, ln1, p->qkvw + l * 3 * CC, p->qkvb + l * 3 * C, BT, C, 3 * C, NULL, mm);
            attention_forward(atty, qkvr, att, scratch, B, T, C, NH, mm);
        }
        matmul_forward(scratch, atty, p->attprojw + l * CC, p->attprojb + l * C, BT, C, C, NULL, mm);
        fused_residual_layernorm_forward(residual2, ln2, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, residual, scratch,
                                         p->ln2w + l * C, p->ln2b + l * C, BT, C, s);
        // MLP: fch = ln2 . fcw^T + fcb (kept), fch_gelu = gelu(fch); residual3 = residual2 + fch_gelu . fcprojw^T + b
        matmul_forward(fch_gelu, ln2, p->fcw + l * 4 * CC, p->fcb + l * 4 * C, BT, C, 4 * C, fch, mm, m->fuse_gelu != 0);
        matmul_forward(scratch, fch_gelu, p->fcprojw + l * 4 * CC, p->fcprojb + l * C, BT, 4 * C, C, NULL, mm);
        // the next LayerNorm (layer l+1's ln1, or the final one) fused with the residual add
        int last = l == L - 1;
        fused_residual_layernorm_forward(residual3, last ? a->lnf : a->ln1 + (l + 1) * BTC,
                                         last ? a->lnf_mean : a->ln1_mean + (l + 1) * BT,
                                         last ? a->lnf_rstd : a->ln1_rstd + (l + 1) * BT, residual2, scratch,
                                         last ? p->lnfw : p->ln1w + (l + 1) * C, last ? p->lnfb : p->ln1b + (l + 1) * C,
                                         BT, C, s);
        residual = residual3;
    }
    matmul_forward(a->output, a->lnf, p->wte, NULL, BT, C, Vp, NULL, mm);  // LM head tied to wte
    if (targets) fused_classifier(a->output, a->losses, m->targets, BT, V, Vp, s);
}

// Backward of the last forward (which had targets): adds d(sum of valid losses)/dparams into the
// gradient buffer, viewed as GradT (float or floatX).
template<typename GradT>
static void gpt2_backward(GPT2* m) {
    const GPT2Config* c = &m->config;
    int B = m->B, T = m->T, C = c->channels, NH = c->num_heads, L = c->num_layers, Vp = c->padded_vocab_size;
    int BT = B * T;
    size_t BTC = (size_t)BT * C, CC = (size_t)C * C, att_n = (size_t)B * NH * T * T;
    ParameterViews<floatX>* p = &m->params;
    ParameterViews<GradT> g;
    gpt2_point_views(&g, m->grads_memory, sizeof(GradT), c);
    Activations* a = &m->acts;
    cudaStream_t s = m->stream;
    const MatmulContext* mm = &m->mm;
    floatX* dresidual = a->dresidual;
    floatX* dbtc = a->dbtc;
    floatX* dbt4c = a->dbt4c;
    floatX* dqkvr = a->output;                                // free once the LM head's backward is done
    floatX* datt = a->output + datt_offset((size_t)BT, (size_t)C);

    // LM head and final LayerNorm; dlogits are in a->output (written by the fused classifier)
    cudaCheck(cudaMemsetAsync(dresidual, 0, BTC * sizeof(floatX), s));
    matmul_backward<GradT>(dbtc, g.wte, NULL, a->output, a->lnf, p->wte, BT, C, Vp, NULL, mm);
    layernorm_backward<GradT>(dresidual, g.lnfw, g.lnfb, dbtc, a->residual3 + (L - 1) * BTC, p->lnfw,
                              a->lnf_mean, a->lnf_rstd, BT, C, m->ln_scratch, s);
    for (int l = L - 1; l >= 0; l--) {
        // dresidual holds d(residual3 of layer l) here
        floatX* residual_in = l == 0 ? a->encoded : a->residual3 + (l - 1) * BTC;
        floatX* ln1 = a->ln1 + l * BTC;
        floatX* qkvr = a->qkvr + l * 3 * BTC;
        floatX* att = m->flash ? NULL : a->att + l * att_n;
        floatX* atty = a->atty + l * BTC;
        floatX* residual2 = a->residual2 + l * BTC;
        floatX* ln2 = a->ln2 + l * BTC;
        floatX* fch = a->fch + l * 4 * BTC;
        floatX* fch_gelu = a->fch_gelu + l * 4 * BTC;
        // residual3 = residual2 + fcproj: dfcproj = dresidual, and dresidual flows on to residual2
        matmul_backward<GradT>(dbt4c, g.fcprojw + l * 4 * CC, g.fcprojb + l * C, dresidual, fch_gelu,
                               p->fcprojw + l * 4 * CC, BT, 4 * C, C, fch, mm);   // dbt4c = d(fch), through the GELU
        matmul_backward<GradT>(dbtc, g.fcw + l * 4 * CC, g.fcb + l * 4 * C, dbt4c, ln2, p->fcw + l * 4 * CC,
                               BT, C, 4 * C, NULL, mm);                           // dbtc = d(ln2)
        layernorm_backward<GradT>(dresidual, g.ln2w + l * C, g.ln2b + l * C, dbtc, residual2, p->ln2w + l * C,
                                  a->ln2_mean + l * BT, a->ln2_rstd + l * BT, BT, C, m->ln_scratch, s);
        // residual2 = residual_in + attproj: dattproj = dresidual (now d residual2)
        matmul_backward<GradT>(dbtc, g.attprojw + l * CC, g.attprojb + l * C, dresidual, atty, p->attprojw + l * CC,
                               BT, C, C, NULL, mm);                               // dbtc = d(atty)
        if (m->flash)   // dbt4c = d(qkv) (B,T,3C)
            attention_backward_flash(dbt4c, (float*)a->output, dbtc, qkvr, atty, a->lse + l * (size_t)B * NH * T, B, T, C, NH, s);
        else
            attention_backward(dbt4c, dqkvr, datt, dbtc, qkvr, att, B, T, C, NH, mm);
        matmul_backward<GradT>(dbtc, g.qkvw + l * 3 * CC, g.qkvb + l * 3 * C, dbt4c, ln1, p->qkvw + l * 3 * CC,
                               BT, C, 3 * C, NULL, mm);                           // dbtc = d(ln1)
        layernorm_backward<GradT>(dresidual, g.ln1w + l * C, g.ln1b + l * C, dbtc, residual_in, p->ln1w + l * C,
                                  a->ln1_mean + l * BT, a->ln1_rstd + l * BT, BT, C, m->ln_scratch, s);
    }
    encoder_backward<GradT>(g.wte, g.wpe, dresidual, m->inputs, B, T, C, s);
}

static void gpt2_backward_any(GPT2* m) {
    if (m->grad_type == DTYPE_F32) gpt2_backward<float>(m);
    else gpt2_backward<floatX>(m);
}

// Sum of the losses of the last forward (masked positions count 0), issued (scalar_wait returns it).
static void gpt2_issue_loss_sum(GPT2* m) {
    sum_losses(m->scalar_dev, m->acts.losses, m->B * m->T, 0, m->stream);
    scalar_issue(m);
}

// ----------------------------------------------------------------------------
// Host <-> device for the parameters and the optimizer state

static void gpt2_params_from_host(GPT2* m, const float* in) {
    size_t n = m->num_params;
    floatX_from_host(m->params_memory, in, n, m->stream);
    // The fp32 master of this rank's range: the host values themselves (padding stays zero). When
    // resuming, opt_state_from_host then replaces it with the exact saved master.
    cudaCheck(cudaMemsetAsync(m->master, 0, m->opt_count * sizeof(float), m->stream));
    size_t lo = m->opt_offset, hi = m->opt_offset + m->opt_count;
    if (hi > n) hi = n;
    if (lo < hi) cudaCheck(cudaMemcpyAsync(m->master, in + lo, (hi - lo) * sizeof(float), cudaMemcpyHostToDevice, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
}

static void gpt2_params_to_host(GPT2* m, float* out) {
    floatX_to_host(out, m->params_memory, m->num_params, m->stream);
}

// count elements of a device gradient (grad_type) to host floats
static void gpt2_grads_to_host(GPT2* m, const void* grad, size_t count, float* out) {
    if (m->grad_type == DTYPE_F32) {
        cudaCheck(cudaMemcpyAsync(out, grad, count * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
        cudaCheck(cudaStreamSynchronize(m->stream));
        return;
    }
    uint16_t* tmp = (uint16_t*)mallocCheck(count * sizeof(uint16_t));
    cudaCheck(cudaMemcpyAsync(tmp, grad, count * sizeof(uint16_t), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
    for (size_t i = 0; i < count; i++) out[i] = bf16_bits_to_float(tmp[i]);
    free(tmp);
}

// ----------------------------------------------------------------------------
// Small kernels of the Trainable

template<typename GradT>
__global__ void accumulate_kernel(GradT* acc, const GradT* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc[i] = from_float<GradT>(to_float(acc[i]) + to_float(x[i]));
}

template<typename GradT>
static void accumulate(GradT* acc, const GradT* x, size_t n, cudaStream_t s) {
    if (n == 0) return;
    size_t blocks = CEIL_DIV(n, (size_t)512);
    accumulate_kernel<GradT><<<(unsigned int)(blocks < 65536 ? blocks : 65536), 512, 0, s>>>(acc, x, n);
    cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// The Trainable: what llmc/window.h needs from the model. Buffers are device memory.

static GPT2* self_of(Trainable* tr) { return (GPT2*)tr->self; }

static void gpu_zero_grads(Trainable* tr) {
    GPT2* m = self_of(tr);
    cudaCheck(cudaMemsetAsync(m->grads_memory, 0, m->shard_size * m->world * dtype_size(m->grad_type), m->stream));
}

// Forward, loss, backward. The loss is copied to the host before the backward is issued, so the host
// only waits for the forward; the backward runs on while the next batch is read.
static double gpu_forward_backward(Trainable* tr, const int* inputs, const int* targets) {
    GPT2* m = self_of(tr);
    gpt2_forward(m, inputs, targets);
    gpt2_issue_loss_sum(m);
    gpt2_backward_any(m);
    return scalar_wait(m);
}

static double gpu_forward_loss(Trainable* tr, const int* inputs, const int* targets) {
    GPT2* m = self_of(tr);
    gpt2_forward(m, inputs, targets);
    gpt2_issue_loss_sum(m);
    return scalar_wait(m);
}

// The per-position losses (fp32 on the device) of a forward with targets, copied to the host.
static void gpu_token_losses(Trainable* tr, const int* inputs, const int* targets, float* losses) {
    GPT2* m = self_of(tr);
    gpt2_forward(m, inputs, targets);
    cudaCheck(cudaMemcpyAsync(losses, m->acts.losses, (size_t)m->B * m->T * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
}

// Logits (V) for the token after position t-1 of row 0 (the other rows are computed and ignored).
static void gpu_next_token_logits(Trainable* tr, const int* tokens, int t, float* logits) {
    GPT2* m = self_of(tr);
    int V = m->config.vocab_size, Vp = m->config.padded_vocab_size;
    gpt2_forward(m, tokens, NULL);
    floatX_to_host(logits, m->acts.output + (size_t)(t - 1) * Vp, (size_t)V, m->stream);
}

static void gpu_zero_shard_acc(Trainable* tr) {
    GPT2* m = self_of(tr);
    cudaCheck(cudaMemsetAsync(m->grad_shard_acc, 0, m->shard_size * dtype_size(m->grad_type), m->stream));
}

static void gpu_accumulate_shard(Trainable* tr) {
    GPT2* m = self_of(tr);
    if (m->grad_type == DTYPE_F32) accumulate((float*)m->grad_shard_acc, (const float*)m->grad_shard, m->shard_size, m->stream);
    else accumulate((floatX*)m->grad_shard_acc, (const floatX*)m->grad_shard, m->shard_size, m->stream);
}

// Sum of squares of count gradient elements: fp32 block partials, summed in double. Deterministic.
static double gpu_sumsq(Trainable* tr, const void* grad, size_t count) {
    GPT2* m = self_of(tr);
    if (m->grad_type == DTYPE_F32)
        global_norm_squared_f64(m->scalar_dev, (const float*)grad, count, m->norm_scratch, 0, m->stream);
    else
        global_norm_squared_f64(m->scalar_dev, (const floatX*)grad, count, m->norm_scratch, 0, m->stream);
    scalar_issue(m);
    return scalar_wait(m);
}

// The stochastic-rounding seed of step t. With the element's global index (adamw_update's index0)
// it keys the noise, so ranges, shards and P never change which bf16 value a parameter gets.
static unsigned int adamw_seed(int t) { return hash_u32((unsigned int)t * 0x9E3779B9u + 0x1b873593u); }

// AdamW on one tensor's slice: parameters from param_offset, optimizer state from state_offset.
static void gpu_adamw(Trainable* tr, const AdamWArgs* a) {
    GPT2* m = self_of(tr);
    if (a->state_offset + a->count > m->opt_count || a->param_offset + a->count > m->shard_size * m->world)
        die("internal: AdamW range [%zu, +%zu) outside this rank's optimizer state (%zu)", a->state_offset, a->count, m->opt_count);
    float bc1 = 1.0f - powf(a->beta1, (float)a->t), bc2 = 1.0f - powf(a->beta2, (float)a->t);
    unsigned int seed = adamw_seed(a->t);
    float* master = m->master + a->state_offset;
    floatX* params = m->params_memory + a->param_offset;
    float* mm = m->m_memory + a->state_offset;
    float* vv = m->v_memory + a->state_offset;
    if (m->grad_type == DTYPE_F32)
        adamw_update(master, params, mm, vv, (const float*)a->grad, a->count, a->lr, a->beta1, a->beta2, a->eps,
                     a->weight_decay, a->grad_scale, bc1, bc2, seed, a->param_offset, m->stream);
    else
        adamw_update(master, params, mm, vv, (const floatX*)a->grad, a->count, a->lr, a->beta1, a->beta2, a->eps,
                     a->weight_decay, a->grad_scale, bc1, bc2, seed, a->param_offset, m->stream);
}

static void gpu_grads_to_host(Trainable* tr, const void* grad, size_t count, float* out) {
    gpt2_grads_to_host(self_of(tr), grad, count, out);
}
static void gpu_params_to_host(Trainable* tr, float* out) { gpt2_params_to_host(self_of(tr), out); }
static void gpu_params_from_host(Trainable* tr, const float* in) { gpt2_params_from_host(self_of(tr), in); }

// Optimizer state of this rank: m, v, then the fp32 master weights, each opt_count floats.
static size_t gpu_opt_state_bytes(Trainable* tr) { return 3 * self_of(tr)->opt_count * sizeof(float); }

static void gpu_opt_state_to_host(Trainable* tr, void* out) {
    GPT2* m = self_of(tr);
    size_t n = m->opt_count;
    float* o = (float*)out;
    cudaCheck(cudaMemcpyAsync(o, m->m_memory, n * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaMemcpyAsync(o + n, m->v_memory, n * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaMemcpyAsync(o + 2 * n, m->master, n * sizeof(float), cudaMemcpyDeviceToHost, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
}

static void gpu_opt_state_from_host(Trainable* tr, const void* in) {
    GPT2* m = self_of(tr);
    size_t n = m->opt_count;
    const float* i = (const float*)in;
    cudaCheck(cudaMemcpyAsync(m->m_memory, i, n * sizeof(float), cudaMemcpyHostToDevice, m->stream));
    cudaCheck(cudaMemcpyAsync(m->v_memory, i + n, n * sizeof(float), cudaMemcpyHostToDevice, m->stream));
    cudaCheck(cudaMemcpyAsync(m->master, i + 2 * n, n * sizeof(float), cudaMemcpyHostToDevice, m->stream));
    cudaCheck(cudaStreamSynchronize(m->stream));
}

// What gpt2_build allocated, counted at each allocation. Gradients: the buffer (this rank's shard is
// its slice) and, with -sync_each_microstep, the shard accumulator.
static void print_memory(const GPT2* m, const char* grad_name) {
    const double MiB = 1048576.0;
    printf("memory per GPU: parameters %.0f MiB (" FLOATX_NAME "), gradients %.0f MiB (%s%s), AdamW m, v, master %.0f MiB "
           "(%zu parameters of this rank), activations %.0f MiB (B=%d, T=%d), other %.0f MiB; total %.0f MiB (%zu bytes)\n",
           m->bytes_params / MiB, m->bytes_grads / MiB, grad_name, m->grad_shard_acc ? ", with the shard accumulator" : "",
           m->bytes_opt / MiB, m->opt_count, m->bytes_acts / MiB, m->B, m->T, m->bytes_other / MiB,
           device_bytes_total(m) / MiB, device_bytes_total(m));
}

Trainable gpt2_trainable(GPT2* m, double peak_flops) {
    Trainable tr;
    memset(&tr, 0, sizeof(tr));
    tr.self = m;
    tr.config = m->config;
    tr.num_params = m->num_params;
    tr.shard_size = m->shard_size;
    tr.B = m->B;
    tr.T = m->T;
    tr.grad_type = m->grad_type;
    tr.param_type = sizeof(floatX) == sizeof(float) ? DTYPE_F32 : DTYPE_BF16;   // what the all-gather moves
    tr.params = m->params_memory;
    tr.grads = m->grads_memory;
    tr.grad_shard = m->grad_shard;
    tr.grad_shard_acc = m->grad_shard_acc;
    tr.opt_offset = m->opt_offset;
    tr.opt_count = m->opt_count;
    tr.peak_flops = peak_flops;
    tr.zero_grads = gpu_zero_grads;
    tr.forward_backward = gpu_forward_backward;
    tr.forward_loss = gpu_forward_loss;
    tr.token_losses = gpu_token_losses;
    tr.next_token_logits = gpu_next_token_logits;
    tr.zero_shard_acc = gpu_zero_shard_acc;
    tr.accumulate_shard = gpu_accumulate_shard;
    tr.sumsq = gpu_sumsq;
    tr.adamw = gpu_adamw;
    tr.grads_to_host = gpu_grads_to_host;
    tr.params_to_host = gpu_params_to_host;
    tr.params_from_host = gpu_params_from_host;
    tr.opt_state_bytes = gpu_opt_state_bytes;
    tr.opt_state_to_host = gpu_opt_state_to_host;
    tr.opt_state_from_host = gpu_opt_state_from_host;
    return tr;
}

// ----------------------------------------------------------------------------
#ifndef TESTING
int main(int argc, char** argv) {
    Comm comm;
    comm_init(&comm, &argc, &argv);          // MPI when launched by mpirun, else one process; no CUDA yet
    TrainOptions opt;
    parse_args_on_every_rank(&opt, argc, argv, &comm);  // -h and bad flags end here, before any CUDA call
#ifdef ENABLE_FP32
    if (opt.grad_bf16) die("flag -grad_bf16 1: this is the fp32 build (-DENABLE_FP32), whose gradients are fp32; leave -grad_bf16 at 0");
#endif
    if (opt.plan) {                          // the memory plan, and no CUDA call at all
        print_plan(&opt, &comm);
        comm_finalize(&comm);
        return 0;
    }
    GPT2Config config;
    float* init = load_initial_parameters(&opt, &config, &comm);  // also checks -t against max_seq_len
    comm_init_nccl(&comm);                   // picks GPU local_rank, bootstraps NCCL through MPI (or alone)
    double peak = print_device(&comm);
    DType grad_type = opt.grad_bf16 ? DTYPE_BF16 : DTYPE_F32;
    GPT2 model;
    int flash = use_flash_attention(opt.attn, &config);
    gpt2_build(&model, &config, init, opt.B, opt.T, comm.rank, comm.world, opt.zero_stage, opt.sync_each_microstep, grad_type, flash);
    free(init);
    model.fuse_gelu = opt.fuse_gelu;
    comm_nccl_set_compute_stream(&comm, model.stream);
    if (comm.rank == 0) {
        gpt2_print_config(&config, model.num_params);
        print_memory(&model, opt.grad_bf16 ? "bf16" : "fp32");
        printf("attention: %s (-attn %s)\n", flash ? "flash, no (B,NH,T,T) buffers" : "materialized (B,NH,T,T)", opt.attn);
    }
    Trainable tr = gpt2_trainable(&model, peak);
    int rc = run_training(&opt, &tr, &comm);  // 0, or EXIT_STOPPED(_UNSAVED) when told to stop
    if (comm.rank == 0) {
        size_t free_b = 0, total_b = 0;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        printf("gpu memory: peak %.0f MiB allocated by train_gpt2cu; %.0f MiB in use on the device (with the CUDA context, "
               "cuBLASLt and NCCL, and any other process)\n", device_bytes_total(&model) / 1048576.0, (total_b - free_b) / 1048576.0);
    }
    gpt2_free(&model);
    comm_finalize(&comm);
    return rc;
}
#endif
