// comm.h: the communication interface of the training window, and its host back ends.
//
// A window needs exactly these collectives, and nothing else:
//   reduce_scatter  sum the gradient buffer over ranks, each rank keeps its 1/P shard    (once per window)
//   all_reduce      sum a whole buffer in place (the -z 0 path, no sharding)
//   all_gather      every rank's updated parameter shard to every rank, in place         (once per window)
//   scalars         sum a few doubles: [loss sum, valid count, squared norm, stop]        (once per window)
//   broadcast, barrier: bootstrapping and checkpoints, never inside a window.
// Back ends: "single" (one process, no MPI needed), "mpi" (CPU, -DUSE_MPI) and "nccl"
// (GPU, llmc/comm_nccl.cuh). Buffers live where the back end computes: host memory for single
// and mpi, device memory for nccl. Every call is counted (calls and bytes by kind) and timed.
#ifndef LLMC_COMM_H
#define LLMC_COMM_H

#include <unistd.h>
#include "utils.h"
#include "args.h"
#include "gpt2.h"

typedef enum { COMM_REDUCE_SCATTER, COMM_ALL_REDUCE, COMM_ALL_GATHER, COMM_SCALARS, COMM_BROADCAST,
               COMM_BARRIER, COMM_NUM_KINDS } CommKind;
static const char* const COMM_KIND_NAMES[COMM_NUM_KINDS] = {
    "reduce-scatter", "all-reduce", "all-gather", "scalar all-reduce", "broadcast", "barrier" };

typedef enum { DTYPE_F32, DTYPE_BF16, DTYPE_F64 } DType;
static size_t dtype_size(DType t) { return t == DTYPE_F64 ? 8 : t == DTYPE_F32 ? 4 : 2; }

typedef struct {
    long calls[COMM_NUM_KINDS];
    long bytes[COMM_NUM_KINDS];    // bytes each rank contributes
    double seconds;                // wall time spent inside collectives
} CommStats;

typedef struct Comm Comm;
typedef struct {
    const char* name;
    // send: count_per_rank * world elements; recv: count_per_rank elements (this rank's shard).
    void (*reduce_scatter)(Comm* c, const void* send, void* recv, size_t count_per_rank, DType t);
    void (*all_reduce)(Comm* c, void* buf, size_t count, DType t);
    // buf: count_per_rank * world elements; this rank's shard at rank * count_per_rank is the input.
    void (*all_gather)(Comm* c, void* buf, size_t count_per_rank, DType t);
    void (*scalars)(Comm* c, double* values, int n);               // host doubles, summed in place
    void (*broadcast)(Comm* c, void* host_buf, size_t bytes, int root);
    void (*barrier)(Comm* c);
    void (*wait)(Comm* c);        // until issued collectives are done (for timing; no-op on host)
    void (*finalize)(Comm* c);
    // Waits for the computation a collective depends on, before its timer starts, so the time
    // counted is communication alone (NULL: none pending, as on the host back ends).
    void (*settle)(Comm* c);
} CommBackend;

struct Comm {
    int rank, world;
    int local_rank;               // rank within the node: picks the GPU
    const CommBackend* backend;
    void* impl;                   // back-end state (an MPI or NCCL communicator)
    CommStats stats;
};

// ----------------------------------------------------------------------------
// The counted entry points used by the window.

// Counts a call and returns its start time; comm_done waits for it and adds up the time spent.
// The timer starts after settle: on a GPU the collective waits for the backward still running on the
// compute stream, and that wait is compute, not communication.
static double comm_begin(Comm* c, CommKind kind, size_t bytes) {
    c->stats.calls[kind] += 1;
    c->stats.bytes[kind] += (long)bytes;
    if (c->backend->settle) c->backend->settle(c);
    return wall_seconds();
}

static void comm_done(Comm* c, double t0) {
    c->backend->wait(c);
    c->stats.seconds += wall_seconds() - t0;
}

static void comm_reduce_scatter(Comm* c, const void* send, void* recv, size_t count_per_rank, DType t) {
    double t0 = comm_begin(c, COMM_REDUCE_SCATTER, count_per_rank * c->world * dtype_size(t));
    c->backend->reduce_scatter(c, send, recv, count_per_rank, t);
    comm_done(c, t0);
}

static void comm_all_reduce(Comm* c, void* buf, size_t count, DType t) {
    double t0 = comm_begin(c, COMM_ALL_REDUCE, count * dtype_size(t));
    c->backend->all_reduce(c, buf, count, t);
    comm_done(c, t0);
}

static void comm_all_gather(Comm* c, void* buf, size_t count_per_rank, DType t) {
    double t0 = comm_begin(c, COMM_ALL_GATHER, count_per_rank * dtype_size(t));
    c->backend->all_gather(c, buf, count_per_rank, t);
    comm_done(c, t0);
}

static void comm_scalars(Comm* c, double* values, int n) {
    double t0 = comm_begin(c, COMM_SCALARS, (size_t)n * sizeof(double));
    c->backend->scalars(c, values, n);
    comm_done(c, t0);
}

static void comm_broadcast(Comm* c, void* host_buf, size_t bytes, int root) {
    comm_begin(c, COMM_BROADCAST, bytes);
    c->backend->broadcast(c, host_buf, bytes, root);
}

static void comm_barrier(Comm* c) {
    comm_begin(c, COMM_BARRIER, 0);
    c->backend->barrier(c);
}

static void comm_print_stats(const CommStats* s, const char* title) {
    printf("%s:", title);
    for (int k = 0; k < COMM_NUM_KINDS; k++)
        if (s->calls[k] > 0) printf(" %s %ld call(s) %.2f MB;", COMM_KIND_NAMES[k], s->calls[k], s->bytes[k] / 1e6);
    printf("\n");
}

static CommStats comm_stats_diff(const CommStats* after, const CommStats* before) {
    CommStats d;
    for (int k = 0; k < COMM_NUM_KINDS; k++) {
        d.calls[k] = after->calls[k] - before->calls[k];
        d.bytes[k] = after->bytes[k] - before->bytes[k];
    }
    d.seconds = after->seconds - before->seconds;
    return d;
}

// ----------------------------------------------------------------------------
// Agreement: a rank that fails alone must not leave the others waiting in a collective.

// Every rank learns whether all ranks succeeded at something local (opening data, say); if any
// failed, each failing rank prints its one line and the job aborts, instead of some ranks hanging
// in the next collective. `reason` is this rank's own message (NULL when it succeeded); `what` names
// the phase, printed after it: a reason such as "rank 1 differs from rank 0 in -b" does not say by
// itself whether the flags, the data or a resumed state were being compared.
static void comm_agree_or_die(Comm* c, const char* what, const char* reason) {
    double failures = reason != NULL ? 1.0 : 0.0;
    comm_scalars(c, &failures, 1);
    if (failures == 0.0) return;
    // Only a rank that knows why says why, and a rank whose reason is rank 0's word for word leaves it
    // to rank 0: P ranks failing alike (the same bad flag) print one line, not P.
    char root_reason[1024] = "";
    if (c->rank == 0 && reason != NULL) snprintf(root_reason, sizeof(root_reason), "%s", reason);
    comm_broadcast(c, root_reason, sizeof(root_reason), 0);
    if (reason != NULL && (c->rank == 0 || strncmp(reason, root_reason, sizeof(root_reason) - 1) != 0)) print_error("%s (while %s)", reason, what);
    // Every rank is here: let all messages out before the abort takes the job down.
    fflush(stderr);
    c->backend->barrier(c);
    usleep(200 * 1000);
    abort_job();
}

// n named values that must be equal on every rank (flags, model sizes, data sizes, hashes): each rank
// compares its own with rank 0's, and a rank that differs names the first value it differs in.
static void comm_agree_on_values(Comm* c, const char* what, const double* values, const char* const* names, int n) {
    double* root = (double*)mallocCheck((size_t)n * sizeof(double));
    memcpy(root, values, (size_t)n * sizeof(double));
    comm_broadcast(c, root, (size_t)n * sizeof(double), 0);
    char reason[512] = "";
    for (int i = 0; i < n && reason[0] == '\0'; i++)
        if (memcmp(&root[i], &values[i], sizeof(double)) != 0)  // bitwise: NaN equals NaN
            snprintf(reason, sizeof(reason), "rank %d differs from rank 0 in %s: %.17g here, %.17g on rank 0",
                     c->rank, names[i], values[i], root[i]);
    free(root);
    comm_agree_or_die(c, what, reason[0] ? reason : NULL);
}

// ----------------------------------------------------------------------------
// What every rank of a training run agrees on before it computes: flags, model, initial parameters,
// data sizes, steps, and after a resume the restored state. A rank that differs stops the job naming
// the value, where the runs would otherwise diverge silently or hang in a collective.

// Every rank reads its own command line, and a bad one stops the job with one line (ranks that fail
// alike leave it to rank 0), before anything is loaded.
static void parse_args_on_every_rank(TrainOptions* o, int argc, char** argv, Comm* c) {
    char err[512] = "";
    int rc = parse_args(o, argc, argv, err, sizeof(err));
    comm_agree_or_die(c, "reading the flags", rc == 0 ? NULL : err);
}

// A hash as a double for comm_agree_on_values: 53 of its bits, exactly.
static double hash_value(uint64_t h) { return (double)(h >> 11); }

// Every numeric flag (each by name), the K schedule and the model config must be the same on every
// rank (paths may differ between nodes, so only whether each is given is compared), and so must the
// initial parameters (params_hash: this rank's, as fp32).
static void agree_on_options(Comm* c, const TrainOptions* o, const GPT2Config* cfg, uint64_t params_hash) {
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
    names[n] = "the hash of the initial parameters (-e)"; values[n++] = hash_value(params_hash);
    comm_agree_on_values(c, "checking that every rank has the same configuration", values, names, n);
}

// What decides the schedule and the collectives must match on every rank: the data sizes (shards
// may differ between nodes), whether validation runs, and the step count derived from them.
static void agree_on_data(Comm* c, size_t train_rows, int has_val, size_t val_rows, int max_steps) {
    const char* names[4] = { "training rows (-i)", "whether it validates (-j, -v)", "validation rows (-j)", "steps (-x)" };
    double values[4] = { (double)train_rows, (double)has_val, (double)val_rows, (double)max_steps };
    comm_agree_on_values(c, "checking that every rank has the same data", values, names, 4);
}

// After a resume: the state every rank restored must be the same run at the same place.
static void agree_on_resumed_state(Comm* c, int start, uint64_t rng_state, size_t loader_row, uint64_t params_hash) {
    const char* names[4] = { "the resumed step", "the resumed RNG state", "the resumed loader position",
                             "the hash of the resumed parameters" };
    double values[4] = { (double)start, hash_value(rng_state), (double)loader_row, hash_value(params_hash) };
    comm_agree_on_values(c, "checking that every rank resumed the same state", values, names, 4);
}

// Stops the job over something every rank knows alike (an all-reduced number): rank 0 says why.
static void stop_together(Comm* c, const char* reason) {
    comm_agree_or_die(c, "stopping", c->rank == 0 ? reason : NULL);
}

// ----------------------------------------------------------------------------
// "single": one process; the collectives reduce to copies on the host.

static void single_reduce_scatter(Comm* c, const void* send, void* recv, size_t n, DType t) {
    (void)c;
    if (send != recv) memcpy(recv, send, n * dtype_size(t));
}
static void single_all_reduce(Comm* c, void* buf, size_t n, DType t) { (void)c; (void)buf; (void)n; (void)t; }
static void single_all_gather(Comm* c, void* buf, size_t n, DType t) { (void)c; (void)buf; (void)n; (void)t; }
static void single_scalars(Comm* c, double* v, int n) { (void)c; (void)v; (void)n; }
static void single_broadcast(Comm* c, void* buf, size_t bytes, int root) { (void)c; (void)buf; (void)bytes; (void)root; }
static void single_noop(Comm* c) { (void)c; }

static const CommBackend COMM_SINGLE = {
    "single", single_reduce_scatter, single_all_reduce, single_all_gather, single_scalars,
    single_broadcast, single_noop, single_noop, single_noop, NULL };

static void comm_init_single(Comm* c) {
    memset(c, 0, sizeof(*c));
    c->rank = 0;
    c->world = 1;
    c->local_rank = 0;
    c->backend = &COMM_SINGLE;
}

// ----------------------------------------------------------------------------
// "mpi": host buffers over MPI_COMM_WORLD.
#ifdef USE_MPI

static void mpi_check(int rc, const char* call, const char* file, int line) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    die("MPI call %s failed: %s [%s:%d]", call, msg, file, line);
}
#define mpiCheck(call) mpi_check((call), #call, __FILE__, __LINE__)

static MPI_Datatype mpi_type(DType t) {
    if (t == DTYPE_F32) return MPI_FLOAT;
    if (t == DTYPE_F64) return MPI_DOUBLE;
    die("the MPI back end sums fp32 and fp64 buffers only (bf16 is a GPU type)");
    return MPI_DATATYPE_NULL;
}

static void mpi_reduce_scatter(Comm* c, const void* send, void* recv, size_t n, DType t) {
    (void)c;
    if (n > (size_t)INT32_MAX) die("reduce-scatter of %zu elements per rank exceeds MPI's int count", n);
    mpiCheck(MPI_Reduce_scatter_block(send, recv, (int)n, mpi_type(t), MPI_SUM, MPI_COMM_WORLD));
}
static void mpi_all_reduce(Comm* c, void* buf, size_t n, DType t) {
    (void)c;
    if (n > (size_t)INT32_MAX) die("all-reduce of %zu elements exceeds MPI's int count", n);
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, mpi_type(t), MPI_SUM, MPI_COMM_WORLD));
}
static void mpi_all_gather(Comm* c, void* buf, size_t n, DType t) {
    (void)c;
    if (n > (size_t)INT32_MAX) die("all-gather of %zu elements per rank exceeds MPI's int count", n);
    mpiCheck(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)n, mpi_type(t), MPI_COMM_WORLD));
}
static void mpi_scalars(Comm* c, double* v, int n) {
    (void)c;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}
static void mpi_broadcast(Comm* c, void* buf, size_t bytes, int root) {
    (void)c;
    mpiCheck(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD));
}
static void mpi_barrier(Comm* c) { (void)c; mpiCheck(MPI_Barrier(MPI_COMM_WORLD)); }
static void mpi_finalize(Comm* c) { (void)c; MPI_Finalize(); }

static const CommBackend COMM_MPI = {
    "mpi", mpi_reduce_scatter, mpi_all_reduce, mpi_all_gather, mpi_scalars,
    mpi_broadcast, mpi_barrier, single_noop, mpi_finalize, NULL };

// Rank within the node, from a communicator split by shared memory.
static int mpi_local_rank(void) {
    MPI_Comm local;
    mpiCheck(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
    int r = 0;
    mpiCheck(MPI_Comm_rank(local, &r));
    mpiCheck(MPI_Comm_free(&local));
    return r;
}

// MPI_Init, and the "mpi" back end; the caller may then swap in another back end (nccl) that
// bootstraps through it.
static void comm_init_mpi(Comm* c, int* argc, char*** argv) {
    memset(c, 0, sizeof(*c));
    mpiCheck(MPI_Init(argc, argv));
    // Errors come back to us (and we abort with a message) rather than killing the job silently.
    mpiCheck(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &c->world));
    c->local_rank = mpi_local_rank();
    c->backend = &COMM_MPI;
}
#endif // USE_MPI

// Launched by mpirun/srun? Then MPI; otherwise one process with no MPI at all, so that
// `./train_gpt2` runs as a plain program even when it was built with MPI.
static int launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMI_SIZE") != NULL || getenv("PMIX_RANK") != NULL;
}

static void comm_init(Comm* c, int* argc, char*** argv) {
#ifdef USE_MPI
    if (launched_by_mpi()) { comm_init_mpi(c, argc, argv); return; }
#else
    if (launched_by_mpi() && getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1)
        die("started by mpirun with several ranks, but this binary was built without MPI (install an MPI and rebuild)");
#endif
    (void)argc; (void)argv;
    comm_init_single(c);
}

static void comm_finalize(Comm* c) { c->backend->finalize(c); }

#endif // LLMC_COMM_H
