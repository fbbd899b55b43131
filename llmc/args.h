// args.h: the command line of both trainers, as one table of flags.
// Each flag: name, kind, where it goes, default, its valid range and its help line. Unknown flags,
// malformed values and values out of range stop the program with one line naming the flag and what
// was expected (-h prints every range).
#ifndef LLMC_ARGS_H
#define LLMC_ARGS_H

#include <stddef.h>
#include <limits.h>
#include <math.h>
#include "utils.h"

typedef struct {
    // data and model
    const char* train_data;     // glob of training shards
    const char* val_data;       // glob of validation shards, "" for none
    const char* init;           // checkpoint file or preset name (tiny, small, d12, d24, d36, d48)
    const char* tokenizer;
    const char* out_dir;        // checkpoints and the log, "" for none
    int pad;                    // 1: padded rows, one example per row
    int shuffle;                // 1: a new random row order each epoch of the training data
    // batch
    int B, T;
    long total_batch;           // tokens per window over all ranks; -1: use -k
    int K;                      // micro-steps per window; -1: from -d
    const char* k_schedule;     // "0:8,100:4" or ""
    // optimization
    int max_steps;              // -1: one epoch of the training data
    float lr, final_lr_frac, weight_decay, grad_clip, beta1, beta2, eps;
    int warmup;
    // distributed window
    int zero_stage;
    int sync_each_microstep;
    int grad_bf16;              // GPU only: bf16 gradient buffer instead of fp32
    int fuse_gelu;              // GPU only: 1 fuses the MLP's GELU into the matmul (cuBLASLt epilogue)
    int plan;                   // GPU only: 1 prints the memory per GPU and exits, with no CUDA call
    int plan_world;             // P for -plan; 0: the mpirun world
    const char* attn;           // GPU only: attention kernels, "auto", "flash" or "ref"
    // evaluation, sampling, checkpoints
    int val_every, val_rows, sample_every, gen_T;
    int val_defaulted_off;      // 1: -j not given and -i is not the default data, so no validation
    int hellaswag;              // 1: HellaSwag every -v steps and at the end (llm.c's -h 1)
    const char* hellaswag_file;
    int ckpt_every;
    int resume;
    int overwrite;              // 1: a fresh run may delete another run's checkpoints in out_dir
    int seed;
    const char* dump_grads;
    const char* log_file;       // the key:value log; "" for DIR/main.log with -o, none without
} TrainOptions;

typedef enum { ARG_INT, ARG_LONG, ARG_FLOAT, ARG_STRING } ArgKind;
// A numeric flag's valid values: lo..hi (each end open or closed), and optionally -1 as a
// special value (-1 steps = one epoch, -1 for -d/-k = not given). -h prints it, parse_args enforces it.
typedef struct {
    double lo, hi;
    int lo_open, hi_open;
    int minus_one;              // -1 is also allowed
} ArgRange;
typedef struct {
    const char* flag;
    ArgKind kind;
    size_t offset;
    const char* fallback;       // the default, as text
    ArgRange range;             // numeric flags only
    const char* help;
} ArgSpec;

#define ANY_INT    { INT_MIN, INT_MAX, 0, 0, 0 }
#define BOOL01     { 0, 1, 0, 0, 0 }
#define POSITIVE   { 1, INT_MAX, 0, 0, 0 }
#define NONNEG     { 0, INT_MAX, 0, 0, 0 }
#define NONNEG_F   { 0, INFINITY, 0, 0, 0 }
#define UNIT_F     { 0, 1, 0, 0, 0 }       // [0, 1]
#define BETA_F     { 0, 1, 0, 1, 0 }       // [0, 1)
#define POSITIVE_F { 0, INFINITY, 1, 0, 0 }  // > 0
#define MINUS1_OR_POS    { 1, INT_MAX, 0, 0, 1 }
#define MINUS1_OR_POS_L  { 1, (double)LONG_MAX, 0, 0, 1 }
#define MINUS1_OR_NONNEG { 0, INT_MAX, 0, 0, 1 }
#define NO_RANGE   { 0, 0, 0, 0, 0 }
// The default training data; validation defaults to its validation split only when this is used.
#define DEFAULT_TRAIN_DATA "dev/data/tinyshakespeare/tiny_shakespeare_train.bin"

#define ARG(flag, kind, field, fallback, range, help) { flag, kind, offsetof(TrainOptions, field), fallback, range, help }
static const ArgSpec TRAIN_ARGS[] = {
    ARG("-i", ARG_STRING, train_data, DEFAULT_TRAIN_DATA, NO_RANGE, "training shards (glob)"),
    ARG("-j", ARG_STRING, val_data, "dev/data/tinyshakespeare/tiny_shakespeare_val.bin", NO_RANGE, "validation shards (glob), \"\" for none"),
    ARG("-e", ARG_STRING, init, "d12", NO_RANGE, "init: a checkpoint file, or a preset: tiny small d12 d24 d36 d48"),
    ARG("-tk", ARG_STRING, tokenizer, "dev/data/tinyshakespeare/gpt2_tokenizer.bin", NO_RANGE, "tokenizer file for samples"),
    ARG("-o", ARG_STRING, out_dir, "", NO_RANGE, "output directory for checkpoints and main.log, \"\" for none"),
    ARG("-overwrite", ARG_INT, overwrite, "0", BOOL01, "1: a fresh run (-y 0) deletes another run's checkpoints in -o instead of refusing"),
    ARG("-pad", ARG_INT, pad, "0", BOOL01, "row layout: 0 packed token stream, 1 one example per row, padded"),
    ARG("-shuffle", ARG_INT, shuffle, "0", BOOL01, "1: training rows in a new random order each epoch (from -seed; the same on every rank)"),
    ARG("-b", ARG_INT, B, "4", POSITIVE, "micro-batch size B (rows per rank per micro-step); B*T at most 2^31-1"),
    ARG("-t", ARG_INT, T, "64", POSITIVE, "sequence length T, at most the model's max_seq_len"),
    ARG("-d", ARG_LONG, total_batch, "-1", MINUS1_OR_POS_L, "total batch in tokens per window (all ranks); sets K = d/(B*T*P)"),
    ARG("-k", ARG_INT, K, "-1", MINUS1_OR_POS, "micro-steps per window K (instead of -d)"),
    ARG("-k_schedule", ARG_STRING, k_schedule, "", NO_RANGE, "K by step, e.g. 0:8,100:4,200:1 (instead of -d/-k)"),
    ARG("-x", ARG_INT, max_steps, "-1", MINUS1_OR_NONNEG, "optimizer steps; -1 for one epoch"),
    ARG("-l", ARG_FLOAT, lr, "3e-4", NONNEG_F, "peak learning rate"),
    ARG("-u", ARG_INT, warmup, "0", NONNEG, "warmup steps"),
    ARG("-q", ARG_FLOAT, final_lr_frac, "1.0", UNIT_F, "final learning rate as a fraction of the peak (cosine)"),
    ARG("-c", ARG_FLOAT, weight_decay, "0.0", NONNEG_F, "AdamW weight decay (matrices and embeddings only)"),
    ARG("-clip", ARG_FLOAT, grad_clip, "1.0", NONNEG_F, "clip the global gradient norm to this; 0 for no clipping"),
    ARG("-beta1", ARG_FLOAT, beta1, "0.9", BETA_F, "AdamW beta1"),
    ARG("-beta2", ARG_FLOAT, beta2, "0.95", BETA_F, "AdamW beta2"),
    ARG("-eps", ARG_FLOAT, eps, "1e-8", POSITIVE_F, "AdamW epsilon"),
    ARG("-z", ARG_INT, zero_stage, "1", BOOL01, "1: sharded optimizer (ZeRO-1), 0: all-reduce and replicated optimizer"),
    ARG("-sync_each_microstep", ARG_INT, sync_each_microstep, "0", BOOL01, "1: reduce-scatter every micro-step into a shard accumulator (more communication, not less memory)"),
    ARG("-grad_bf16", ARG_INT, grad_bf16, "0", BOOL01, "GPU: 1 keeps the gradient buffer in bf16 (default fp32)"),
    ARG("-plan", ARG_INT, plan, "0", BOOL01, "GPU: 1 prints the memory per GPU of this configuration, buffer by buffer, and exits (no GPU needed)"),
    ARG("-plan_world", ARG_INT, plan_world, "0", NONNEG, "GPU: the number of GPUs P for -plan; 0 for the mpirun world"),
    ARG("-fuse_gelu", ARG_INT, fuse_gelu, "1", BOOL01, "GPU: 1 fuses the GELU into the matmul (cuBLASLt epilogue, plain matmul + GELU kernel if it has none), 0 never"),
    ARG("-attn", ARG_STRING, attn, "auto", NO_RANGE, "GPU attention: flash (no T x T matrix; head size 16/32/64/128, bf16 build), ref (materialized), auto (flash where supported)"),
    ARG("-v", ARG_INT, val_every, "20", NONNEG, "validation every this many steps, 0 for never"),
    ARG("-h", ARG_INT, hellaswag, "0", BOOL01, "1: HellaSwag accuracy every -v steps and at the end (-h alone: this help)"),
    ARG("-h_file", ARG_STRING, hellaswag_file, "dev/data/hellaswag/hellaswag_val.bin", NO_RANGE, "HellaSwag eval file (dev/data/hellaswag.py)"),
    ARG("-m", ARG_INT, val_rows, "80", POSITIVE, "validation rows per evaluation, over all ranks (at most the validation set, each row once)"),
    ARG("-s", ARG_INT, sample_every, "20", NONNEG, "sample every this many steps, 0 for never"),
    ARG("-g", ARG_INT, gen_T, "64", POSITIVE, "tokens to sample"),
    ARG("-n", ARG_INT, ckpt_every, "0", NONNEG, "checkpoint every this many steps (needs -o), 0 for never"),
    ARG("-y", ARG_INT, resume, "0", BOOL01, "1: resume from the latest checkpoint in -o"),
    ARG("-seed", ARG_INT, seed, "1337", ANY_INT, "seed for initialization, sampling and -shuffle"),
    ARG("-dump_grads", ARG_STRING, dump_grads, "", NO_RANGE, "write each window's normalized gradient here (tests)"),
    ARG("-log", ARG_STRING, log_file, "", NO_RANGE, "write the key:value log (main.log's lines) to this file instead; \"\" for -o's main.log"),
};
#undef ARG
#define NUM_TRAIN_ARGS ((int)(sizeof(TRAIN_ARGS) / sizeof(TRAIN_ARGS[0])))
#define MAX_PATH_CHARS 900      // -o, -dump_grads, -log and shard paths: file names are appended within fixed buffers

// "0 or 1", "an integer >= 1", "-1 or an integer >= 1", "a number in [0, 1)", ...
static void arg_range_text(const ArgSpec* s, char* out, size_t n) {
    const ArgRange* r = &s->range;
    int integer = s->kind == ARG_INT || s->kind == ARG_LONG;
    const char* prefix = r->minus_one ? "-1 or " : "";
    if (integer && r->lo == 0 && r->hi == 1) snprintf(out, n, "0 or 1");
    else if (integer && r->lo == INT_MIN) snprintf(out, n, "an integer");
    else if (integer) snprintf(out, n, "%san integer >= %.0f", prefix, r->lo);
    else if (isinf(r->hi)) snprintf(out, n, "%sa number %s %g", prefix, r->lo_open ? ">" : ">=", r->lo);
    else snprintf(out, n, "%sa number in %c%g, %g%c", prefix, r->lo_open ? '(' : '[', r->lo, r->hi, r->hi_open ? ')' : ']');
}

static int arg_in_range(const ArgSpec* s, double v) {
    const ArgRange* r = &s->range;
    if (r->minus_one && v == -1.0) return 1;
    int above = r->lo_open ? v > r->lo : v >= r->lo;
    int below = r->hi_open ? v < r->hi : v <= r->hi;
    return above && below;
}

// Exit codes besides 0 (every step done) and 1 (an error, said in one line). A requeue script tests
// EXIT_STOPPED: the run was told to stop (SIGTERM, SIGUSR1) and saved itself (trainer.h).
#define EXIT_STOPPED 75            // checkpoint written: run again with -y 1 (sysexits' EX_TEMPFAIL, "try again")
#define EXIT_STOPPED_UNSAVED 76    // no -o: nothing was saved, nothing to resume

static void print_usage(const char* program) {
    printf("usage: %s [flag value]...\n", program);
    for (int i = 0; i < NUM_TRAIN_ARGS; i++) {
        char range[96] = "";
        if (TRAIN_ARGS[i].kind != ARG_STRING) {
            char text[80];
            arg_range_text(&TRAIN_ARGS[i], text, sizeof(text));
            snprintf(range, sizeof(range), "; %s", text);
        }
        printf("  %-22s %s (default %s%s)\n", TRAIN_ARGS[i].flag, TRAIN_ARGS[i].help,
               TRAIN_ARGS[i].fallback[0] ? TRAIN_ARGS[i].fallback : "\"\"", range);
    }
    printf("SIGTERM or SIGUSR1: the window in progress finishes, every rank checkpoints that step in -o and the run exits\n"
           "with code %d (run again with -y 1 to continue), or %d without -o (nothing saved). Other exit codes: 0 done,\n"
           "1 an error (said in one line).\n", EXIT_STOPPED, EXIT_STOPPED_UNSAVED);
}

// Stores text into the field described by spec; returns 0 if the text is not a valid value of the
// flag's kind and range.
static int arg_store(const ArgSpec* spec, const char* text, TrainOptions* o) {
    char* field = (char*)o + spec->offset;
    char* end = NULL;
    errno = 0;
    switch (spec->kind) {
    case ARG_STRING: *(const char**)field = text; return 1;
    case ARG_INT: {
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno || v < INT_MIN || v > INT_MAX || !arg_in_range(spec, (double)v)) return 0;
        *(int*)field = (int)v;
        return 1;
    }
    case ARG_LONG: {
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno || !arg_in_range(spec, (double)v)) return 0;
        *(long*)field = v;
        return 1;
    }
    case ARG_FLOAT: {
        float v = strtof(text, &end);
        if (end == text || *end != '\0' || errno || !isfinite(v) || !arg_in_range(spec, (double)v)) return 0;
        *(float*)field = v;
        return 1;
    }
    }
    return 0;
}

// "-h" is llm.c's HellaSwag flag when a value follows ("-h 1"); alone, or before another flag, it asks
// for the help, as does "--help".
static int asks_for_help(int argc, char** argv, int i) {
    if (strcmp(argv[i], "--help") == 0) return 1;
    if (strcmp(argv[i], "-h") != 0) return 0;
    return i + 1 >= argc || argv[i + 1][0] == '-';
}

static int flag_given(int argc, char** argv, const char* flag) {
    for (int i = 1; i < argc; i++) if (strcmp(argv[i], flag) == 0) return 1;
    return 0;
}

// The default validation shards belong to the default training data: a run on other data validates
// only where -j says so (the caller reports it at start-up).
static void default_validation_to_data(TrainOptions* o, int argc, char** argv) {
    if (!flag_given(argc, argv, "-j") && strcmp(o->train_data, DEFAULT_TRAIN_DATA) != 0) {
        o->val_data = "";
        o->val_defaulted_off = 1;
    }
}

// Defaults, then argv; then the checks that involve several flags. Returns 0, or -1 with one line in
// err naming the flag (the caller lets every rank agree before aborting: comm.h's
// parse_args_on_every_rank). -h alone prints the usage and exits 0.
static int parse_args(TrainOptions* o, int argc, char** argv, char* err, size_t n) {
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < NUM_TRAIN_ARGS; i++)
        if (!arg_store(&TRAIN_ARGS[i], TRAIN_ARGS[i].fallback, o)) die("internal: bad default for %s", TRAIN_ARGS[i].flag);
    for (int i = 1; i < argc; i++) {
        if (asks_for_help(argc, argv, i)) { print_usage(argv[0]); exit(0); }
        const ArgSpec* spec = NULL;
        for (int j = 0; j < NUM_TRAIN_ARGS; j++)
            if (strcmp(argv[i], TRAIN_ARGS[j].flag) == 0) spec = &TRAIN_ARGS[j];
        if (spec == NULL) return fail_with(err, n, "unknown flag '%s' (run with -h for the list)", argv[i]);
        char expected[80] = "a string";
        if (spec->kind != ARG_STRING) arg_range_text(spec, expected, sizeof(expected));
        if (i + 1 >= argc) return fail_with(err, n, "flag %s expects %s after it", argv[i], expected);
        if (!arg_store(spec, argv[i + 1], o)) return fail_with(err, n, "flag %s expects %s, got '%s'", argv[i], expected, argv[i + 1]);
        i++;
    }
    // The trainers index B*T positions with int.
    if ((long)o->B * o->T > INT_MAX)
        return fail_with(err, n, "flags -b %d -t %d: B*T = %ld, expected at most %d", o->B, o->T, (long)o->B * o->T, INT_MAX);
    // File names are appended to these within fixed buffers: refuse, never truncate.
    if (strlen(o->out_dir) > MAX_PATH_CHARS)
        return fail_with(err, n, "flag -o: path of %zu characters, expected at most %d", strlen(o->out_dir), MAX_PATH_CHARS);
    if (strlen(o->dump_grads) > MAX_PATH_CHARS)
        return fail_with(err, n, "flag -dump_grads: path of %zu characters, expected at most %d", strlen(o->dump_grads), MAX_PATH_CHARS);
    if (strlen(o->log_file) > MAX_PATH_CHARS)
        return fail_with(err, n, "flag -log: path of %zu characters, expected at most %d", strlen(o->log_file), MAX_PATH_CHARS);
    if (strcmp(o->attn, "auto") != 0 && strcmp(o->attn, "flash") != 0 && strcmp(o->attn, "ref") != 0)
        return fail_with(err, n, "flag -attn expects auto, flash or ref, got '%s'", o->attn);
    int ways = (o->total_batch != -1) + (o->K != -1) + (o->k_schedule[0] != '\0');
    if (ways > 1) return fail_with(err, n, "flags -d, -k and -k_schedule each set K: give at most one");
    if (o->plan_world > 0 && !o->plan) return fail_with(err, n, "flag -plan_world needs -plan 1");
    if (o->sync_each_microstep && o->zero_stage == 0) return fail_with(err, n, "flag -sync_each_microstep 1 needs the sharded optimizer (-z 1)");
    if (o->ckpt_every > 0 && o->out_dir[0] == '\0') return fail_with(err, n, "flag -n needs an output directory (-o)");
    if (o->resume && o->out_dir[0] == '\0') return fail_with(err, n, "flag -y 1 needs the output directory (-o) to resume from");
    if (o->resume && o->overwrite) return fail_with(err, n, "flags -y 1 and -overwrite 1 contradict each other: resume or start afresh");
    default_validation_to_data(o, argc, argv);
    return 0;
}

#endif // LLMC_ARGS_H
