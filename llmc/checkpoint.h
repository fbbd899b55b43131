// checkpoint.h: a training run's checkpoints, written, found, read back and checked on resume; and the
// -e model file read as a run's initial parameters. The files' format is doc/formats.md's.
#ifndef LLMC_CHECKPOINT_H
#define LLMC_CHECKPOINT_H

#include <dirent.h>
#include <sys/stat.h>
#include "utils.h"
#include "format.h"
#include "gpt2.h"
#include "args.h"
#include "comm.h"
#include "dataloader.h"
#include "rand.h"
#include "window.h"

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

// ----------------------------------------------------------------------------
// Checkpoints. Step s = the state after s windows: model_<s>.bin (rank 0, llm.c format plus a stamp
// in unused header slots), state_<s>_<rank>.bin (each rank: its optimizer shard, RNG, loader
// position), then DONE_<s> once every rank has written. Every file is written atomically; DONE marks
// a complete set. Each file knows its step, the identity of its run (resume_hash: what must match on
// resume) and a checksum of its contents, so a file copied from another step or run, or damaged,
// is refused on resume with one line.

// What a checkpoint must share with the run that resumes it: the model and the shape of the data
// and optimizer state. Step counts, schedules and evaluation settings may change between runs.
static uint64_t resume_hash(const TrainOptions* o, const GPT2Config* c) {
    int geometry[5] = { o->B, o->T, o->pad, o->zero_stage, o->sync_each_microstep };
    uint64_t x = fnv1a(fnv1a(FNV1A_SEED, geometry, sizeof(geometry)), c, sizeof(*c));
    if (o->shuffle) x = fnv1a(x, &o->seed, sizeof(o->seed));  // it draws the row order of the epoch in progress
    return x;
}

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

// Rank 0 makes -o ready for this run's checkpoints (a resume finds it as it is); every rank agrees.
static void prepare_output_dir(const TrainOptions* o, Comm* c) {
    char reason[1400] = "";
    struct stat st;
    int master = c->rank == 0;
    if (master && !o->resume && claim_output_dir(o, reason, sizeof(reason)) == NULL &&
        mkdir(o->out_dir, 0755) != 0 && errno != EEXIST)
        snprintf(reason, sizeof(reason), "flag -o: cannot create directory '%s': %s", o->out_dir, strerror(errno));
    else if (master && stat(o->out_dir, &st) == 0 && !S_ISDIR(st.st_mode))  // missing with -y 1: resume says so
        snprintf(reason, sizeof(reason), "flag -o: '%s' is not a directory", o->out_dir);
    comm_agree_or_die(c, "preparing the output directory (-o)", reason[0] ? reason : NULL);
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

#endif // LLMC_CHECKPOINT_H
