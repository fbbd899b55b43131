// nccl.cpp: NCCL for the CPU emulation. Device memory is host memory here, so each collective is the
// matching MPI call on the same pointers, with NCCL's semantics (sum in the buffer's own type, bf16
// included; in-place forms as NCCL defines them). Without MPI (or at world size 1) every collective is
// a copy. Built with -DUSE_MPI when the trainer is; it calls MPI only if the program initialized it.
//
// CPUCUDA_NCCL_TRACE=1 prints one line per collective, "[cpucuda nccl] rank R: OP n=COUNT TYPE", on
// stdout, in order with the program's own output (the trainer's step lines), so that a test can count
// the collectives of each window independently of the trainer's own bookkeeping.
#include <nccl.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#ifdef USE_MPI
#include <mpi.h>
#endif

struct ncclComm { int nranks, rank; };

namespace {
size_t type_size(ncclDataType_t t) {
    switch (t) {
        case ncclInt8: case ncclUint8: return 1;
        case ncclFloat16: case ncclBfloat16: return 2;
        case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
        default: return 8;
    }
}
const char* type_name(ncclDataType_t t) {
    switch (t) {
        case ncclFloat32: return "f32"; case ncclFloat64: return "f64"; case ncclBfloat16: return "bf16";
        case ncclInt32: return "i32"; default: return "other";
    }
}
void trace(const ncclComm* c, const char* op, size_t n, ncclDataType_t t) {
    static const bool on = getenv("CPUCUDA_NCCL_TRACE") && getenv("CPUCUDA_NCCL_TRACE")[0] == '1';
    if (on) { printf("[cpucuda nccl] rank %d: %s n=%zu %s\n", c->rank, op, n, type_name(t)); fflush(stdout); }
}
ncclResult_t fail(const char* what) {
    fprintf(stderr, "[cpucuda nccl] %s\n", what);
    return ncclInvalidUsage;
}

#ifdef USE_MPI
// bf16 sum as NCCL does it: each partial sum is rounded back to bf16 (nearest even)
float bf16_to_float(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
uint16_t float_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
    const uint16_t* a = static_cast<const uint16_t*>(in);
    uint16_t* b = static_cast<uint16_t*>(inout);
    for (int i = 0; i < *len; i++) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}
MPI_Op bf16_sum_op = MPI_OP_NULL;

bool mpi_type(ncclDataType_t t, ncclRedOp_t op, MPI_Datatype* mt, MPI_Op* mop) {
    if (op != ncclSum) return false;   // the project only sums
    *mop = MPI_SUM;
    switch (t) {
        case ncclFloat32: *mt = MPI_FLOAT; return true;
        case ncclFloat64: *mt = MPI_DOUBLE; return true;
        case ncclInt32: *mt = MPI_INT; return true;
        case ncclBfloat16:
            if (bf16_sum_op == MPI_OP_NULL && MPI_Op_create(bf16_sum, 1, &bf16_sum_op) != MPI_SUCCESS) return false;
            *mt = MPI_UINT16_T; *mop = bf16_sum_op; return true;
        default: return false;
    }
}
bool fits_int(size_t n) { return n <= (size_t)0x7fffffff; }
#endif
} // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) { memset(id, 0, sizeof(*id)); return ncclSuccess; }

ncclResult_t ncclCommInitRank(ncclComm_t* c, int nranks, ncclUniqueId, int rank) {
    if (nranks < 1 || rank < 0 || rank >= nranks) return fail("ncclCommInitRank: rank outside the world");
    if (nranks > 1) {
#ifdef USE_MPI
        int up = 0, size = 0, me = 0;
        MPI_Initialized(&up);
        if (!up) return fail("ncclCommInitRank: world size > 1 needs the program to have initialized MPI");
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &me);
        if (size != nranks || me != rank) return fail("ncclCommInitRank: nranks/rank differ from MPI_COMM_WORLD's");
#else
        return fail("ncclCommInitRank: world size > 1 needs a build with MPI");
#endif
    }
    *c = new ncclComm{nranks, rank};
    return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t c) { delete c; return ncclSuccess; }
ncclResult_t ncclCommAbort(ncclComm_t c) { delete c; return ncclSuccess; }
ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* e) { *e = ncclSuccess; return ncclSuccess; }
ncclResult_t ncclCommCount(const ncclComm_t c, int* n) { *n = c->nranks; return ncclSuccess; }
ncclResult_t ncclCommUserRank(const ncclComm_t c, int* r) { *r = c->rank; return ncclSuccess; }
const char* ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "invalid usage (cpucuda NCCL)"; }
const char* ncclGetLastError(ncclComm_t) { return ""; }

ncclResult_t ncclAllReduce(const void* s, void* r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t) {
    trace(c, "all-reduce", n, t);
    if (c->nranks == 1) { if (s != r) memmove(r, s, n * type_size(t)); return ncclSuccess; }
#ifdef USE_MPI
    MPI_Datatype mt; MPI_Op mop;
    if (!mpi_type(t, op, &mt, &mop) || !fits_int(n)) return fail("ncclAllReduce: type, op or count not emulated");
    if (MPI_Allreduce(s == r ? MPI_IN_PLACE : s, r, (int)n, mt, mop, MPI_COMM_WORLD) != MPI_SUCCESS) return ncclSystemError;
#endif
    return ncclSuccess;
}

// recv (n) = the sum over ranks of send[rank*n .. rank*n+n); in place when recv == send + rank*n
ncclResult_t ncclReduceScatter(const void* s, void* r, size_t n, ncclDataType_t t, ncclRedOp_t op, ncclComm_t c, cudaStream_t) {
    trace(c, "reduce-scatter", n, t);
    const size_t bytes = n * type_size(t);
    if (c->nranks == 1) { if (s != r) memmove(r, s, bytes); return ncclSuccess; }
#ifdef USE_MPI
    MPI_Datatype mt; MPI_Op mop;
    if (!mpi_type(t, op, &mt, &mop) || !fits_int(n)) return fail("ncclReduceScatter: type, op or count not emulated");
    const char* sb = static_cast<const char*>(s);
    char* rb = static_cast<char*>(r);
    const bool overlaps = rb < sb + bytes * c->nranks && sb < rb + bytes;
    // MPI forbids overlapping send and receive buffers (its in-place form puts the result at the
    // start of the buffer, not at this rank's slice): receive into a copy
    std::vector<char> tmp(overlaps ? bytes : 0);
    if (MPI_Reduce_scatter_block(s, overlaps ? tmp.data() : r, (int)n, mt, mop, MPI_COMM_WORLD) != MPI_SUCCESS) return ncclSystemError;
    if (overlaps) memcpy(r, tmp.data(), bytes);
#endif
    return ncclSuccess;
}

// recv (n*nranks): rank i's n elements at recv + i*n; in place when send == recv + rank*n
ncclResult_t ncclAllGather(const void* s, void* r, size_t n, ncclDataType_t t, ncclComm_t c, cudaStream_t) {
    trace(c, "all-gather", n, t);
    const size_t bytes = n * type_size(t);
    if (c->nranks == 1) { if (s != r) memmove(r, s, bytes); return ncclSuccess; }
#ifdef USE_MPI
    MPI_Datatype mt; MPI_Op mop;
    if (!mpi_type(t, ncclSum, &mt, &mop) || !fits_int(n)) return fail("ncclAllGather: type or count not emulated");
    const bool in_place = static_cast<const char*>(s) == static_cast<const char*>(r) + (size_t)c->rank * bytes;
    if (MPI_Allgather(in_place ? MPI_IN_PLACE : s, (int)n, mt, r, (int)n, mt, MPI_COMM_WORLD) != MPI_SUCCESS) return ncclSystemError;
#endif
    return ncclSuccess;
}

} // extern "C"
