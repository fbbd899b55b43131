// utils.h: checked wrappers for everything that can fail outside the math.
// Every failure prints one line naming what failed (file, flag or call) and exits with code 1.
// Under MPI the process calls MPI_Abort so that no other rank hangs waiting for it.
#ifndef LLMC_UTILS_H
#define LLMC_UTILS_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <errno.h>
#ifdef USE_MPI
#include <mpi.h>
#endif

// The rank to prefix messages with; -1 when running without MPI (or before MPI_Init).
static int process_rank(void) {
#ifdef USE_MPI
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) {
        int rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        return rank;
    }
#endif
    return -1;
}

// Ends the job. With MPI, MPI_Abort takes every rank down, so nobody blocks in a collective.
static void abort_job(void) {
    fflush(stdout);
    fflush(stderr);
#ifdef USE_MPI
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    exit(1);
}

static void vprint_error(const char* fmt, va_list ap) {
    int rank = process_rank();
    if (rank >= 0) fprintf(stderr, "[rank %d] ", rank);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
}

static void print_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
}

// die("file %s: bad magic", path): one line on stderr, then exit 1 (or MPI_Abort).
static void die(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    abort_job();
}

// Writes a one-line reason into err (err_len bytes) and returns -1. Code that runs on every rank
// reports failures this way, so that all ranks can agree before anyone aborts (comm_agree_or_die).
static int fail_with(char* err, size_t err_len, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

static void warn(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rank = process_rank();
    if (rank >= 0) fprintf(stderr, "[rank %d] ", rank);
    fprintf(stderr, "warning: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

// ----------------------------------------------------------------------------
// Checked libc calls, llm.c style: the macro passes the call site for the message.

static FILE* fopen_check(const char* path, const char* mode, const char* file, int line) {
    FILE* f = fopen(path, mode);
    if (f == NULL) die("cannot open '%s' (mode %s): %s [%s:%d]", path, mode, strerror(errno), file, line);
    return f;
}
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)

// Reads exactly count items or dies naming the file: a short read means a truncated file.
static void fread_check(void* ptr, size_t size, size_t count, FILE* f, const char* path, const char* file, int line) {
    size_t got = fread(ptr, size, count, f);
    if (got != count) die("'%s' is truncated: expected %zu items of %zu bytes, read %zu [%s:%d]",
                          path, count, size, got, file, line);
}
#define freadCheck(ptr, size, count, f, path) fread_check(ptr, size, count, f, path, __FILE__, __LINE__)

static void fwrite_check(const void* ptr, size_t size, size_t count, FILE* f, const char* path, const char* file, int line) {
    size_t put = fwrite(ptr, size, count, f);
    if (put != count) die("cannot write '%s': wrote %zu of %zu items: %s [%s:%d]",
                          path, put, count, strerror(errno), file, line);
}
#define fwriteCheck(ptr, size, count, f, path) fwrite_check(ptr, size, count, f, path, __FILE__, __LINE__)

static void fseek_check(FILE* f, long offset, int whence, const char* path, const char* file, int line) {
    if (fseek(f, offset, whence) != 0) die("cannot seek in '%s' to %ld: %s [%s:%d]", path, offset, strerror(errno), file, line);
}
#define fseekCheck(f, offset, whence, path) fseek_check(f, offset, whence, path, __FILE__, __LINE__)

static void fclose_check(FILE* f, const char* path, const char* file, int line) {
    if (fclose(f) != 0) die("cannot close '%s': %s [%s:%d]", path, strerror(errno), file, line);
}
#define fcloseCheck(f, path) fclose_check(f, path, __FILE__, __LINE__)

static void* malloc_check(size_t size, const char* file, int line) {
    void* p = malloc(size == 0 ? 1 : size);
    if (p == NULL) die("out of host memory allocating %zu bytes [%s:%d]", size, file, line);
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

static void* calloc_check(size_t count, size_t size, const char* file, int line) {
    void* p = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
    if (p == NULL) die("out of host memory allocating %zu x %zu bytes [%s:%d]", count, size, file, line);
    return p;
}
#define callocCheck(count, size) calloc_check(count, size, __FILE__, __LINE__)

// a * b into *out; returns 0 (leaving *out unspecified) if the product does not fit in size_t.
static int size_mul_ok(size_t a, size_t b, size_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Size of an open file in bytes (used to catch truncated files before reading them).
static long file_size_of(FILE* f, const char* path) {
    long here = ftell(f);
    fseekCheck(f, 0, SEEK_END, path);
    long size = ftell(f);
    fseekCheck(f, here, SEEK_SET, path);
    return size;
}

// ----------------------------------------------------------------------------
// Atomic file writing: write "<path>.tmp", flush it to disk, then rename over <path>.
// A run killed mid-write leaves the previous <path> intact; a write error (a full disk) removes the
// partial .tmp before stopping, so it does not keep the disk full.

#include <unistd.h>
typedef struct {
    FILE* f;
    char path[1024];
    char tmp_path[1040];
} AtomicFile;

// One line naming the file and the failed call; the partial temporary file is deleted first.
static void atomic_fail(AtomicFile* af, const char* what) {
    int err = errno;
    if (af->f != NULL) fclose(af->f);
    af->f = NULL;
    unlink(af->tmp_path);
    die("cannot %s '%s': %s (the partial file was removed; '%s' is unchanged)", what, af->tmp_path, strerror(err), af->path);
}

static void atomic_open(AtomicFile* af, const char* path) {
    if (strlen(path) >= sizeof(af->path)) die("path of %zu characters is too long (at most %zu): '%s'", strlen(path), sizeof(af->path) - 1, path);
    strcpy(af->path, path);
    snprintf(af->tmp_path, sizeof(af->tmp_path), "%s.tmp", path);
    af->f = fopen(af->tmp_path, "wb");
    if (af->f == NULL) die("cannot open '%s' (mode wb): %s", af->tmp_path, strerror(errno));
}

static void atomic_write(AtomicFile* af, const void* ptr, size_t size, size_t count) {
    if (fwrite(ptr, size, count, af->f) != count) atomic_fail(af, "write");
}

static void atomic_commit(AtomicFile* af) {
    if (fflush(af->f) != 0) atomic_fail(af, "flush");
    if (fsync(fileno(af->f)) != 0) atomic_fail(af, "fsync");
    FILE* f = af->f;
    af->f = NULL;
    if (fclose(f) != 0) atomic_fail(af, "close");
    if (rename(af->tmp_path, af->path) != 0) atomic_fail(af, "rename");
}

// Wall-clock seconds, for step timing.
#include <time.h>
static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// FNV-1a, to compare configurations across ranks cheaply.
static uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const unsigned char* p = (const unsigned char*)data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}
#define FNV1A_SEED 14695981039346656037ULL

#endif // LLMC_UTILS_H
