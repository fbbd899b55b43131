// schedule.h: what changes with the optimizer step: the learning rate and the number of
// micro-steps K of each window (gradient accumulation schedule, as Megatron's batch-size ramp-up).
#ifndef LLMC_SCHEDULE_H
#define LLMC_SCHEDULE_H

#include <math.h>
#include <limits.h>
#include <errno.h>
#include "utils.h"

// Linear warmup over `warmup` steps to max_lr, then cosine decay to final_frac * max_lr at total_steps.
static float lr_at_step(int step, float max_lr, int warmup, int total_steps, float final_frac) {
    if (step < warmup) return max_lr * (float)(step + 1) / (float)warmup;
    if (total_steps <= warmup) return max_lr;
    double progress = (double)(step - warmup) / (double)(total_steps - warmup);
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(max_lr * (final_frac + (1.0 - final_frac) * cosine));
}

// K as a function of the step: entries "start:K" sorted by start; K(step) is that of the last
// entry whose start <= step. A constant K is one entry "0:K".
#define MAX_K_SCHEDULE 32
typedef struct {
    int count;
    int start[MAX_K_SCHEDULE];
    int k[MAX_K_SCHEDULE];
} KSchedule;

static void kschedule_constant(KSchedule* ks, int k) {
    ks->count = 1;
    ks->start[0] = 0;
    ks->k[0] = k;
}

// Parses "0:8,100:4,200:1". Returns 0 on success, -1 with a reason in err.
static int kschedule_parse(KSchedule* ks, const char* text, char* err, size_t errlen) {
    ks->count = 0;
    const char* p = text;
    while (*p) {
        if (ks->count == MAX_K_SCHEDULE) { snprintf(err, errlen, "more than %d entries", MAX_K_SCHEDULE); return -1; }
        char* end;
        errno = 0;
        long start = strtol(p, &end, 10);
        if (end == p || *end != ':') { snprintf(err, errlen, "expected start:K at '%s'", p); return -1; }
        int start_overflow = errno != 0;
        p = end + 1;
        errno = 0;
        long k = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0')) { snprintf(err, errlen, "expected K after ':' at '%s'", p); return -1; }
        // Out of int range is refused, never wrapped (99999999999 would become K = 1215752191).
        if (start_overflow || errno != 0 || start < 0 || start > INT_MAX || k < 1 || k > INT_MAX) {
            snprintf(err, errlen, "start must be in [0, %d] and K in [1, %d], got %ld:%ld%s", INT_MAX, INT_MAX, start, k,
                     start_overflow || errno ? " (beyond a 64-bit integer)" : "");
            return -1;
        }
        if (ks->count == 0 && start != 0) { snprintf(err, errlen, "the first entry must start at step 0"); return -1; }
        if (ks->count > 0 && start <= ks->start[ks->count - 1]) { snprintf(err, errlen, "starts must increase"); return -1; }
        ks->start[ks->count] = (int)start;
        ks->k[ks->count] = (int)k;
        ks->count++;
        p = *end == ',' ? end + 1 : end;
    }
    if (ks->count == 0) { snprintf(err, errlen, "empty schedule"); return -1; }
    return 0;
}

static int kschedule_at(const KSchedule* ks, int step) {
    int k = ks->k[0];
    for (int i = 0; i < ks->count && ks->start[i] <= step; i++) k = ks->k[i];
    return k;
}

#endif // LLMC_SCHEDULE_H
