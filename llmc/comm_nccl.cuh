/*
comm_nccl.cuh: the "nccl" communication back end (llmc/comm.h's CommBackend) for train_gpt2.cu, and a
"single-gpu" back end (one process, device buffers, no NCCL) that tests compare it with.

Bootstrapping (comm_init_nccl, called after comm_init and parse_args, before any other CUDA call):
  1. every rank picks GPU local_rank (one process per GPU); a rank whose node has fewer GPUs than
     ranks, or no GPU at all, makes every rank print an error and abort (comm_agree_or_die);
  2. rank 0 creates the ncclUniqueId and broadcasts it through the host back end it replaces: MPI when
     launched by mpirun with -DUSE_MPI, nothing at world size 1 (then ncclCommInitRank(.., 1, id, 0));
  3. ncclCommInitRank; the host back end stays underneath for broadcast, barrier and finalize.

Collectives run on the back end's own CUDA stream. Each one is ordered after everything already issued
on the compute stream (an event the communication stream waits for), and `wait` blocks the host until
the communication stream is done, so the caller may use the results on any stream afterwards.
Buffers are device memory; `scalars` are host doubles, summed as ncclFloat64 through a small pinned
host buffer and a device buffer.

No hang: `wait` polls the stream and ncclCommGetAsyncError; an asynchronous NCCL error, or a collective
that has not finished after LLMC_NCCL_TIMEOUT seconds (default 600), aborts the communicator
(ncclCommAbort) and stops the job with a message naming the collective and the rank.
*/
#ifndef LLMC_COMM_NCCL_CUH
#define LLMC_COMM_NCCL_CUH

#include <unistd.h>
#include <cuda_runtime.h>
#include <nccl.h>
#include "utils.h"
#include "comm.h"

#define NCCL_DEFAULT_TIMEOUT_S 600.0
#define NCCL_MAX_SCALARS 64

// ----------------------------------------------------------------------------
// error checking

static const char* nccl_error_hint(ncclResult_t r) {
    switch (r) {
    case ncclUnhandledCudaError: return "a CUDA call inside NCCL failed (out of GPU memory? a bad device pointer?); rerun with NCCL_DEBUG=WARN";
    case ncclSystemError:        return "a system call failed (network, or /dev/shm too small in a container: docker --shm-size); rerun with NCCL_DEBUG=INFO";
    case ncclInternalError:      return "an internal NCCL error; rerun with NCCL_DEBUG=INFO";
    case ncclInvalidArgument:    return "an invalid argument (a pointer not on this rank's GPU, a count of 0, an unknown type?)";
    case ncclInvalidUsage:       return "ranks disagree (different counts or types in the same collective) or the communicator was misused";
    case ncclRemoteError:        return "another rank failed or the network connection dropped";
    case ncclInProgress:         return "the operation is still in progress";
    default:                     return "see the NCCL documentation; rerun with NCCL_DEBUG=INFO";
    }
}

static void nccl_check_impl(ncclResult_t r, ncclComm_t comm, const char* call, const char* file, int line) {
    if (r == ncclSuccess) return;
    const char* detail = ncclGetLastError(comm);
    die("NCCL call %s failed: %s%s%s (hint: %s) [%s:%d]", call, ncclGetErrorString(r),
        detail && detail[0] ? ": " : "", detail ? detail : "", nccl_error_hint(r), file, line);
}
// comm may be NULL (before the communicator exists)
#define ncclCheck(call, comm) nccl_check_impl((call), (comm), #call, __FILE__, __LINE__)

static void comm_cuda_check(cudaError_t e, const char* call, const char* file, int line) {
    if (e != cudaSuccess) die("CUDA call %s failed: %s (%s) [%s:%d]", call, cudaGetErrorString(e), cudaGetErrorName(e), file, line);
}
#define commCudaCheck(call) comm_cuda_check((call), #call, __FILE__, __LINE__)

static ncclDataType_t nccl_type(DType t) {
    switch (t) {
    case DTYPE_F32:  return ncclFloat32;
    case DTYPE_BF16: return ncclBfloat16;
    case DTYPE_F64:  return ncclFloat64;
    }
    die("internal: unknown DType %d", (int)t);
    return ncclFloat32;
}

// ----------------------------------------------------------------------------
// state

typedef struct {
    ncclComm_t comm;
    const CommBackend* host;   // the back end replaced at init (mpi or single): broadcast, barrier, finalize
    void* host_impl;
    cudaStream_t stream;       // communication stream
    cudaStream_t compute;      // collectives wait for the work issued on it (0: the legacy default stream)
    cudaEvent_t ready;
    double* scalars_dev;       // (NCCL_MAX_SCALARS) device
    double* scalars_pinned;    // (NCCL_MAX_SCALARS) pinned host
    double timeout_s;
    const char* last_op;       // for the timeout message
} NcclState;

static NcclState* nccl_state(Comm* c) { return (NcclState*)c->impl; }

// the communication stream waits for everything issued so far on the compute stream
static void nccl_order_after_compute(NcclState* s) {
    commCudaCheck(cudaEventRecord(s->ready, s->compute));
    commCudaCheck(cudaStreamWaitEvent(s->stream, s->ready, 0));
}

// Blocks until the communication stream is idle, watching for NCCL errors and the timeout.
static void nccl_wait(Comm* c) {
    NcclState* s = nccl_state(c);
    double t0 = wall_seconds();
    long polls = 0;
    for (;;) {
        cudaError_t e = cudaStreamQuery(s->stream);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) comm_cuda_check(e, "cudaStreamQuery(communication stream)", __FILE__, __LINE__);
        ncclResult_t async = ncclSuccess;
        ncclCheck(ncclCommGetAsyncError(s->comm, &async), s->comm);
        if (async != ncclSuccess) {
            const char* detail = ncclGetLastError(s->comm);
            ncclCommAbort(s->comm);
            die("NCCL %s failed asynchronously on rank %d of %d: %s%s%s (hint: %s)", s->last_op, c->rank, c->world,
                ncclGetErrorString(async), detail && detail[0] ? ": " : "", detail ? detail : "", nccl_error_hint(async));
        }
        if (wall_seconds() - t0 > s->timeout_s) {
            ncclCommAbort(s->comm);
            die("NCCL %s did not finish within %.0f s on rank %d of %d: another rank has probably died or is stuck "
                "(communicator aborted; LLMC_NCCL_TIMEOUT=seconds changes the limit)", s->last_op, s->timeout_s, c->rank, c->world);
        }
        if (++polls > 1000) usleep(50);   // spin briefly, then poll every 50 us
    }
}

// Blocks until the compute stream is idle: comm_begin calls it before starting the timer, so the
// "comm ms" of the step line is the collectives alone (launch to completion on the communication
// stream), not the tail of the last micro-step's backward they are ordered after. It costs no
// overlap: every collective of the window needs that compute done, and the host waits for it anyway.
static void nccl_settle(Comm* c) {
    commCudaCheck(cudaStreamSynchronize(nccl_state(c)->compute));
}

// ----------------------------------------------------------------------------
// collectives (device buffers)

// in place when recv == send + rank * n (NCCL's in-place form; train_gpt2.cu's shard is its slice)
static void nccl_reduce_scatter(Comm* c, const void* send, void* recv, size_t n, DType t) {
    NcclState* s = nccl_state(c);
    s->last_op = "reduce-scatter";
    nccl_order_after_compute(s);
    ncclCheck(ncclReduceScatter(send, recv, n, nccl_type(t), ncclSum, s->comm, s->stream), s->comm);
}

static void nccl_all_reduce(Comm* c, void* buf, size_t n, DType t) {
    NcclState* s = nccl_state(c);
    s->last_op = "all-reduce";
    nccl_order_after_compute(s);
    ncclCheck(ncclAllReduce(buf, buf, n, nccl_type(t), ncclSum, s->comm, s->stream), s->comm);
}

// in place: this rank's shard sits at rank * n in buf
static void nccl_all_gather(Comm* c, void* buf, size_t n, DType t) {
    NcclState* s = nccl_state(c);
    s->last_op = "all-gather";
    nccl_order_after_compute(s);
    const char* mine = (const char*)buf + (size_t)c->rank * n * dtype_size(t);
    ncclCheck(ncclAllGather(mine, buf, n, nccl_type(t), s->comm, s->stream), s->comm);
}

// host doubles, summed over ranks in place
static void nccl_scalars(Comm* c, double* values, int n) {
    NcclState* s = nccl_state(c);
    if (n < 0 || n > NCCL_MAX_SCALARS) die("internal: comm scalars of %d values (at most %d)", n, NCCL_MAX_SCALARS);
    if (n == 0) return;
    s->last_op = "scalar all-reduce";
    memcpy(s->scalars_pinned, values, (size_t)n * sizeof(double));
    nccl_order_after_compute(s);
    commCudaCheck(cudaMemcpyAsync(s->scalars_dev, s->scalars_pinned, (size_t)n * sizeof(double), cudaMemcpyHostToDevice, s->stream));
    ncclCheck(ncclAllReduce(s->scalars_dev, s->scalars_dev, (size_t)n, ncclFloat64, ncclSum, s->comm, s->stream), s->comm);
    commCudaCheck(cudaMemcpyAsync(s->scalars_pinned, s->scalars_dev, (size_t)n * sizeof(double), cudaMemcpyDeviceToHost, s->stream));
    nccl_wait(c);
    memcpy(values, s->scalars_pinned, (size_t)n * sizeof(double));
}

// host-side bootstrapping goes through the host back end (MPI, or nothing at world size 1)
static void nccl_with_host(Comm* c, NcclState** s, void** saved) {
    *s = nccl_state(c);
    *saved = c->impl;
    c->impl = (*s)->host_impl;
}
static void nccl_broadcast(Comm* c, void* buf, size_t bytes, int root) {
    NcclState* s; void* saved;
    nccl_with_host(c, &s, &saved);
    s->host->broadcast(c, buf, bytes, root);
    c->impl = saved;
}
static void nccl_barrier(Comm* c) {
    NcclState* s; void* saved;
    nccl_with_host(c, &s, &saved);
    s->host->barrier(c);
    c->impl = saved;
}

static void nccl_finalize(Comm* c) {
    NcclState* s = nccl_state(c);
    nccl_wait(c);
    ncclCheck(ncclCommDestroy(s->comm), NULL);
    commCudaCheck(cudaEventDestroy(s->ready));
    commCudaCheck(cudaStreamDestroy(s->stream));
    commCudaCheck(cudaFree(s->scalars_dev));
    commCudaCheck(cudaFreeHost(s->scalars_pinned));
    const CommBackend* host = s->host;
    c->impl = s->host_impl;
    c->backend = host;
    free(s);
    host->finalize(c);
}

static const CommBackend COMM_NCCL = {
    "nccl", nccl_reduce_scatter, nccl_all_reduce, nccl_all_gather, nccl_scalars,
    nccl_broadcast, nccl_barrier, nccl_wait, nccl_finalize, nccl_settle };

// ----------------------------------------------------------------------------
// init

// Picks this rank's GPU (local_rank); every rank stops with a message if any rank has none.
static void comm_select_device(Comm* c) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    // One visible device is this rank's whatever its local rank: launchers that give each rank its own
    // GPU (slurm --gpus-per-task=1, CUDA_VISIBLE_DEVICES per rank) leave exactly one.
    int device = count == 1 ? 0 : c->local_rank;
    char reason[512] = "";
    if (e != cudaSuccess) {
        snprintf(reason, sizeof(reason), "no usable CUDA device on this machine (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
    } else if (count == 0) {
        snprintf(reason, sizeof(reason), "no CUDA device on this machine");
    } else if (device >= count) {
        snprintf(reason, sizeof(reason), "rank %d is local rank %d on its node, which has only %d GPU(s): run one process "
                 "per GPU (at most %d ranks on this node, e.g. mpirun -np %d, or CUDA_VISIBLE_DEVICES)",
                 c->rank, c->local_rank, count, count, count);
    }
    comm_agree_or_die(c, "selecting one GPU per rank", reason[0] ? reason : NULL);
    commCudaCheck(cudaSetDevice(device));
}

// Replaces the host back end set by comm_init (mpi or single) with NCCL on GPU local_rank.
static void comm_init_nccl(Comm* c) {
    comm_select_device(c);
    NcclState* s = (NcclState*)callocCheck(1, sizeof(NcclState));
    s->host = c->backend;
    s->host_impl = c->impl;
    s->timeout_s = NCCL_DEFAULT_TIMEOUT_S;
    const char* env = getenv("LLMC_NCCL_TIMEOUT");
    if (env != NULL) {
        char* end = NULL;
        double v = strtod(env, &end);
        if (end == env || *end != '\0' || !(v > 0.0)) die("LLMC_NCCL_TIMEOUT='%s': expected a positive number of seconds", env);
        s->timeout_s = v;
    }
    s->last_op = "initialization";
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    if (c->rank == 0) ncclCheck(ncclGetUniqueId(&id), NULL);
    comm_broadcast(c, &id, sizeof(id), 0);   // host back end: MPI, or a no-op at world size 1
    ncclCheck(ncclCommInitRank(&s->comm, c->world, id, c->rank), NULL);
    commCudaCheck(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    commCudaCheck(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming));
    commCudaCheck(cudaMalloc((void**)&s->scalars_dev, NCCL_MAX_SCALARS * sizeof(double)));
    commCudaCheck(cudaMallocHost((void**)&s->scalars_pinned, NCCL_MAX_SCALARS * sizeof(double)));
    s->compute = 0;
    c->impl = s;
    c->backend = &COMM_NCCL;
}

// Collectives are ordered after the work issued on this stream (the model's compute stream).
static void comm_nccl_set_compute_stream(Comm* c, cudaStream_t compute) {
    if (c->backend != &COMM_NCCL) die("internal: comm_nccl_set_compute_stream on the '%s' back end", c->backend->name);
    nccl_state(c)->compute = compute;
}

// ----------------------------------------------------------------------------
// "single-gpu": one process, device buffers, no NCCL: the collectives reduce to device copies on the
// compute stream. The reference that the world-size-1 NCCL path is tested against.

static cudaStream_t single_gpu_stream(Comm* c) { return (cudaStream_t)c->impl; }
static void single_gpu_reduce_scatter(Comm* c, const void* send, void* recv, size_t n, DType t) {
    if (send != recv) commCudaCheck(cudaMemcpyAsync(recv, send, n * dtype_size(t), cudaMemcpyDeviceToDevice, single_gpu_stream(c)));
}
static void single_gpu_wait(Comm* c) { commCudaCheck(cudaStreamSynchronize(single_gpu_stream(c))); }

static const CommBackend COMM_SINGLE_GPU = {
    "single-gpu", single_gpu_reduce_scatter, single_all_reduce, single_all_gather, single_scalars,
    single_broadcast, single_noop, single_gpu_wait, single_noop, single_gpu_wait };

// world size 1 on the current device; copies go on `compute`
static void comm_init_single_gpu(Comm* c, cudaStream_t compute) {
    comm_init_single(c);
    c->backend = &COMM_SINGLE_GPU;
    c->impl = (void*)compute;
}

#endif // LLMC_COMM_NCCL_CUH
