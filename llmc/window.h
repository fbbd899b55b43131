// window.h: one optimizer step ("window") of K micro-steps, identical for every device and back end.
//
//   micro-steps 1..K (no communication):   grads += d(sum of losses)/dparams,  loss_sum, valid += ...
//   end of window:
//     reduce-scatter(grads) -> this rank's shard G_r (summed over ranks)      [1 call]
//     all-reduce [loss_sum, N, |G_r|^2, stop] -> global sums                   [1 call]
//     g = G / N;  norm = |G| / N;  clip = min(1, grad_clip / (norm + 1e-6))
//     AdamW on this rank's shard with gradient G_r * (clip / N)
//     all-gather(params) -> every rank has every updated shard                [1 call]
//
// N is the number of valid targets in the whole window (all micro-steps, all ranks), so the update is
// the one a single device would make on the whole batch, however unevenly valid tokens fall.
// `stop` is 1 on a rank that was asked to stop (stop_signal below): its sum tells every rank, in the
// same call, so all ranks stop after the same window.
// The device math lives behind the Trainable interface; train_gpt2.c and train_gpt2.cu fill it in.
#ifndef LLMC_WINDOW_H
#define LLMC_WINDOW_H

#include <math.h>
#include <signal.h>
#include <fcntl.h>
#include <unistd.h>
#include "utils.h"
#include "gpt2.h"
#include "comm.h"
#include "dataloader.h"

// One AdamW call: `count` elements of one tensor, so the weight decay is that tensor's.
typedef struct {
    const void* grad;      // gradient of element param_offset (same dtype as the gradient buffer)
    size_t param_offset;   // index into the full parameter buffer
    size_t state_offset;   // index into this rank's optimizer state (m, v, fp32 master weights)
    size_t count;
    float lr, beta1, beta2, eps, weight_decay;
    float grad_scale;      // clip / N: the normalization and the clipping in one factor
    int t;                 // 1-based optimizer step, for bias correction
} AdamWArgs;

typedef struct Trainable Trainable;
struct Trainable {
    void* self;                 // the device model (GPT2 on CPU, GPT2 on GPU)
    GPT2Config config;
    size_t num_params;          // parameters in the checkpoint
    size_t shard_size;          // S = ceil(num_params / P); the buffers below hold S * P elements
    int B, T;
    DType grad_type, param_type;
    void* params;               // (S*P) what forward reads; all-gathered after the update
    void* grads;                // (S*P) summed (not averaged) gradient of this rank's micro-steps
    void* grad_shard;           // (S) this rank's reduce-scatter result (ZeRO-1); may be grads + rank*S (in place)
    void* grad_shard_acc;       // (S) sum of per-micro-step shards with sync-each-micro-step, else NULL
    size_t opt_offset, opt_count;  // the parameter range this rank's optimizer owns
    double peak_flops;          // of the device, for MFU; 0 = unknown or not applicable
    // Device math. forward_backward returns the micro-step's loss sum and adds its gradient to grads.
    void   (*zero_grads)(Trainable* tr);
    double (*forward_backward)(Trainable* tr, const int* inputs, const int* targets);
    double (*forward_loss)(Trainable* tr, const int* inputs, const int* targets);
    // Forward with targets; losses (B*T) gets each position's loss, 0 where the target is -1 (HellaSwag).
    void   (*token_losses)(Trainable* tr, const int* inputs, const int* targets, float* losses);
    void   (*next_token_logits)(Trainable* tr, const int* tokens, int t, float* logits);  // (V) at position t-1
    void   (*zero_shard_acc)(Trainable* tr);
    void   (*accumulate_shard)(Trainable* tr);              // grad_shard_acc += grad_shard
    double (*sumsq)(Trainable* tr, const void* grad, size_t count);
    void   (*adamw)(Trainable* tr, const AdamWArgs* a);
    void   (*grads_to_host)(Trainable* tr, const void* grad, size_t count, float* out);
    void   (*params_to_host)(Trainable* tr, float* out);     // (num_params) fp32
    void   (*params_from_host)(Trainable* tr, const float* in);  // also the fp32 master weights, if any
    size_t (*opt_state_bytes)(Trainable* tr);
    void   (*opt_state_to_host)(Trainable* tr, void* out);
    void   (*opt_state_from_host)(Trainable* tr, const void* in);  // after params_from_host when resuming
};

typedef struct {
    int zero_stage;             // 1: sharded optimizer (ZeRO-1), 0: all-reduce + replicated optimizer
    int sync_each_microstep;    // reduce-scatter after every micro-step into grad_shard_acc
    float beta1, beta2, eps, weight_decay, grad_clip;
    const char* dump_grads;     // append each window's normalized gradient here (tests), or NULL
} WindowOptions;

// The signal that asked this rank to stop, 0 for none: recorded by trainer.h's SIGTERM and SIGUSR1
// handler (a handler can only set a global), read by each window once, for its all-reduce.
static volatile sig_atomic_t stop_signal = 0;

typedef struct {
    double loss;                // loss_sum / N
    double num_valid;           // N
    double grad_norm;           // |G| / N, before clipping
    int skipped;                // N == 0: no update
    int nonfinite;              // the loss or the gradient norm is NaN or Inf: no update (the caller stops)
    int stop;                   // some rank was asked to stop: every rank stops after this window
    CommStats comm;             // what this window communicated
} WindowResult;

// Runs AdamW over params [lo, lo+count), split at tensor boundaries so each call has one decay flag.
// grad points at the gradient of element lo. The padding beyond num_params is never updated.
static void window_adamw_range(Trainable* tr, const void* grad, size_t lo, size_t count, AdamWArgs a) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_tensor_sizes(&tr->config, sizes);
    size_t hi = lo + count, start = 0;
    float decay = a.weight_decay;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        size_t end = start + sizes[i];
        size_t a0 = start > lo ? start : lo, a1 = end < hi ? end : hi;
        if (a0 < a1) {
            a.grad = (const char*)grad + (a0 - lo) * dtype_size(tr->grad_type);
            a.param_offset = a0;
            a.state_offset = a0 - lo;
            a.count = a1 - a0;
            a.weight_decay = GPT2_TENSOR_DECAY[i] ? decay : 0.0f;
            tr->adamw(tr, &a);
        }
        start = end;
    }
}

// Tests compare gradients across P, K and layouts: each rank writes its slice of the normalized
// gradient at its place in the file (window w occupies floats [w*num_params, (w+1)*num_params)).
static void window_dump_gradient(Trainable* tr, const Comm* c, const char* path, long window_index,
                                 const void* shard, double num_valid) {
    size_t lo = (size_t)c->rank * tr->shard_size;
    size_t count = lo >= tr->num_params ? 0 : (tr->num_params - lo < tr->shard_size ? tr->num_params - lo : tr->shard_size);
    if (count == 0) return;
    float* host = (float*)mallocCheck(count * sizeof(float));
    tr->grads_to_host(tr, shard, count, host);
    for (size_t i = 0; i < count; i++) host[i] = (float)(host[i] / num_valid);
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) die("cannot open gradient dump '%s': %s", path, strerror(errno));
    off_t offset = (off_t)(((size_t)window_index * tr->num_params + lo) * sizeof(float));
    ssize_t put = pwrite(fd, host, count * sizeof(float), offset);
    if (put != (ssize_t)(count * sizeof(float))) die("cannot write gradient dump '%s': %s", path, strerror(errno));
    close(fd);
    free(host);
}

// One window: K micro-steps from the loader, then the exact normalized, clipped, sharded update.
static WindowResult train_window(Trainable* tr, DataLoader* loader, Comm* c, const WindowOptions* o,
                                 int K, float lr, int step) {
    CommStats before = c->stats;
    WindowResult r;
    memset(&r, 0, sizeof(r));
    size_t S = tr->shard_size;
    size_t BT = (size_t)tr->B * tr->T;
    // The per-micro-step reduce-scatter leaves each rank only its shard of the gradient, which the
    // replicated optimizer (-z 0, AdamW over the whole buffer) cannot use: refuse here, not only in the flags.
    if (o->sync_each_microstep && o->zero_stage != 1)
        die("-sync_each_microstep 1 needs the sharded optimizer (-z 1): with -z 0 every rank updates all parameters from the full gradient");
    if (o->sync_each_microstep && tr->grad_shard_acc == NULL)
        die("internal: -sync_each_microstep 1 but the model has no shard accumulator (grad_shard_acc)");

    // 1. K micro-steps: forward, backward, gradients summed into tr->grads. No communication
    //    (except with -sync_each_microstep, which trades K reduce-scatters for the grads memory).
    tr->zero_grads(tr);
    if (o->sync_each_microstep) tr->zero_shard_acc(tr);
    double loss_sum = 0.0, valid = 0.0;
    for (int k = 0; k < K; k++) {
        dataloader_next_batch(loader);
        valid += (double)count_valid_targets(loader->targets, BT);
        loss_sum += tr->forward_backward(tr, loader->inputs, loader->targets);
        if (o->sync_each_microstep) {
            comm_reduce_scatter(c, tr->grads, tr->grad_shard, S, tr->grad_type);
            tr->accumulate_shard(tr);
            tr->zero_grads(tr);
        }
    }

    // 2. Sum the gradient over ranks: each rank ends with the shard it will update.
    const void* shard;
    if (o->sync_each_microstep) {
        shard = tr->grad_shard_acc;
    } else if (o->zero_stage == 1) {
        comm_reduce_scatter(c, tr->grads, tr->grad_shard, S, tr->grad_type);
        shard = tr->grad_shard;
    } else {
        comm_all_reduce(c, tr->grads, S * c->world, tr->grad_type);
        shard = (const char*)tr->grads + (size_t)c->rank * S * dtype_size(tr->grad_type);
    }

    // 3. One tiny all-reduce: loss sum, valid count, squared norm of the summed gradient, and how many
    //    ranks were asked to stop (a signal may reach one rank only). Doubles count tokens exactly up to 2^53.
    double asked_to_stop = stop_signal != 0 ? 1.0 : 0.0;
    double scalars[4] = { loss_sum, valid, tr->sumsq(tr, shard, S), asked_to_stop };
    comm_scalars(c, scalars, 4);
    double N = scalars[1];
    r.num_valid = N;
    r.stop = scalars[3] > 0.0;
    // Every rank holds the same sums, so every rank takes the same branch: no rank is left waiting
    // in the all-gather. A NaN or Inf would spread to every parameter through AdamW: skip the update.
    if (!isfinite(scalars[0]) || !isfinite(scalars[2])) {
        r.nonfinite = 1;
        r.loss = N > 0.0 ? scalars[0] / N : scalars[0];
        r.grad_norm = N > 0.0 ? sqrt(scalars[2]) / N : sqrt(scalars[2]);
        r.comm = comm_stats_diff(&c->stats, &before);
        return r;
    }
    if (N == 0.0) {
        warn("step %d: no valid target in the window (all masked): update skipped", step);
        r.skipped = 1;
        r.comm = comm_stats_diff(&c->stats, &before);
        return r;
    }
    r.loss = scalars[0] / N;
    r.grad_norm = sqrt(scalars[2]) / N;  // |G/N| = |G|/N
    if (o->dump_grads) window_dump_gradient(tr, c, o->dump_grads, step, shard, N);

    // 4. AdamW on the owned range with gradient G * clip / N, then share the updated parameters.
    double clip = o->grad_clip > 0.0f ? fmin(1.0, o->grad_clip / (r.grad_norm + 1e-6)) : 1.0;
    AdamWArgs a;
    memset(&a, 0, sizeof(a));
    a.lr = lr; a.beta1 = o->beta1; a.beta2 = o->beta2; a.eps = o->eps; a.weight_decay = o->weight_decay;
    a.grad_scale = (float)(clip / N);
    a.t = step + 1;
    if (o->zero_stage == 1) {
        window_adamw_range(tr, shard, (size_t)c->rank * S, S, a);
        comm_all_gather(c, tr->params, S, tr->param_type);
    } else {
        window_adamw_range(tr, tr->grads, 0, S * c->world, a);
    }
    r.comm = comm_stats_diff(&c->stats, &before);
    return r;
}

// Forward only over the first `rows` rows of the loader's stream (at most all of them, each once),
// split over ranks as in training: ceil(rows / (B*P)) micro-steps, and the rows past `rows` in the
// last one masked. So the loss covers the same rows for any P and B. Returns the token-weighted mean
// loss over all ranks, with the valid target count in *num_valid (the mean is NaN when it is 0).
static double evaluate_loss(Trainable* tr, DataLoader* loader, Comm* c, size_t rows, double* num_valid) {
    if (rows > loader->total_rows) rows = loader->total_rows;
    size_t per_step = (size_t)tr->B * c->world;
    size_t steps = (rows + per_step - 1) / per_step;
    dataloader_reset(loader);
    double sums[2] = { 0.0, 0.0 };
    for (size_t i = 0; i < steps; i++) {
        size_t first = loader->next_row + (size_t)c->rank * tr->B;  // stream position of this rank's row 0
        dataloader_next_batch(loader);
        for (int b = 0; b < tr->B; b++)
            if (first + b >= rows)
                for (int t = 0; t < tr->T; t++) loader->targets[(size_t)b * tr->T + t] = -1;
        sums[1] += (double)count_valid_targets(loader->targets, (size_t)tr->B * tr->T);
        sums[0] += tr->forward_loss(tr, loader->inputs, loader->targets);
    }
    comm_scalars(c, sums, 2);
    *num_valid = sums[1];
    return sums[1] > 0.0 ? sums[0] / sums[1] : NAN;
}

#endif // LLMC_WINDOW_H
