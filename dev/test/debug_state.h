// dev/test/debug_state.h: reading train_gpt2.py's debug state (doc/formats.md), and the PASS/FAIL
// lines of the tests that compare against it (test_gpt2.c, test_gpt2.cu). Only the tests use it, so it
// lives with them, not in llmc/ (the trainers' headers); the paths below are relative to this file so
// that the copy the CPU emulation compiles (build/cpucuda/src/dev/test/) finds its llmc/ copies too.
#ifndef DEV_TEST_DEBUG_STATE_H
#define DEV_TEST_DEBUG_STATE_H

#include <stdarg.h>
#include "../../llmc/utils.h"
#include "../../llmc/format.h"
#include "../../llmc/gpt2.h"

typedef struct { int passed, failed; } Tally;

static void check(Tally* tally, int ok, const char* name, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %s: ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) tally->passed++; else tally->failed++;
    fflush(stdout);
}

typedef struct {
    int B, T, K, steps;
    size_t num_params;
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
    int *x, *y;                 // (K*B, T)
    float* logits;              // (B, T, V)
    float loss0;
    float* grads0;              // (num_params)
    float* window_grads;        // (num_params)
    float* losses;              // (steps)
} DebugState;

static float header_float(const int* header, int slot) {
    float f;
    memcpy(&f, &header[slot], sizeof(f));
    return f;
}

static void debug_state_load(DebugState* d, const char* path, int V) {
    FILE* f = fopenCheck(path, "rb");
    int header[HEADER_INTS];
    freadCheck(header, sizeof(int), HEADER_INTS, f, path);
    if (header[0] != DEBUG_STATE_MAGIC) die("debug state '%s' has magic %d, expected %d", path, header[0], DEBUG_STATE_MAGIC);
    if (header[1] != DEBUG_STATE_VERSION) die("debug state '%s' has version %d, expected %d", path, header[1], DEBUG_STATE_VERSION);
    d->B = header[2]; d->T = header[3]; d->K = header[4]; d->steps = header[5]; d->num_params = (size_t)header[6];
    d->lr = header_float(header, 8); d->beta1 = header_float(header, 9); d->beta2 = header_float(header, 10);
    d->eps = header_float(header, 11); d->weight_decay = header_float(header, 12); d->grad_clip = header_float(header, 13);
    size_t rows = (size_t)d->K * d->B, BT = (size_t)d->B * d->T;
    d->x = (int*)mallocCheck(rows * d->T * sizeof(int));
    d->y = (int*)mallocCheck(rows * d->T * sizeof(int));
    d->logits = (float*)mallocCheck(BT * V * sizeof(float));
    d->grads0 = (float*)mallocCheck(d->num_params * sizeof(float));
    d->window_grads = (float*)mallocCheck(d->num_params * sizeof(float));
    d->losses = (float*)mallocCheck((size_t)d->steps * sizeof(float));
    freadCheck(d->x, sizeof(int), rows * d->T, f, path);
    freadCheck(d->y, sizeof(int), rows * d->T, f, path);
    freadCheck(d->logits, sizeof(float), BT * V, f, path);
    freadCheck(&d->loss0, sizeof(float), 1, f, path);
    freadCheck(d->grads0, sizeof(float), d->num_params, f, path);
    freadCheck(d->window_grads, sizeof(float), d->num_params, f, path);
    freadCheck(d->losses, sizeof(float), d->steps, f, path);
    fcloseCheck(f, path);
}

// The two arguments of both test programs: the model (its parameters, returned, and config) and the
// debug state train_gpt2.py wrote for it, which must be of the same parameter count.
static float* load_model_and_debug_state(const char* model, const char* state, GPT2Config* c, DebugState* d) {
    float* init = gpt2_load_checkpoint(model, c);
    debug_state_load(d, state, c->vocab_size);
    size_t n = gpt2_num_parameters(c);
    if (d->num_params != n) die("debug state '%s' has %zu parameters, the model %zu", state, d->num_params, n);
    return init;
}

// ||a - b|| / ||b|| over n elements (the absolute norm when b is zero).
static double relative_error(const float* a, const float* b, size_t n) {
    double diff = 0.0, ref = 0.0;
    for (size_t i = 0; i < n; i++) { double e = (double)a[i] - b[i]; diff += e * e; ref += (double)b[i] * b[i]; }
    return ref > 0.0 ? sqrt(diff / ref) : sqrt(diff);
}

// One check per parameter tensor; returns the worst relative error.
static double compare_tensors(Tally* tally, const char* what, const float* got, const float* want,
                              const GPT2Config* c, double tol) {
    size_t sizes[NUM_PARAMETER_TENSORS], off = 0;
    gpt2_tensor_sizes(c, sizes);
    double worst = 0.0;
    int worst_i = 0;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) {
        double e = relative_error(got + off, want + off, sizes[i]);
        char name[160];
        snprintf(name, sizeof(name), "%s %s", what, GPT2_TENSOR_NAMES[i]);
        check(tally, e <= tol, name, "||dg||/||g|| = %.2e (tolerance %.1e)", e, tol);
        if (e > worst) { worst = e; worst_i = i; }
        off += sizes[i];
    }
    printf("     %s: worst tensor %s at %.2e\n", what, GPT2_TENSOR_NAMES[worst_i], worst);
    return worst;
}

#endif // DEV_TEST_DEBUG_STATE_H
