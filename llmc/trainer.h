// trainer.h: the training program around the window, shared by train_gpt2.c and train_gpt2.cu.
// A trainer's main() is: parse_args, init communication, build its device model as a Trainable,
// run_training. Everything here is the same on CPU and GPU.
#ifndef LLMC_TRAINER_H
#define LLMC_TRAINER_H

#include <dirent.h>
#include <sys/stat.h>
#include "utils.h"
#include "format.h"
#include "gpt2.h"
#include "args.h"
#include "comm.h"
#include "dataloader.h"
#include "schedule.h"
#include "tokenizer.h"
#include "rand.h"
#include "window.h"

// ----------------------------------------------------------------------------
// Initial parameters: a checkpoint file, or a preset initialized from the seed.

// GPT-2 initialization: N(0, 0.02) for matrices and embeddings, residual projections scaled by
// 1/sqrt(2L) so the residual stream's variance does not grow with depth; LayerNorm 1 and 0; biases 0.
static void gpt2_init_random(const GPT2Config* c, float* params, uint64_t seed) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_tensor_sizes(c, sizes);
    Rng rng;
    rng_seed(&rng, seed);
    float* p = params;
    float residual_std = 0.02f / sqrtf(2.0f * c->num_layers);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        const char* name = GPT2_TENSOR_NAMES[i];
        float std = (strcmp(name, "attprojw") == 0 || strcmp(name, "fcprojw") == 0) ? residual_std : 0.02f;
        int is_ln_weight = strcmp(name, "ln1w") == 0 || strcmp(name, "ln2w") == 0 || strcmp(name, "lnfw") == 0;
        for (size_t j = 0; j < sizes[i]; j++)
            p[j] = GPT2_TENSOR_DECAY[i] ? std * rng_normal(&rng) : (is_ln_weight ? 1.0f : 0.0f);
        if (strcmp(name, "wte") == 0)  // the padded vocabulary rows are never used: keep them zero
            memset(p + (size_t)c->vocab_size * c->channels, 0, (size_t)(c->padded_vocab_size - c->vocab_size) * c->channels * sizeof(float));
        p += sizes[i];
    }
}

// Returns host fp32 parameters (num_params) and fills the config.
static float* load_initial_parameters(const TrainOptions* o, GPT2Config* c) {
    if (gpt2_config_from_name(o->init, c)) {
        float* params = (float*)mallocCheck(gpt2_num_parameters(c) * sizeof(float));
        gpt2_init_random(c, params, (uint64_t)o->seed);
        return params;
    }
    FILE* probe = fopen(o->init, "rb");
    if (probe == NULL) die("flag -e: '%s' is neither a preset (tiny small d12 d24 d36 d48) nor a readable checkpoint", o->init);
    fclose(probe);
    return gpt2_load_checkpoint(o->init, c);
}

// ----------------------------------------------------------------------------
// Checkpoints. Step s = the state after s windows: model_<s>.bin (rank 0, llm.c format),
// state_<s>_<rank>.bin (each rank: its optimizer shard, RNG, loader position), then DONE_<s>
// once every rank has written. Every file is written atomically; DONE marks a complete set.

typedef struct {
    int header[HEADER_INTS];   // magic, version, step, world, rank, zero_stage, sync_each_microstep
    uint64_t config_hash, rng_state, train_next_row, opt_bytes;
} TrainStateHeader;

static void checkpoint_path(char* out, size_t n, const char* dir, const char* kind, int step, int rank) {
    if (rank >= 0) snprintf(out, n, "%s/%s_%08d_%05d.bin", dir, kind, step, rank);
    else snprintf(out, n, "%s/%s_%08d%s", dir, kind, step, strcmp(kind, "DONE") == 0 ? "" : ".bin");
}

static void save_checkpoint(const TrainOptions* o, Trainable* tr, Comm* c, int step, uint64_t config_hash,
                            const Rng* rng, const DataLoader* train) {
    char path[1200];
    if (c->rank == 0) {
        float* host = (float*)mallocCheck(tr->num_params * sizeof(float));
        tr->params_to_host(tr, host);
        checkpoint_path(path, sizeof(path), o->out_dir, "model", step, -1);
        gpt2_save_checkpoint(path, &tr->config, host);
        free(host);
    }
    TrainStateHeader h;
    memset(&h, 0, sizeof(h));
    h.header[0] = TRAIN_STATE_MAGIC; h.header[1] = TRAIN_STATE_VERSION; h.header[2] = step;
    h.header[3] = c->world; h.header[4] = c->rank; h.header[5] = o->zero_stage; h.header[6] = o->sync_each_microstep;
    h.config_hash = config_hash;
    h.rng_state = rng->state;
    h.train_next_row = train->next_row;
    h.opt_bytes = tr->opt_state_bytes(tr);
    void* opt = mallocCheck(h.opt_bytes);
    tr->opt_state_to_host(tr, opt);
    checkpoint_path(path, sizeof(path), o->out_dir, "state", step, c->rank);
    AtomicFile af;
    atomic_open(&af, path);
    atomic_write(&af, &h, sizeof(h), 1);
    atomic_write(&af, opt, 1, h.opt_bytes);
    atomic_commit(&af);
    free(opt);
    comm_barrier(c);  // every rank's state is on disk before DONE says so
    if (c->rank == 0) {
        checkpoint_path(path, sizeof(path), o->out_dir, "DONE", step, -1);
        atomic_open(&af, path);
        atomic_commit(&af);
        printf("checkpoint: wrote step %d to %s\n", step, o->out_dir);
    }
}

// The largest s with a DONE_<s> in dir, or -1.
static int latest_checkpoint_step(const char* dir) {
    DIR* d = opendir(dir);
    if (d == NULL) return -1;
    int best = -1;
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        int s;
        char tail;
        if (sscanf(e->d_name, "DONE_%8d%c", &s, &tail) == 1 && s > best) best = s;
    }
    closedir(d);
    return best;
}

// Loads model and this rank's state; every rank checks, and all agree before anyone proceeds.
static int resume_checkpoint(const TrainOptions* o, Trainable* tr, Comm* c, uint64_t config_hash,
                             Rng* rng, DataLoader* train) {
    int step = c->rank == 0 ? latest_checkpoint_step(o->out_dir) : -1;
    comm_broadcast(c, &step, sizeof(step), 0);
    if (step < 0) die("flag -y 1: no complete checkpoint (DONE_*) in '%s'", o->out_dir);
    char path[1200], reason[1400] = "";
    checkpoint_path(path, sizeof(path), o->out_dir, "state", step, c->rank);
    TrainStateHeader h;
    FILE* f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(reason, sizeof(reason), "cannot open '%s' (was the checkpoint written with fewer ranks than %d?)", path, c->world);
    } else if (fread(&h, sizeof(h), 1, f) != 1 || h.header[0] != TRAIN_STATE_MAGIC || h.header[1] != TRAIN_STATE_VERSION) {
        snprintf(reason, sizeof(reason), "'%s' is not a training state file of version %d", path, TRAIN_STATE_VERSION);
    } else if (h.header[3] != c->world) {
        snprintf(reason, sizeof(reason), "'%s' was written by a run with P=%d ranks, this run has P=%d: resume with the same P",
                 path, h.header[3], c->world);
    } else if (h.header[5] != o->zero_stage || h.header[6] != o->sync_each_microstep || h.config_hash != config_hash) {
        snprintf(reason, sizeof(reason), "'%s' was written with another configuration (model, batch, -pad, -z/-sync flags, or -shuffle/-seed)", path);
    } else if (h.opt_bytes != tr->opt_state_bytes(tr)) {
        snprintf(reason, sizeof(reason), "'%s' holds %llu optimizer bytes, expected %zu", path,
                 (unsigned long long)h.opt_bytes, tr->opt_state_bytes(tr));
    }
    comm_agree_or_die(c, "resuming from the checkpoint", reason[0] ? reason : NULL);
    // The model first, then the optimizer state: on the GPU the state holds the exact fp32 master
    // weights, of which the checkpoint's parameters are only the bf16 rounding.
    GPT2Config saved;
    char model_path[1200];
    checkpoint_path(model_path, sizeof(model_path), o->out_dir, "model", step, -1);
    float* params = gpt2_load_checkpoint(model_path, &saved);
    if (memcmp(&saved, &tr->config, sizeof(saved)) != 0) die("checkpoint '%s' holds another model config", model_path);
    tr->params_from_host(tr, params);
    free(params);
    void* opt = mallocCheck(h.opt_bytes);
    freadCheck(opt, 1, h.opt_bytes, f, path);
    fcloseCheck(f, path);
    tr->opt_state_from_host(tr, opt);
    free(opt);
    rng->state = h.rng_state;
    train->next_row = (size_t)h.train_next_row;
    if (c->rank == 0) printf("resumed from step %d in %s\n", step, o->out_dir);
    return step;
}

// ----------------------------------------------------------------------------
// Sampling (rank 0): GPT-2 decoding from <|endoftext|>, one token at a time.

static void sample_and_print(Trainable* tr, const Tokenizer* tk, Rng* rng, int gen_T) {
    int T = tr->T < gen_T ? tr->T : gen_T;
    int V = tr->config.vocab_size;
    int* tokens = (int*)mallocCheck((size_t)tr->B * tr->T * sizeof(int));
    float* logits = (float*)mallocCheck((size_t)V * sizeof(float));
    for (size_t i = 0; i < (size_t)tr->B * tr->T; i++) tokens[i] = GPT2_EOT;
    printf("sample: ");
    for (int t = 1; t < T; t++) {
        tr->next_token_logits(tr, tokens, t, logits);
        float maxv = logits[0], sum = 0.0f;
        for (int v = 1; v < V; v++) maxv = fmaxf(maxv, logits[v]);
        for (int v = 0; v < V; v++) { logits[v] = expf(logits[v] - maxv); sum += logits[v]; }
        for (int v = 0; v < V; v++) logits[v] /= sum;
        tokens[t] = sample_from_probs(logits, V, rng_uniform(rng));
        tokenizer_print(tk, tokens[t]);
    }
    printf("\n---\n");
    fflush(stdout);
    free(tokens);
    free(logits);
}

// ----------------------------------------------------------------------------
// The run.

// What must agree on every rank (paths may differ between nodes, so they are left out).
static uint64_t options_hash(const TrainOptions* o, const GPT2Config* c) {
    TrainOptions h = *o;
    h.train_data = h.val_data = h.init = h.tokenizer = h.out_dir = h.k_schedule = h.dump_grads = h.attn = NULL;
    uint64_t x = fnv1a(FNV1A_SEED, &h, sizeof(h));
    x = fnv1a(x, o->k_schedule, strlen(o->k_schedule));
    x = fnv1a(x, o->attn, strlen(o->attn));   // strings by value: their addresses differ between ranks
    return fnv1a(x, c, sizeof(*c));
}

// What a checkpoint must share with the run that resumes it: the model and the shape of the data
// and optimizer state. Step counts, schedules and evaluation settings may change between runs.
static uint64_t resume_hash(const TrainOptions* o, const GPT2Config* c) {
    int geometry[5] = { o->B, o->T, o->pad, o->zero_stage, o->sync_each_microstep };
    uint64_t x = fnv1a(fnv1a(FNV1A_SEED, geometry, sizeof(geometry)), c, sizeof(*c));
    if (o->shuffle) x = fnv1a(x, &o->seed, sizeof(o->seed));  // it draws the row order of the epoch in progress
    return x;
}

// K per step from -d, -k or -k_schedule.
static void resolve_k_schedule(const TrainOptions* o, int world, KSchedule* ks) {
    if (o->k_schedule[0]) {
        char err[256];
        if (kschedule_parse(ks, o->k_schedule, err, sizeof(err)) != 0) die("flag -k_schedule '%s': %s", o->k_schedule, err);
    } else if (o->K > 0) {
        kschedule_constant(ks, o->K);
    } else if (o->total_batch > 0) {
        long per_micro_step = (long)o->B * o->T * world;
        if (o->total_batch % per_micro_step != 0)
            die("flag -d %ld: the total batch must be a multiple of B*T*P = %d*%d*%d = %ld tokens",
                o->total_batch, o->B, o->T, world, per_micro_step);
        kschedule_constant(ks, (int)(o->total_batch / per_micro_step));
    } else if (o->total_batch == -1) {
        kschedule_constant(ks, 1);
    } else {
        die("flag -d expects a positive number of tokens, got %ld", o->total_batch);
    }
}

static void open_loader(DataLoader* dl, const char* pattern, const TrainOptions* o, Comm* c, int vocab, const char* what) {
    char err[1400];
    int rc = dataloader_open(dl, pattern, o->B, o->T, c->rank, c->world, o->pad, vocab, err, sizeof(err));
    comm_agree_or_die(c, what, rc == 0 ? NULL : err);
}

static void log_line(FILE* log, const char* fmt, int step, double value) {
    if (log == NULL) return;
    fprintf(log, fmt, step, value);
    fflush(log);
}

static int run_training(const TrainOptions* o, Trainable* tr, Comm* c) {
    const GPT2Config* cfg = &tr->config;
    int master = c->rank == 0;
    if (o->T > cfg->max_seq_len) die("flag -t %d exceeds the model's max_seq_len %d", o->T, cfg->max_seq_len);
    comm_check_same_everywhere(c, options_hash(o, cfg), "checking that every rank has the same configuration");
    uint64_t config_hash = resume_hash(o, cfg);

    KSchedule ks;
    resolve_k_schedule(o, c->world, &ks);
    DataLoader train, val;
    open_loader(&train, o->train_data, o, c, cfg->vocab_size, "opening the training data (-i)");
    if (o->shuffle) dataloader_shuffle(&train, o->seed);
    int has_val = o->val_data[0] != '\0' && o->val_every > 0;
    if (has_val) open_loader(&val, o->val_data, o, c, cfg->vocab_size, "opening the validation data (-j)");
    int max_steps = o->max_steps;
    if (max_steps < 0) {  // one epoch at the first step's K
        long rows_per_window = (long)o->B * c->world * kschedule_at(&ks, 0);
        max_steps = (int)(train.total_rows / rows_per_window);
        if (max_steps < 1) max_steps = 1;
    }
    if (master) {
        printf("data: %zu training rows of T=%d (%s layout) in %d shard(s), %s%s\n", train.total_rows, o->T,
               o->pad ? "padded" : "packed", train.num_shards, o->shuffle ? "shuffled each epoch" : "in file order",
               has_val ? "" : ", no validation");
        if (o->pad && train.rows_truncated)
            printf("data: %zu example(s) are longer than T=%d and will be truncated\n", train.rows_truncated, o->T);
        printf("window: P=%d ranks x K=%d micro-steps x B=%d rows x T=%d = %ld tokens per step%s; %s optimizer%s\n",
               c->world, kschedule_at(&ks, 0), o->B, o->T, (long)c->world * kschedule_at(&ks, 0) * o->B * o->T,
               ks.count > 1 ? " (K scheduled)" : "", o->zero_stage ? "sharded (ZeRO-1)" : "replicated (-z 0)",
               o->sync_each_microstep ? ", reduce-scatter each micro-step" : "");
        printf("steps: %d, lr %g warmup %d final fraction %g, weight decay %g, clip %g, comm back end %s\n",
               max_steps, o->lr, o->warmup, o->final_lr_frac, o->weight_decay, o->grad_clip, c->backend->name);
    }

    Tokenizer tk;
    memset(&tk, 0, sizeof(tk));
    if (master && o->sample_every > 0) tokenizer_init(&tk, o->tokenizer);
    Rng rng;
    rng_seed(&rng, (uint64_t)o->seed + 1);
    if (o->dump_grads[0] && master) {
        FILE* f = fopenCheck(o->dump_grads, "wb");  // start empty; ranks then write their slices
        fcloseCheck(f, o->dump_grads);
    }
    if (o->out_dir[0] && master) mkdir(o->out_dir, 0755);
    comm_barrier(c);

    int start = o->resume ? resume_checkpoint(o, tr, c, config_hash, &rng, &train) : 0;
    FILE* log = NULL;
    if (o->out_dir[0] && master) {
        char path[1100];
        snprintf(path, sizeof(path), "%s/main.log", o->out_dir);
        log = fopenCheck(path, o->resume ? "a" : "w");
    }

    WindowOptions wo = { o->zero_stage, o->sync_each_microstep, o->beta1, o->beta2, o->eps, o->weight_decay,
                         o->grad_clip, o->dump_grads[0] ? o->dump_grads : NULL };
    double total_ms = 0.0;
    int timed_steps = 0;
    CommStats window_comm;  // summed over windows, to show that nothing else was communicated in them
    memset(&window_comm, 0, sizeof(window_comm));
    for (int step = start; step <= max_steps; step++) {
        int last = step == max_steps;
        if (has_val && (step % o->val_every == 0 || last)) {
            double vl = evaluate_loss(tr, &val, c, o->val_steps);
            if (master && isnan(vl)) printf("val loss n/a (no valid target in %d validation batches)\n", o->val_steps);
            if (master && !isnan(vl)) printf("val loss %.6f\n", vl);
            if (!isnan(vl)) log_line(log, "s:%d tel:%.6f\n", step, vl);
        }
        if (master && o->sample_every > 0 && ((step > 0 && step % o->sample_every == 0) || last))
            sample_and_print(tr, &tk, &rng, o->gen_T);
        if (o->ckpt_every > 0 && step > start && (step % o->ckpt_every == 0 || last))
            save_checkpoint(o, tr, c, step, config_hash, &rng, &train);
        if (last) break;

        int K = kschedule_at(&ks, step);
        float lr = lr_at_step(step, o->lr, o->warmup, max_steps, o->final_lr_frac);
        double t0 = wall_seconds();
        WindowResult r = train_window(tr, &train, c, &wo, K, lr, step);
        double ms = 1e3 * (wall_seconds() - t0);
        if (step > start) { total_ms += ms; timed_steps++; }
        for (int kind = 0; kind < COMM_NUM_KINDS; kind++) {
            window_comm.calls[kind] += r.comm.calls[kind];
            window_comm.bytes[kind] += r.comm.bytes[kind];
        }
        if (!master) continue;
        if (step == start) comm_print_stats(&r.comm, "communication per window");
        double tokens = (double)c->world * K * o->B * o->T;
        printf("step %4d/%d | loss %.6f | N %.0f | norm %.4f | lr %.2e | K %d | %.1f ms (comm %.1f ms) | %.0f tok/s",
               step + 1, max_steps, r.loss, r.num_valid, r.grad_norm, lr, K, ms, 1e3 * r.comm.seconds, tokens / (ms / 1e3));
        if (tr->peak_flops > 0.0) {
            // MFU: 6 flops per parameter per token (forward 2, backward 4) plus attention's 12*L*C*T,
            // over the device's dense bf16 peak (PaLM appendix B).
            double flops_per_token = 6.0 * tr->num_params + 12.0 * cfg->num_layers * cfg->channels * o->T;
            printf(" | MFU %.1f%%", 100.0 * flops_per_token * tokens / c->world / (ms / 1e3) / tr->peak_flops);
        } else if (tr->peak_flops < 0.0) {
            printf(" | MFU unknown");
        }
        printf("%s\n", r.skipped ? " | skipped (N = 0)" : "");
        fflush(stdout);
        if (!r.skipped) log_line(log, "s:%d trl:%.6f\n", step, r.loss);
    }
    if (master && max_steps > start) {
        char title[64];
        snprintf(title, sizeof(title), "communication in %d window(s)", max_steps - start);
        comm_print_stats(&window_comm, title);
    }
    if (master && timed_steps > 0)
        printf("summary: mean_ms=%.2f tok_per_s=%.0f\n", total_ms / timed_steps,
               (double)c->world * kschedule_at(&ks, max_steps - 1) * o->B * o->T / (total_ms / timed_steps / 1e3));
    if (log) fclose(log);
    if (tk.tokens) tokenizer_free(&tk);
    dataloader_free(&train);
    if (has_val) dataloader_free(&val);
    return 0;
}

#endif // LLMC_TRAINER_H
