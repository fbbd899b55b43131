// cuda_plan.cuh: train_gpt2.cu's device memory plan, buffer by buffer (what gpt2_build allocates, and
// what -plan prints without touching a GPU), and its device report (the GPU, and its bf16 peak for MFU).
// Not a kernel header, and not a standalone one: the plan lays out train_gpt2.cu's activation table
// (Activations, point_activations, ACTIVATION_NAMES) and follows its -attn choice (use_flash_attention),
// so train_gpt2.cu includes it right after them. Kept apart so that the .cu file reads as the model.
#ifndef LLMC_CUDA_PLAN_CUH
#define LLMC_CUDA_PLAN_CUH

#include "utils.h"
#include "gpt2.h"
#include "args.h"
#include "comm.h"
#include "cuda_common.cuh"
#include "cuda_layernorm.cuh"
#include "cuda_global_norm.cuh"

// cuBLASLt workspace (also holds matmul_backward's bias partial sums)
#define MATMUL_WORKSPACE_BYTES (32u << 20)

// ----------------------------------------------------------------------------
// The device memory of one rank, buffer by buffer: gpt2_build allocates exactly these sizes, and
// -plan prints them without touching a GPU. Bytes.

typedef struct {
    size_t shard_size;                // S = ceil(num_params / P)
    size_t opt_offset, opt_count;     // this rank's optimizer range: (rank*S, S) with -z 1, (0, S*P) with -z 0
    size_t params;                    // (S*P) bf16
    size_t grads;                     // (S*P) grad_type; rank r's shard is its slice r (in-place reduce-scatter)
    size_t grad_shard_acc;            // (S) grad_type with -sync_each_microstep, else 0
    size_t master, adam_m, adam_v;    // (opt_count) fp32 each
    size_t acts[NUM_ACTIVATIONS];     // each activation buffer, as point_activations lays them out
    size_t acts_total;
    size_t workspace;                 // cuBLASLt workspace (and matmul_backward's bias partial sums)
    size_t inputs, targets, scalar, norm_scratch, ln_scratch;
} MemoryPlan;

static MemoryPlan gpt2_memory_plan(const GPT2Config* c, int B, int T, int rank, int world, int zero_stage,
                                   int sync_each_microstep, DType grad_type, int flash) {
    MemoryPlan p;
    memset(&p, 0, sizeof(p));
    size_t num_params = gpt2_num_parameters(c);
    p.shard_size = (num_params + world - 1) / world;
    size_t padded = p.shard_size * world, gsize = dtype_size(grad_type), BT = (size_t)B * T;
    p.opt_offset = zero_stage == 1 ? (size_t)rank * p.shard_size : 0;
    p.opt_count = zero_stage == 1 ? p.shard_size : padded;
    p.params = padded * sizeof(floatX);
    p.grads = padded * gsize;
    p.grad_shard_acc = sync_each_microstep ? p.shard_size * gsize : 0;
    p.master = p.adam_m = p.adam_v = p.opt_count * sizeof(float);
    Activations none;
    p.acts_total = point_activations(&none, NULL, c, B, T, flash, p.acts);
    p.workspace = MATMUL_WORKSPACE_BYTES;
    p.inputs = p.targets = BT * sizeof(int);
    p.scalar = sizeof(double);
    p.norm_scratch = GLOBAL_NORM_MAX_BLOCKS * sizeof(float);
    p.ln_scratch = layernorm_backward_scratch_bytes(c->channels);
    return p;
}

// the plan's groups, as the memory report names them
static size_t plan_grads(const MemoryPlan* p) { return p->grads + p->grad_shard_acc; }
static size_t plan_opt(const MemoryPlan* p) { return p->master + p->adam_m + p->adam_v; }
static size_t plan_other(const MemoryPlan* p) {
    return p->workspace + p->inputs + p->targets + p->scalar + p->norm_scratch + p->ln_scratch;
}
static size_t plan_total(const MemoryPlan* p) { return p->params + plan_grads(p) + plan_opt(p) + p->acts_total + plan_other(p); }

// ----------------------------------------------------------------------------
// -plan 1: the memory per GPU of a configuration, from gpt2_memory_plan, with no CUDA call at all.

static void plan_line(const char* what, size_t bytes, const char* note) {
    printf("plan: %-24s %12.2f MiB %14zu bytes  %s\n", what, bytes / 1048576.0, bytes, note);
}

// The model's config without loading its parameters: a preset, or a checkpoint's header.
static void plan_config(const TrainOptions* o, GPT2Config* c) {
    if (gpt2_config_from_name(o->init, c)) return;
    FILE* f = fopen(o->init, "rb");
    if (f == NULL) die("flag -e: '%s' is neither a preset (tiny small d12 d24 d36 d48) nor a readable checkpoint", o->init);
    char err[1200];
    int version = gpt2_read_checkpoint_header(f, o->init, c, err, sizeof(err));
    fclose(f);
    if (version < 0) die("flag -e: %s", err);
}

static void print_plan(const TrainOptions* o, const Comm* comm) {
    GPT2Config c;
    plan_config(o, &c);
    if (o->T > c.max_seq_len) die("flag -t %d exceeds the model's max_seq_len %d", o->T, c.max_seq_len);
    int world = o->plan_world > 0 ? o->plan_world : comm->world;
    DType grad_type = o->grad_bf16 ? DTYPE_BF16 : DTYPE_F32;
    const char* g = o->grad_bf16 ? "bf16" : "fp32";
    int flash = use_flash_attention(o->attn, &c);
    MemoryPlan p = gpt2_memory_plan(&c, o->B, o->T, 0, world, o->zero_stage, o->sync_each_microstep, grad_type, flash);
    if (comm->rank != 0) return;
    gpt2_print_config(&c, gpt2_num_parameters(&c));
    printf("plan: memory per GPU for P=%d, B=%d, T=%d, %s gradients, -z %d, -sync_each_microstep %d, %s attention "
           "(every rank alike)\n", world, o->B, o->T, g, o->zero_stage, o->sync_each_microstep, flash ? "flash" : "materialized");
    char note[128];
    snprintf(note, sizeof(note), FLOATX_NAME ", S*P = %zu x %d (S = ceil(N/P))", p.shard_size, world);
    plan_line("parameters", p.params, note);
    snprintf(note, sizeof(note), "%s, S*P; this rank's shard is its own slice (in-place reduce-scatter)", g);
    plan_line("gradients", p.grads, note);
    if (o->sync_each_microstep) plan_line("gradient shard acc.", p.grad_shard_acc, "S, -sync_each_microstep's accumulator");
    snprintf(note, sizeof(note), "fp32, %zu parameters (%s)", p.opt_count, o->zero_stage ? "this rank's shard, ZeRO-1" : "all, -z 0");
    plan_line("AdamW master weights", p.master, note);
    plan_line("AdamW m", p.adam_m, note);
    plan_line("AdamW v", p.adam_v, note);
    for (int i = 0; i < NUM_ACTIVATIONS; i++) {
        char what[64];
        snprintf(what, sizeof(what), "activation %s", ACTIVATION_NAMES[i]);
        plan_line(what, p.acts[i], "");
    }
    plan_line("activations (one block)", p.acts_total, "the sum of the above");
    plan_line("cuBLASLt workspace", p.workspace, "also matmul_backward's bias partial sums");
    plan_line("inputs, targets", p.inputs + p.targets, "int32 (B,T) each");
    plan_line("scratch", p.scalar + p.norm_scratch + p.ln_scratch, "a double, global-norm and LayerNorm-backward partials");
    printf("plan: parameters %.0f MiB, gradients %.0f MiB, AdamW %.0f MiB, activations %.0f MiB, other %.0f MiB; "
           "total %.0f MiB (%zu bytes), not counting the CUDA context, cuBLASLt's and NCCL's own memory\n",
           p.params / 1048576.0, plan_grads(&p) / 1048576.0, plan_opt(&p) / 1048576.0, p.acts_total / 1048576.0,
           plan_other(&p) / 1048576.0, plan_total(&p) / 1048576.0, plan_total(&p));
}

// ----------------------------------------------------------------------------
// Device description and MFU peak

// Dense bf16 tensor-core peak of the GPU, from its name; -1 when unknown (the log then says "MFU unknown").
static double gpu_peak_bf16_flops(const char* name) {
    int h100 = strstr(name, "H100") != NULL, h200 = strstr(name, "H200") != NULL && strstr(name, "GH200") == NULL;
    int nvl = strstr(name, "NVL") != NULL, pcie = strstr(name, "PCIe") != NULL || strstr(name, "PCIE") != NULL;
    if (h100 && pcie) return 756e12;                                                       // H100 PCIe
    if (h100 && !nvl && (strstr(name, "HBM3") || strstr(name, "SXM"))) return 989e12;      // H100 SXM
    if (h200 && !nvl && !pcie) return 989e12;                                              // H200 (SXM)
    if (strstr(name, "A100")) return 312e12;                                               // A100 (SXM and PCIe)
    return -1.0;
}

static double print_device(const Comm* comm) {
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    double peak = gpu_peak_bf16_flops(prop.name);
    if (comm->rank == 0) {
        printf("device: %s (sm_%d%d, %d SMs, %.1f GiB) on each of %d rank(s)\n", prop.name, prop.major, prop.minor,
               prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, comm->world);
        if (peak > 0) printf("device: bf16 dense peak %.0f TFLOPS, used for MFU\n", peak / 1e12);
        else printf("device: bf16 peak unknown for '%s': MFU unknown\n", prop.name);
    }
    return peak;
}

#endif // LLMC_CUDA_PLAN_CUH
