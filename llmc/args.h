// args.h: the command line of both trainers, as one table of flags.
// Each flag: name, kind, where it goes, default, and its help line. Unknown flags and malformed
// values stop the program with one line naming the flag and what was expected.
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
    const char* attn;           // GPU only: attention kernels, "auto", "flash" or "ref"
    // evaluation, sampling, checkpoints
    int val_every, val_steps, sample_every, gen_T;
    int ckpt_every;
    int resume;
    int seed;
    const char* dump_grads;
} TrainOptions;

typedef enum { ARG_INT, ARG_LONG, ARG_FLOAT, ARG_STRING } ArgKind;
typedef struct {
    const char* flag;
    ArgKind kind;
    size_t offset;
    const char* fallback;       // the default, as text
    const char* help;
} ArgSpec;

#define ARG(flag, kind, field, fallback, help) { flag, kind, offsetof(TrainOptions, field), fallback, help }
static const ArgSpec TRAIN_ARGS[] = {
    ARG("-i", ARG_STRING, train_data, "dev/data/tinyshakespeare/tiny_shakespeare_train.bin", "training shards (glob)"),
    ARG("-j", ARG_STRING, val_data, "dev/data/tinyshakespeare/tiny_shakespeare_val.bin", "validation shards (glob), \"\" for none"),
    ARG("-e", ARG_STRING, init, "d12", "init: a checkpoint file, or a preset: tiny small d12 d24 d36 d48"),
    ARG("-tk", ARG_STRING, tokenizer, "dev/data/tinyshakespeare/gpt2_tokenizer.bin", "tokenizer file for samples"),
    ARG("-o", ARG_STRING, out_dir, "", "output directory for checkpoints and main.log, \"\" for none"),
    ARG("-pad", ARG_INT, pad, "0", "row layout: 0 packed token stream, 1 one example per row, padded"),
    ARG("-shuffle", ARG_INT, shuffle, "0", "1: training rows in a new random order each epoch (from -seed; the same on every rank)"),
    ARG("-b", ARG_INT, B, "4", "micro-batch size B (rows per rank per micro-step)"),
    ARG("-t", ARG_INT, T, "64", "sequence length T"),
    ARG("-d", ARG_LONG, total_batch, "-1", "total batch in tokens per window (all ranks); sets K = d/(B*T*P)"),
    ARG("-k", ARG_INT, K, "-1", "micro-steps per window K (instead of -d)"),
    ARG("-k_schedule", ARG_STRING, k_schedule, "", "K by step, e.g. 0:8,100:4,200:1 (instead of -d/-k)"),
    ARG("-x", ARG_INT, max_steps, "-1", "optimizer steps; -1 for one epoch"),
    ARG("-l", ARG_FLOAT, lr, "3e-4", "peak learning rate"),
    ARG("-u", ARG_INT, warmup, "0", "warmup steps"),
    ARG("-q", ARG_FLOAT, final_lr_frac, "1.0", "final learning rate as a fraction of the peak (cosine)"),
    ARG("-c", ARG_FLOAT, weight_decay, "0.0", "AdamW weight decay (matrices and embeddings only)"),
    ARG("-clip", ARG_FLOAT, grad_clip, "1.0", "clip the global gradient norm to this; 0 for no clipping"),
    ARG("-beta1", ARG_FLOAT, beta1, "0.9", "AdamW beta1"),
    ARG("-beta2", ARG_FLOAT, beta2, "0.95", "AdamW beta2"),
    ARG("-eps", ARG_FLOAT, eps, "1e-8", "AdamW epsilon"),
    ARG("-z", ARG_INT, zero_stage, "1", "1: sharded optimizer (ZeRO-1), 0: all-reduce and replicated optimizer"),
    ARG("-sync_each_microstep", ARG_INT, sync_each_microstep, "0", "1: reduce-scatter every micro-step into a shard accumulator (more communication, not less memory)"),
    ARG("-grad_bf16", ARG_INT, grad_bf16, "0", "GPU: 1 keeps the gradient buffer in bf16 (default fp32)"),
    ARG("-attn", ARG_STRING, attn, "auto", "GPU attention: flash (no T x T matrix; head size 16/32/64/128, bf16 build), ref (materialized), auto (flash where supported)"),
    ARG("-v", ARG_INT, val_every, "20", "validation every this many steps, 0 for never"),
    ARG("-m", ARG_INT, val_steps, "20", "validation batches of B rows per rank per evaluation"),
    ARG("-s", ARG_INT, sample_every, "20", "sample every this many steps, 0 for never"),
    ARG("-g", ARG_INT, gen_T, "64", "tokens to sample"),
    ARG("-n", ARG_INT, ckpt_every, "0", "checkpoint every this many steps (needs -o), 0 for never"),
    ARG("-y", ARG_INT, resume, "0", "1: resume from the latest checkpoint in -o"),
    ARG("-seed", ARG_INT, seed, "1337", "seed for initialization, sampling and -shuffle"),
    ARG("-dump_grads", ARG_STRING, dump_grads, "", "write each window's normalized gradient here (tests)"),
};
#undef ARG
#define NUM_TRAIN_ARGS ((int)(sizeof(TRAIN_ARGS) / sizeof(TRAIN_ARGS[0])))

static void print_usage(const char* program) {
    printf("usage: %s [flag value]...\n", program);
    for (int i = 0; i < NUM_TRAIN_ARGS; i++)
        printf("  %-22s %s (default %s)\n", TRAIN_ARGS[i].flag, TRAIN_ARGS[i].help,
               TRAIN_ARGS[i].fallback[0] ? TRAIN_ARGS[i].fallback : "\"\"");
}

// Stores text into the field described by spec; returns 0 if the text is not a valid value.
static int arg_store(const ArgSpec* spec, const char* text, TrainOptions* o) {
    char* field = (char*)o + spec->offset;
    char* end = NULL;
    errno = 0;
    switch (spec->kind) {
    case ARG_STRING: *(const char**)field = text; return 1;
    case ARG_INT: {
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno || v < INT_MIN || v > INT_MAX) return 0;
        *(int*)field = (int)v;
        return 1;
    }
    case ARG_LONG: {
        long v = strtol(text, &end, 10);
        if (end == text || *end != '\0' || errno) return 0;
        *(long*)field = v;
        return 1;
    }
    case ARG_FLOAT: {
        float v = strtof(text, &end);
        if (end == text || *end != '\0' || errno || !isfinite(v)) return 0;
        *(float*)field = v;
        return 1;
    }
    }
    return 0;
}

static const char* arg_kind_name(ArgKind k) {
    return k == ARG_INT || k == ARG_LONG ? "an integer" : k == ARG_FLOAT ? "a number" : "a string";
}

static void require(int ok, const char* flag, const char* expected, const char* text) {
    if (!ok) die("flag %s expects %s, got '%s'", flag, expected, text);
}

// Defaults, then argv; then the checks that need no files. -h prints the usage and exits 0.
static void parse_args(TrainOptions* o, int argc, char** argv) {
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < NUM_TRAIN_ARGS; i++)
        if (!arg_store(&TRAIN_ARGS[i], TRAIN_ARGS[i].fallback, o)) die("internal: bad default for %s", TRAIN_ARGS[i].flag);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { print_usage(argv[0]); exit(0); }
        const ArgSpec* spec = NULL;
        for (int j = 0; j < NUM_TRAIN_ARGS; j++)
            if (strcmp(argv[i], TRAIN_ARGS[j].flag) == 0) spec = &TRAIN_ARGS[j];
        if (spec == NULL) die("unknown flag '%s' (run with -h for the list)", argv[i]);
        if (i + 1 >= argc) die("flag %s expects %s after it", argv[i], arg_kind_name(spec->kind));
        if (!arg_store(spec, argv[i + 1], o)) die("flag %s expects %s, got '%s'", argv[i], arg_kind_name(spec->kind), argv[i + 1]);
        i++;
    }
    char text[32];
    snprintf(text, sizeof(text), "%d", o->B);  require(o->B > 0, "-b", "a positive integer", text);
    snprintf(text, sizeof(text), "%d", o->T);  require(o->T > 0, "-t", "a positive integer", text);
    snprintf(text, sizeof(text), "%d", o->K);  require(o->K == -1 || o->K > 0, "-k", "a positive integer", text);
    snprintf(text, sizeof(text), "%d", o->zero_stage); require(o->zero_stage == 0 || o->zero_stage == 1, "-z", "0 or 1", text);
    snprintf(text, sizeof(text), "%d", o->pad); require(o->pad == 0 || o->pad == 1, "-pad", "0 or 1", text);
    snprintf(text, sizeof(text), "%d", o->shuffle); require(o->shuffle == 0 || o->shuffle == 1, "-shuffle", "0 or 1", text);
    snprintf(text, sizeof(text), "%d", o->sync_each_microstep);
    require(o->sync_each_microstep == 0 || o->sync_each_microstep == 1, "-sync_each_microstep", "0 or 1", text);
    snprintf(text, sizeof(text), "%d", o->grad_bf16); require(o->grad_bf16 == 0 || o->grad_bf16 == 1, "-grad_bf16", "0 or 1", text);
    require(strcmp(o->attn, "auto") == 0 || strcmp(o->attn, "flash") == 0 || strcmp(o->attn, "ref") == 0,
            "-attn", "auto, flash or ref", o->attn);
    snprintf(text, sizeof(text), "%g", o->lr); require(o->lr >= 0.0f, "-l", "a non-negative number", text);
    snprintf(text, sizeof(text), "%d", o->val_steps); require(o->val_steps > 0, "-m", "a positive integer", text);
    snprintf(text, sizeof(text), "%d", o->gen_T); require(o->gen_T > 0, "-g", "a positive integer", text);
    int ways = (o->total_batch != -1) + (o->K != -1) + (o->k_schedule[0] != '\0');
    if (ways > 1) die("flags -d, -k and -k_schedule each set K: give at most one");
    if (o->sync_each_microstep && o->zero_stage == 0) die("flag -sync_each_microstep 1 needs the sharded optimizer (-z 1)");
    if (o->ckpt_every > 0 && o->out_dir[0] == '\0') die("flag -n needs an output directory (-o)");
    if (o->resume && o->out_dir[0] == '\0') die("flag -y 1 needs the output directory (-o) to resume from");
}

#endif // LLMC_ARGS_H
