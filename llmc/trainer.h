// trainer.h: the training program around the window, shared by train_gpt2.c and train_gpt2.cu.
// A trainer's main() is: parse_args, init communication, build its device model as a Trainable,
// run_training. Everything here is the same on CPU and GPU.
#ifndef LLMC_TRAINER_H
#define LLMC_TRAINER_H

#include <dirent.h>
#include <signal.h>
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
#include "hellaswag.h"

// ----------------------------------------------------------------------------
// Flags: every rank reads its own command line, and a bad one stops the job with one line (ranks that
// fail alike leave it to rank 0), before anything is loaded.

static void parse_args_on_every_rank(TrainOptions* o, int argc, char** argv, Comm* c) {
    char err[512] = "";
    int rc = parse_args(o, argc, argv, err, sizeof(err));
    comm_agree_or_die(c, "reading the flags", rc == 0 ? NULL : err);
}

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

// The largest activation tensors grow as B*T*Vp (logits, probabilities), B*NH*T*T*L (attention) and
// B*T*C*L (the layers). Their sizes are computed in double, where they cannot wrap, and refused past
// 2^62 bytes: so the trainers' size_t arithmetic over them cannot overflow. Returns 0 or -1 with err.
static int check_activation_sizes(const TrainOptions* o, const GPT2Config* c, char* err, size_t n) {
    double BT = (double)o->B * o->T;
    double floats = BT * c->padded_vocab_size * 2.0 + BT * c->num_heads * (double)o->T * c->num_layers * 2.0
                  + BT * c->channels * c->num_layers * 32.0;
    if (floats * 4.0 > 4.6e18)
        return fail_with(err, n, "flags -b %d -t %d: the activations of this model would need about %.3g bytes, past 2^62",
                         o->B, o->T, floats * 4.0);
    return 0;
}

// Reads the -e checkpoint file; NULL with a reason if it is not one, is corrupt, or holds NaN or Inf.
static float* load_checkpoint_file(const char* path, GPT2Config* c, char* err, size_t n) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        fail_with(err, n, "flag -e: '%s' is neither a preset (tiny small d12 d24 d36 d48) nor a readable checkpoint file", path);
        return NULL;
    }
    float* params = gpt2_try_load_checkpoint(path, c, err, n);
    long bad = params ? first_nonfinite(params, gpt2_num_parameters(c)) : -1;
    if (bad >= 0) {
        fail_with(err, n, "checkpoint '%s' (-e) holds %g at parameter %ld (in %s): expected finite numbers", path,
                  params[bad], bad, gpt2_tensor_name_at(c, (size_t)bad));
        free(params);
        return NULL;
    }
    return params;
}

// Returns host fp32 parameters (num_params) and fills the config. Checks -t against the model's
// max_seq_len and the activation sizes here, before the trainer allocates anything for (B, T).
// Every rank loads its own -e; all agree before anyone aborts (one line when all fail alike).
static float* load_initial_parameters(const TrainOptions* o, GPT2Config* c, Comm* comm) {
    char err[1400] = "";
    float* params = NULL;
    if (gpt2_config_from_name(o->init, c)) {
        params = (float*)mallocCheck(gpt2_num_parameters(c) * sizeof(float));
        gpt2_init_random(c, params, (uint64_t)o->seed);
    } else {
        params = load_checkpoint_file(o->init, c, err, sizeof(err));
    }
    if (params != NULL && o->T > c->max_seq_len)
        fail_with(err, sizeof(err), "flag -t %d exceeds the model's max_seq_len %d", o->T, c->max_seq_len);
    else if (params != NULL)
        check_activation_sizes(o, c, err, sizeof(err));
    comm_agree_or_die(comm, "loading the initial model (-e)", err[0] ? err : NULL);
    return params;
}

// ----------------------------------------------------------------------------
// Checkpoints. Step s = the state after s windows: model_<s>.bin (rank 0, llm.c format plus a stamp
// in unused header slots), state_<s>_<rank>.bin (each rank: its optimizer shard, RNG, loader
// position), then DONE_<s> once every rank has written. Every file is written atomically; DONE marks
// a complete set. Each file knows its step, the identity of its run (resume_hash: what must match on
// resume) and a checksum of its contents, so a file copied from another step or run, or damaged,
// is refused on resume with one line.

typedef struct {
    int header[HEADER_INTS];   // magic, version, step, world, rank, zero_stage, sync_each_microstep
    uint64_t config_hash;      // the run identity, resume_hash()
    uint64_t rng_state, train_next_row, opt_bytes;
    uint64_t opt_checksum;     // FNV-1a of the opt_bytes that follow
    uint64_t model_checksum;   // of model_<step>.bin's parameters, as its stamp says
} TrainStateHeader;

static void checkpoint_path(char* out, size_t n, const char* dir, const char* kind, int step, int rank) {
    int len = rank >= 0 ? snprintf(out, n, "%s/%s_%08d_%05d.bin", dir, kind, step, rank)
                        : snprintf(out, n, "%s/%s_%08d%s", dir, kind, step, strcmp(kind, "DONE") == 0 ? "" : ".bin");
    if (len < 0 || (size_t)len >= n) die("flag -o: checkpoint path for '%s' longer than %zu characters", dir, n - 1);
}

// The checkpoint files this project writes in a directory: model_*, state_*, DONE_* (and their .tmp).
static int is_checkpoint_file(const char* name) {
    return strncmp(name, "model_", 6) == 0 || strncmp(name, "state_", 6) == 0 || strncmp(name, "DONE_", 5) == 0;
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

// Rank 0, fresh run (-y 0): another run's complete checkpoint (a DONE_<s>) in -o would be resumed by
// a later -y 1 in place of this run's (its step may be newer). Refuse, or with -overwrite 1 delete
// every checkpoint file there. Files of an incomplete step (no DONE) are never resumed: a run killed
// during its first checkpoint can simply be started again. Returns NULL or a one-line reason in buf.
static const char* claim_output_dir(const TrainOptions* o, char* buf, size_t n) {
    int done_step = latest_checkpoint_step(o->out_dir);
    if (done_step >= 0 && !o->overwrite) {
        snprintf(buf, n, "flag -o: '%s' holds another run's checkpoint (DONE_%08d): resume it with -y 1, or delete its "
                 "checkpoint files with -overwrite 1", o->out_dir, done_step);
        return buf;
    }
    if (!o->overwrite) return NULL;
    DIR* d = opendir(o->out_dir);
    if (d == NULL) return NULL;  // created below
    const char* reason = NULL;
    struct dirent* e;
    char path[1200];
    while (reason == NULL && (e = readdir(d)) != NULL) {
        if (!is_checkpoint_file(e->d_name)) continue;
        snprintf(path, sizeof(path), "%s/%s", o->out_dir, e->d_name);
        if (unlink(path) != 0) {
            snprintf(buf, n, "flag -overwrite 1: cannot delete '%s': %s", path, strerror(errno));
            reason = buf;
        }
    }
    closedir(d);
    return reason;
}

static void save_checkpoint(const TrainOptions* o, Trainable* tr, Comm* c, int step, uint64_t config_hash,
                            const Rng* rng, const DataLoader* train) {
    char path[1200], reason[400] = "";
    ModelStamp stamp = { 1, step, config_hash, 0 };
    float* host = NULL;
    if (c->rank == 0) {
        host = (float*)mallocCheck(tr->num_params * sizeof(float));
        tr->params_to_host(tr, host);
        long bad = first_nonfinite(host, tr->num_params);
        if (bad >= 0) snprintf(reason, sizeof(reason), "step %d: parameter %ld (in %s) is %g: no checkpoint is written "
                               "with non-finite numbers (the previous one is intact)", step, bad,
                               gpt2_tensor_name_at(&tr->config, (size_t)bad), host[bad]);
        stamp.checksum = fnv1a(FNV1A_SEED, host, tr->num_params * sizeof(float));
    }
    comm_agree_or_die(c, "checking the parameters before a checkpoint", reason[0] ? reason : NULL);
    comm_broadcast(c, &stamp.checksum, sizeof(stamp.checksum), 0);  // every state file names its model
    if (c->rank == 0) {
        checkpoint_path(path, sizeof(path), o->out_dir, "model", step, -1);
        gpt2_save_checkpoint_stamped(path, &tr->config, host, &stamp);
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
    h.opt_checksum = fnv1a(FNV1A_SEED, opt, h.opt_bytes);
    h.model_checksum = stamp.checksum;
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

// Reads and checks this rank's state file of `step`; returns its optimizer bytes, or NULL with a
// one-line reason (so that every rank can agree before anyone aborts).
static void* read_train_state(const char* path, int step, const TrainOptions* o, Trainable* tr, const Comm* c,
                              uint64_t config_hash, TrainStateHeader* h, char* reason, size_t n) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(reason, n, "cannot open '%s' (was the checkpoint written with fewer ranks than %d?)", path, c->world);
        return NULL;
    }
    long size = file_size_of(f, path);
    void* opt = NULL;
    if (fread(h, sizeof(*h), 1, f) != 1 || h->header[0] != TRAIN_STATE_MAGIC || h->header[1] != TRAIN_STATE_VERSION) {
        snprintf(reason, n, "'%s' is not a training state file of version %d", path, TRAIN_STATE_VERSION);
    } else if (h->header[2] != step || h->header[4] != c->rank) {
        snprintf(reason, n, "'%s' holds step %d of rank %d, expected step %d of rank %d (a file copied from another checkpoint?)",
                 path, h->header[2], h->header[4], step, c->rank);
    } else if (h->header[3] != c->world) {
        snprintf(reason, n, "'%s' was written by a run with P=%d ranks, this run has P=%d: resume with the same P",
                 path, h->header[3], c->world);
    } else if (h->header[5] != o->zero_stage || h->header[6] != o->sync_each_microstep || h->config_hash != config_hash) {
        snprintf(reason, n, "'%s' was written with another configuration (model, batch, -pad, -z/-sync flags, or -shuffle/-seed)", path);
    } else if (h->opt_bytes != tr->opt_state_bytes(tr)) {
        snprintf(reason, n, "'%s' holds %llu optimizer bytes, expected %zu", path,
                 (unsigned long long)h->opt_bytes, tr->opt_state_bytes(tr));
    } else if ((unsigned long)size != sizeof(*h) + h->opt_bytes) {
        snprintf(reason, n, "'%s' is %ld bytes, expected %zu (truncated, or trailing bytes)", path, size, sizeof(*h) + (size_t)h->opt_bytes);
    } else {
        opt = mallocCheck(h->opt_bytes);
        long bad = -1;
        if (fread(opt, 1, h->opt_bytes, f) != h->opt_bytes) {
            snprintf(reason, n, "cannot read '%s': %s", path, strerror(errno));
        } else if (fnv1a(FNV1A_SEED, opt, h->opt_bytes) != h->opt_checksum) {
            snprintf(reason, n, "'%s' fails its checksum: the optimizer state is damaged", path);
        } else if ((bad = first_nonfinite((const float*)opt, h->opt_bytes / sizeof(float))) >= 0) {
            // Both trainers' optimizer state is fp32 (m, v and, on the GPU, master weights).
            snprintf(reason, n, "'%s' holds %g at optimizer value %ld: expected finite numbers", path, ((const float*)opt)[bad], bad);
        }
        if (reason[0]) { free(opt); opt = NULL; }
    }
    fclose(f);
    return opt;
}

// Reads model_<step>.bin and checks its stamp against the run and the state file; NULL with a reason.
static float* read_checkpoint_model(const char* path, int step, Trainable* tr, uint64_t config_hash,
                                    uint64_t model_checksum, char* reason, size_t n) {
    GPT2Config saved;
    float* params = gpt2_try_load_checkpoint(path, &saved, reason, n);
    if (params == NULL) return NULL;
    ModelStamp stamp = gpt2_read_stamp(path);
    if (memcmp(&saved, &tr->config, sizeof(saved)) != 0) {
        snprintf(reason, n, "checkpoint '%s' holds another model config", path);
    } else if (!stamp.present) {
        snprintf(reason, n, "checkpoint '%s' has no step and run stamp (not written by a training run's checkpoint)", path);
    } else if (stamp.run_id != config_hash) {
        snprintf(reason, n, "checkpoint '%s' belongs to another run (another model or batch geometry)", path);
    } else if (stamp.step != step) {
        snprintf(reason, n, "checkpoint '%s' holds step %d, expected step %d (a file copied from another checkpoint?)", path, stamp.step, step);
    } else if (fnv1a(FNV1A_SEED, params, tr->num_params * sizeof(float)) != stamp.checksum || stamp.checksum != model_checksum) {
        snprintf(reason, n, "checkpoint '%s' fails its checksum (damaged, or not the model of this step's state files)", path);
    }
    if (reason[0]) { free(params); return NULL; }
    return params;
}

// Loads model and this rank's state; every rank checks, and all agree before anyone proceeds.
static int resume_checkpoint(const TrainOptions* o, Trainable* tr, Comm* c, uint64_t config_hash,
                             Rng* rng, DataLoader* train) {
    int step = c->rank == 0 ? latest_checkpoint_step(o->out_dir) : -1;
    comm_broadcast(c, &step, sizeof(step), 0);
    char path[1200], reason[1400] = "";
    if (step < 0) {
        snprintf(reason, sizeof(reason), "flag -y 1: no complete checkpoint (DONE_*) in '%s'", o->out_dir);
        comm_agree_or_die(c, "resuming", c->rank == 0 ? reason : NULL);  // the same on every rank: one line
    }
    checkpoint_path(path, sizeof(path), o->out_dir, "state", step, c->rank);
    TrainStateHeader h;
    void* opt = read_train_state(path, step, o, tr, c, config_hash, &h, reason, sizeof(reason));
    // The model first, then the optimizer state: on the GPU the state holds the exact fp32 master
    // weights, of which the checkpoint's parameters are only the bf16 rounding.
    float* params = NULL;
    if (opt != NULL) {
        checkpoint_path(path, sizeof(path), o->out_dir, "model", step, -1);
        params = read_checkpoint_model(path, step, tr, config_hash, h.model_checksum, reason, sizeof(reason));
    }
    comm_agree_or_die(c, "resuming from the checkpoint", reason[0] ? reason : NULL);
    tr->params_from_host(tr, params);
    free(params);
    tr->opt_state_from_host(tr, opt);
    free(opt);
    rng->state = h.rng_state;
    train->next_row = (size_t)h.train_next_row;
    if (c->rank == 0) printf("resumed from step %d in %s\n", step, o->out_dir);
    return step;
}

// ----------------------------------------------------------------------------
// Sampling (rank 0): GPT-2 decoding from the end-of-text token, one token at a time.

// The token samples start from: the tokenizer's end-of-text, or GPT-2's without a tokenizer.
// -1 when the model's vocabulary has no such token (a model with its own smaller vocabulary).
static int sample_start_token(const Tokenizer* tk, int vocab_size) {
    int eot = tk->tokens ? tk->eot_token : GPT2_EOT;
    return eot >= 0 && eot < vocab_size ? eot : -1;
}

static void sample_and_print(Trainable* tr, const Tokenizer* tk, Rng* rng, int gen_T, int start_token, int step) {
    int T = tr->T < gen_T ? tr->T : gen_T;
    int V = tr->config.vocab_size;
    int* tokens = (int*)mallocCheck((size_t)tr->B * tr->T * sizeof(int));
    float* logits = (float*)mallocCheck((size_t)V * sizeof(float));
    for (size_t i = 0; i < (size_t)tr->B * tr->T; i++) tokens[i] = start_token;
    printf("sample: ");
    for (int t = 1; t < T; t++) {
        tr->next_token_logits(tr, tokens, t, logits);
        long bad = first_nonfinite(logits, (size_t)V);
        if (bad >= 0) die("step %d: sampling: logit %ld is %g (the parameters hold NaN or Inf)", step, bad, logits[bad]);
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
// Every rank agrees before it computes: options, model, initial parameters, data sizes, steps.

// Hash of this rank's parameters as fp32 (what the checkpoint would hold), to compare across ranks.
static uint64_t parameters_hash(Trainable* tr) {
    float* host = (float*)mallocCheck(tr->num_params * sizeof(float));
    tr->params_to_host(tr, host);
    uint64_t h = fnv1a(FNV1A_SEED, host, tr->num_params * sizeof(float));
    free(host);
    return h;
}

// A hash as a double for comm_agree_on_values: 53 of its bits, exactly.
static double hash_value(uint64_t h) { return (double)(h >> 11); }

// Every numeric flag (each by name), the K schedule and the model config must be the same on every
// rank (paths may differ between nodes, so only whether each is given is compared), and so must the
// initial parameters.
static void agree_on_options(const TrainOptions* o, Trainable* tr, Comm* c) {
    enum { EXTRA = 12 };
    double values[NUM_TRAIN_ARGS + EXTRA];
    const char* names[NUM_TRAIN_ARGS + EXTRA];
    int n = 0;
    for (int i = 0; i < NUM_TRAIN_ARGS; i++) {
        const ArgSpec* s = &TRAIN_ARGS[i];
        const char* field = (const char*)o + s->offset;
        if (s->kind == ARG_STRING) continue;
        names[n] = s->flag;
        values[n++] = s->kind == ARG_INT ? *(const int*)field : s->kind == ARG_LONG ? (double)*(const long*)field : *(const float*)field;
    }
    const GPT2Config* cfg = &tr->config;
    // Whether a path is given decides collectives (validation, checkpoints), so that must match too.
    names[n] = "whether -j is given";     values[n++] = o->val_data[0] != '\0';
    names[n] = "whether -o is given";     values[n++] = o->out_dir[0] != '\0';
    names[n] = "whether -dump_grads is given"; values[n++] = o->dump_grads[0] != '\0';
    names[n] = "-k_schedule";           values[n++] = hash_value(fnv1a(FNV1A_SEED, o->k_schedule, strlen(o->k_schedule)));
    names[n] = "-attn";                 values[n++] = hash_value(fnv1a(FNV1A_SEED, o->attn, strlen(o->attn)));
    names[n] = "the model's max_seq_len"; values[n++] = cfg->max_seq_len;
    names[n] = "the model's vocab_size";  values[n++] = cfg->vocab_size;
    names[n] = "the model's padded_vocab_size"; values[n++] = cfg->padded_vocab_size;
    names[n] = "the model's num_layers";  values[n++] = cfg->num_layers;
    names[n] = "the model's num_heads";   values[n++] = cfg->num_heads;
    names[n] = "the model's channels";    values[n++] = cfg->channels;
    names[n] = "the hash of the initial parameters (-e)"; values[n++] = hash_value(parameters_hash(tr));
    comm_agree_on_values(c, "checking that every rank has the same configuration", values, names, n);
}

// ----------------------------------------------------------------------------
// Told to stop. A cluster ends a run with a signal some time before the kill: Slurm sends SIGTERM at
// preemption and at the time limit (or the signal asked for, --signal=USR1@120, that long before it),
// Kubernetes sends SIGTERM. The handler only records the signal (window.h's stop_signal); the window
// in progress finishes, the record travels in its scalar all-reduce, and every rank checkpoints the
// same step and exits with EXIT_STOPPED (args.h). A second signal records itself again, so it cannot
// interrupt the checkpoint being written.

static void record_stop_signal(int signo) { stop_signal = signo; }

// SA_RESTART: a read or write under way when the signal lands carries on instead of failing with EINTR.
static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = record_stop_signal;
    sa.sa_flags = SA_RESTART;
    if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGUSR1, &sa, NULL) != 0)
        die("cannot install the SIGTERM and SIGUSR1 handlers: %s", strerror(errno));
}

static const char* stop_signal_name(int signo) {
    return signo == SIGTERM ? "SIGTERM" : signo == SIGUSR1 ? "SIGUSR1" : "a signal to another rank";
}

// ----------------------------------------------------------------------------
// The run.

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
        long per_micro_step = (long)o->B * o->T * world;  // B*T < 2^31 (parse_args) and P < 2^31: no overflow
        if (o->total_batch % per_micro_step != 0)
            die("flag -d %ld: the total batch must be a multiple of B*T*P = %d*%d*%d = %ld tokens",
                o->total_batch, o->B, o->T, world, per_micro_step);
        long K = o->total_batch / per_micro_step;
        if (K > INT_MAX) die("flag -d %ld: K = d/(B*T*P) = %ld micro-steps, expected at most %d", o->total_batch, K, INT_MAX);
        kschedule_constant(ks, (int)K);
    } else {
        kschedule_constant(ks, 1);  // -d -1 and no -k: one micro-step
    }
    // Rows per window, K*B*P, count stream positions in size_t: refuse a schedule that overflows it.
    for (int i = 0; i < ks->count; i++) {
        size_t rows;
        if (!size_mul_ok((size_t)ks->k[i], (size_t)o->B * (size_t)world, &rows))
            die("K = %d at step %d: K*B*P rows per window overflows (B=%d, P=%d)", ks->k[i], ks->start[i], o->B, world);
    }
}

static void open_loader(DataLoader* dl, const char* pattern, const TrainOptions* o, Comm* c, int vocab, const char* what) {
    char err[1400];
    int rc = dataloader_open(dl, pattern, o->B, o->T, c->rank, c->world, o->pad, vocab, err, sizeof(err));
    comm_agree_or_die(c, what, rc == 0 ? NULL : err);
}

// main.log: every write is checked, so a full disk stops the run instead of losing the log.
typedef struct {
    FILE* f;                   // NULL: no log (no -o, or not rank 0)
    char path[1100];
} TrainLog;

static void log_open(TrainLog* log, const TrainOptions* o, int master) {
    memset(log, 0, sizeof(*log));
    if (!master) return;
    if (o->log_file[0]) snprintf(log->path, sizeof(log->path), "%s", o->log_file);  // -log: at most MAX_PATH_CHARS
    else if (o->out_dir[0]) snprintf(log->path, sizeof(log->path), "%s/main.log", o->out_dir);  // -o: the same
    else return;
    log->f = fopen(log->path, o->resume ? "a" : "w");
    if (log->f == NULL)
        die("%s: cannot open '%s' for writing: %s", o->log_file[0] ? "flag -log" : "flag -o", log->path, strerror(errno));
}

// One line, "s:<step> key:value ..." (doc/formats.md; dev/plot_log.py reads it).
static void log_line(TrainLog* log, const char* fmt, ...) {
    if (log->f == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    int written = vfprintf(log->f, fmt, ap);
    va_end(ap);
    if (written < 0 || fflush(log->f) != 0) die("cannot write '%s': %s", log->path, strerror(errno));
}

static void log_close(TrainLog* log) {
    if (log->f != NULL) fcloseCheck(log->f, log->path);
    log->f = NULL;
}

// Stops the job over something every rank knows alike (an all-reduced number): rank 0 says why.
static void stop_together(Comm* c, const char* reason) {
    comm_agree_or_die(c, "stopping", c->rank == 0 ? reason : NULL);
}

// What decides the schedule and the collectives must match on every rank: the data sizes (shards
// may differ between nodes), whether validation runs, and the step count derived from them.
static void agree_on_data(Comm* c, const DataLoader* train, const DataLoader* val, int has_val, int max_steps) {
    const char* names[4] = { "training rows (-i)", "whether it validates (-j, -v)", "validation rows (-j)", "steps (-x)" };
    double values[4] = { (double)train->total_rows, (double)has_val, has_val ? (double)val->total_rows : 0.0, (double)max_steps };
    comm_agree_on_values(c, "checking that every rank has the same data", values, names, 4);
}

// After a resume: the state every rank restored must be the same run at the same place.
static void agree_on_resumed_state(Comm* c, Trainable* tr, int start, const Rng* rng, const DataLoader* train) {
    const char* names[4] = { "the resumed step", "the resumed RNG state", "the resumed loader position",
                             "the hash of the resumed parameters" };
    double values[4] = { (double)start, hash_value(rng->state), (double)train->next_row, hash_value(parameters_hash(tr)) };
    comm_agree_on_values(c, "checking that every rank resumed the same state", values, names, 4);
}

// One evaluation of the validation loss; NaN or Inf stops the run (it would only get worse).
static void validate(const TrainOptions* o, Trainable* tr, DataLoader* val, Comm* c, int step, double tokens_seen, TrainLog* log) {
    double num_valid = 0.0;
    double vl = evaluate_loss(tr, val, c, (size_t)o->val_rows, &num_valid);
    if (c->rank == 0 && num_valid == 0.0) printf("val loss n/a (no valid target in %d validation rows)\n", o->val_rows);
    if (num_valid == 0.0) return;
    if (c->rank == 0) printf("val loss %.6f\n", vl);  // prints nan or inf as such
    if (!isfinite(vl)) {
        char reason[200];
        snprintf(reason, sizeof(reason), "step %d: the validation loss is %g (non-finite): training stopped", step, vl);
        stop_together(c, reason);
    }
    log_line(log, "s:%d tel:%.6f tok:%.0f\n", step, vl, tokens_seen);
}

// Tokens the run has trained on before step `step` (all ranks, masked or not): sum of P*K(s)*B*T.
static double tokens_before_step(const KSchedule* ks, int step, int world, int B, int T) {
    double total = 0.0;
    for (int s = 0; s < step; s++) total += (double)world * kschedule_at(ks, s) * B * T;
    return total;
}

// "1h02m", "3m05s", "12s": the time left at the mean step time so far.
static void format_duration(char* out, size_t n, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, n, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60) snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, n, "%lds", s);
}

static void run_hellaswag(Trainable* tr, const EvalSet* es, Comm* c, TrainLog* log, int step, double tokens) {
    EvalResult h = evaluate_hellaswag(tr, es, c);
    if (c->rank != 0) return;
    printf("hellaswag: acc_norm %d/%d = %.4f | acc %d/%d = %.4f\n", h.correct_norm, h.examples,
           (double)h.correct_norm / h.examples, h.correct, h.examples, (double)h.correct / h.examples);
    log_line(log, "s:%d eval:%.6f acc:%.6f n:%d tok:%.0f\n", step, (double)h.correct_norm / h.examples,
             (double)h.correct / h.examples, h.examples, tokens);
}

// The window before `step` carried a stop request: every rank saves `step` (with -o) and the run ends
// before that step's evaluations and samples, which the resumed run starts with, so its log continues
// this one's as if the run had never stopped.
static int stop_on_request(const TrainOptions* o, Trainable* tr, Comm* c, int step, int max_steps,
                           uint64_t config_hash, const Rng* rng, const DataLoader* train) {
    int saved = o->out_dir[0] != '\0';
    if (saved) save_checkpoint(o, tr, c, step, config_hash, rng, train);
    if (c->rank == 0 && saved)
        printf("stopped after step %d/%d on %s: checkpoint of step %d in %s, run again with -y 1 to continue "
               "(exit code %d)\n", step, max_steps, stop_signal_name(stop_signal), step, o->out_dir, EXIT_STOPPED);
    else if (c->rank == 0)
        printf("stopped after step %d/%d on %s: no checkpoint written, as there is no output directory (-o) "
               "(exit code %d)\n", step, max_steps, stop_signal_name(stop_signal), EXIT_STOPPED_UNSAVED);
    fflush(stdout);
    return saved ? EXIT_STOPPED : EXIT_STOPPED_UNSAVED;
}

// Returns the process's exit code: 0 when every step is done, EXIT_STOPPED(_UNSAVED) when told to stop.
static int run_training(const TrainOptions* o, Trainable* tr, Comm* c) {
    const GPT2Config* cfg = &tr->config;
    int master = c->rank == 0;
    agree_on_options(o, tr, c);
    uint64_t config_hash = resume_hash(o, cfg);
    if (o->pad && cfg->vocab_size <= GPT2_EOT) {
        char reason[200];
        snprintf(reason, sizeof(reason), "flag -pad 1 needs the end-of-text token %d, beyond this model's vocab_size %d",
                 GPT2_EOT, cfg->vocab_size);
        stop_together(c, reason);
    }

    KSchedule ks;
    resolve_k_schedule(o, c->world, &ks);
    DataLoader train, val;
    open_loader(&train, o->train_data, o, c, cfg->vocab_size, "opening the training data (-i)");
    if (o->shuffle) dataloader_shuffle(&train, o->seed);
    int has_val = o->val_data[0] != '\0' && o->val_every > 0;
    if (has_val) open_loader(&val, o->val_data, o, c, cfg->vocab_size, "opening the validation data (-j)");
    EvalSet hellaswag;
    memset(&hellaswag, 0, sizeof(hellaswag));
    if (o->hellaswag) {
        char err[1400];
        int rc = evalset_load(&hellaswag, o->hellaswag_file, cfg->vocab_size, err, sizeof(err));
        comm_agree_or_die(c, "opening the HellaSwag file (-h_file)", rc == 0 ? NULL : err);
    }
    int max_steps = o->max_steps;
    if (max_steps < 0) {  // one epoch at the first step's K
        size_t rows_per_window = (size_t)o->B * c->world * kschedule_at(&ks, 0);  // fits: resolve_k_schedule checked
        size_t epoch_steps = train.total_rows / rows_per_window;
        max_steps = epoch_steps < 1 ? 1 : epoch_steps > INT_MAX ? INT_MAX : (int)epoch_steps;
    }
    agree_on_data(c, &train, &val, has_val, max_steps);
    if (master) {
        printf("data: %zu training rows of T=%d (%s layout) in %d shard(s), %s%s\n", train.total_rows, o->T,
               o->pad ? "padded" : "packed", train.num_shards, o->shuffle ? "shuffled each epoch" : "in file order",
               has_val ? "" : ", no validation");
        if (o->val_defaulted_off)
            printf("validation: off, because -i is not the default data and -j was not given (-j PATTERN validates)\n");
        if (o->hellaswag) printf("hellaswag: %d examples from %s\n", hellaswag.num_examples, o->hellaswag_file);
        if (o->pad && train.rows_truncated)
            printf("data: %zu example(s) are longer than T=%d and will be truncated\n", train.rows_truncated, o->T);
        printf("window: P=%d ranks x K=%d micro-steps x B=%d rows x T=%d = %.0f tokens per step%s; %s optimizer%s\n",
               c->world, kschedule_at(&ks, 0), o->B, o->T, (double)c->world * kschedule_at(&ks, 0) * o->B * o->T,
               ks.count > 1 ? " (K scheduled)" : "", o->zero_stage ? "sharded (ZeRO-1)" : "replicated (-z 0)",
               o->sync_each_microstep ? ", reduce-scatter each micro-step" : "");
        printf("steps: %d, lr %g warmup %d final fraction %g, weight decay %g, clip %g, comm back end %s\n",
               max_steps, o->lr, o->warmup, o->final_lr_frac, o->weight_decay, o->grad_clip, c->backend->name);
    }

    Tokenizer tk;
    memset(&tk, 0, sizeof(tk));
    int start_token = GPT2_EOT;
    if (o->sample_every > 0) {
        char reason[300] = "";
        if (master) {
            tokenizer_init(&tk, o->tokenizer);
            start_token = sample_start_token(&tk, cfg->vocab_size);
            if (start_token < 0)
                snprintf(reason, sizeof(reason), "flag -s %d: samples start from the end-of-text token %d, beyond this model's "
                         "vocab_size %d (give -s 0, or a tokenizer -tk whose end-of-text token is in the vocabulary)",
                         o->sample_every, tk.tokens ? tk.eot_token : GPT2_EOT, cfg->vocab_size);
        }
        comm_agree_or_die(c, "preparing samples", reason[0] ? reason : NULL);
    }
    Rng rng;
    rng_seed(&rng, (uint64_t)o->seed + 1);
    if (o->dump_grads[0] && master) {
        FILE* f = fopenCheck(o->dump_grads, "wb");  // start empty; ranks then write their slices
        fcloseCheck(f, o->dump_grads);
    }
    if (o->out_dir[0]) {
        char reason[1400] = "";
        struct stat st;
        if (master && !o->resume && claim_output_dir(o, reason, sizeof(reason)) == NULL &&
            mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
            snprintf(reason, sizeof(reason), "flag -o: cannot create directory '%s': %s", o->out_dir, strerror(errno));
        else if (master && stat(o->out_dir, &st) == 0 && !S_ISDIR(st.st_mode))  // missing with -y 1: resume says so
            snprintf(reason, sizeof(reason), "flag -o: '%s' is not a directory", o->out_dir);
        comm_agree_or_die(c, "preparing the output directory (-o)", reason[0] ? reason : NULL);
    }
    comm_barrier(c);

    int start = 0;
    if (o->resume) {
        start = resume_checkpoint(o, tr, c, config_hash, &rng, &train);
        agree_on_resumed_state(c, tr, start, &rng, &train);
    }
    TrainLog log;
    log_open(&log, o, master);

    WindowOptions wo = { o->zero_stage, o->sync_each_microstep, o->beta1, o->beta2, o->eps, o->weight_decay,
                         o->grad_clip, o->dump_grads[0] ? o->dump_grads : NULL };
    double total_ms = 0.0;
    int timed_steps = 0;
    CommStats window_comm;  // summed over windows, to show that nothing else was communicated in them
    memset(&window_comm, 0, sizeof(window_comm));
    double tokens_seen = tokens_before_step(&ks, start, c->world, o->B, o->T);
    int exit_code = 0, windows = 0, stopping = 0;
    install_stop_handlers();  // from here on a run has something to save
    for (int step = start; step <= max_steps; step++) {
        if (stopping) {
            exit_code = stop_on_request(o, tr, c, step, max_steps, config_hash, &rng, &train);
            break;
        }
        int last = step == max_steps;
        if (has_val && (step % o->val_every == 0 || last)) validate(o, tr, &val, c, step, tokens_seen, &log);
        if (o->hellaswag && ((o->val_every > 0 && step % o->val_every == 0) || last))
            run_hellaswag(tr, &hellaswag, c, &log, step, tokens_seen);
        if (master && o->sample_every > 0 && ((step > 0 && step % o->sample_every == 0) || last))
            sample_and_print(tr, &tk, &rng, o->gen_T, start_token, step);
        if (o->ckpt_every > 0 && step > start && (step % o->ckpt_every == 0 || last))
            save_checkpoint(o, tr, c, step, config_hash, &rng, &train);
        if (last) break;

        int K = kschedule_at(&ks, step);
        float lr = lr_at_step(step, o->lr, o->warmup, max_steps, o->final_lr_frac);
        double t0 = wall_seconds();
        WindowResult r = train_window(tr, &train, c, &wo, K, lr, step);
        windows++;
        stopping = r.stop;  // the same on every rank: the all-reduced count of ranks asked to stop
        if (r.nonfinite) {  // every rank has the same all-reduced sums: all stop here, rank 0 says why
            char reason[300];
            snprintf(reason, sizeof(reason), "step %d/%d: the window loss is %g and the gradient norm %g (non-finite): "
                     "the update is skipped and training stopped; no checkpoint of this state is written",
                     step + 1, max_steps, r.loss, r.grad_norm);
            stop_together(c, reason);
        }
        double ms = 1e3 * (wall_seconds() - t0);
        if (step > start) { total_ms += ms; timed_steps++; }
        for (int kind = 0; kind < COMM_NUM_KINDS; kind++) {
            window_comm.calls[kind] += r.comm.calls[kind];
            window_comm.bytes[kind] += r.comm.bytes[kind];
        }
        tokens_seen += (double)c->world * K * o->B * o->T;
        if (!master) continue;
        if (step == start) comm_print_stats(&r.comm, "communication per window");
        double tokens = (double)c->world * K * o->B * o->T;
        printf("step %4d/%d | loss %.6f | N %.0f | norm %.4f | lr %.2e | K %d | %.1f ms (comm %.1f ms) | %.0f tok/s",
               step + 1, max_steps, r.loss, r.num_valid, r.grad_norm, lr, K, ms, 1e3 * r.comm.seconds, tokens / (ms / 1e3));
        if (tr->peak_flops > 0.0) {
            // MFU as llm.c computes it (gpt2_estimate_mfu), so the figure compares with llm.c's published
            // ones: 6 flops per parameter per token (forward 2, backward 4) plus 6*L*C*T for attention's
            // two matmuls, over the device's dense bf16 peak. (PaLM's appendix B counts attention 12*L*C*T,
            // without the causal mask's halving: a bigger figure for the same run.)
            double flops_per_token = 6.0 * tr->num_params + 6.0 * cfg->num_layers * cfg->channels * o->T;
            printf(" | MFU %.1f%%", 100.0 * flops_per_token * tokens / c->world / (ms / 1e3) / tr->peak_flops);
        } else if (tr->peak_flops < 0.0) {
            printf(" | MFU unknown");
        }
        if (timed_steps > 0) {
            char eta[32];
            format_duration(eta, sizeof(eta), total_ms / timed_steps / 1e3 * (max_steps - step - 1));
            printf(" | ETA %s", eta);
        }
        printf("%s\n", r.skipped ? " | skipped (N = 0)" : "");
        fflush(stdout);
        if (r.skipped)
            log_line(&log, "s:%d skip:1 valid:0 k:%d tok:%.0f lr:%.6e ms:%.1f\n", step, K, tokens_seen, lr, ms);
        else
            log_line(&log, "s:%d trl:%.6f valid:%.0f k:%d tok:%.0f lr:%.6e norm:%.6f ms:%.1f\n", step, r.loss,
                     r.num_valid, K, tokens_seen, lr, r.grad_norm, ms);
    }
    if (master && windows > 0) {
        char title[64];
        snprintf(title, sizeof(title), "communication in %d window(s)", windows);
        comm_print_stats(&window_comm, title);
    }
    if (master && timed_steps > 0)
        printf("summary: mean_ms=%.2f tok_per_s=%.0f\n", total_ms / timed_steps,
               (double)c->world * kschedule_at(&ks, max_steps - 1) * o->B * o->T / (total_ms / timed_steps / 1e3));
    log_close(&log);
    if (tk.tokens) tokenizer_free(&tk);
    dataloader_free(&train);
    if (has_val) dataloader_free(&val);
    if (o->hellaswag) evalset_free(&hellaswag);
    return exit_code;
}

#endif // LLMC_TRAINER_H
