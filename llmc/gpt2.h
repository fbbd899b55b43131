// gpt2.h: the GPT-2 configuration, its parameter tensor table, its random initialization, and the model
// checkpoint file.
// Shared by train_gpt2.c (fp32) and train_gpt2.cu (bf16): only the element type differs.
#ifndef LLMC_GPT2_H
#define LLMC_GPT2_H

#include <math.h>
#include "utils.h"
#include "format.h"
#include "rand.h"

typedef struct {
    int max_seq_len;       // maxT, e.g. 1024
    int vocab_size;        // V, 50257
    int padded_vocab_size; // Vp, 50304: V rounded up so the LM-head matmul has friendly sizes
    int num_layers;        // L
    int num_heads;         // NH
    int channels;          // C
} GPT2Config;

// The parameter tensors, in checkpoint order: X(name, number of elements, weight decay, shape).
// Everything that lists tensors (struct fields, sizes, names, decay flags) expands this one table.
// The numel expressions use Vp, C, L, maxT from the enclosing scope.
#define GPT2_PARAMETER_TENSORS(X) \
    X(wte,      Vp * C,          1, "(Vp, C)")    \
    X(wpe,      maxT * C,        1, "(maxT, C)")  \
    X(ln1w,     L * C,           0, "(L, C)")     \
    X(ln1b,     L * C,           0, "(L, C)")     \
    X(qkvw,     L * 3 * C * C,   1, "(L, 3C, C)") \
    X(qkvb,     L * 3 * C,       0, "(L, 3C)")    \
    X(attprojw, L * C * C,       1, "(L, C, C)")  \
    X(attprojb, L * C,           0, "(L, C)")     \
    X(ln2w,     L * C,           0, "(L, C)")     \
    X(ln2b,     L * C,           0, "(L, C)")     \
    X(fcw,      L * 4 * C * C,   1, "(L, 4C, C)") \
    X(fcb,      L * 4 * C,       0, "(L, 4C)")    \
    X(fcprojw,  L * C * 4 * C,   1, "(L, C, 4C)") \
    X(fcprojb,  L * C,           0, "(L, C)")     \
    X(lnfw,     C,               0, "(C)")        \
    X(lnfb,     C,               0, "(C)")

#define GPT2_COUNT_(name, numel, decay, shape) +1
enum { NUM_PARAMETER_TENSORS = 0 GPT2_PARAMETER_TENSORS(GPT2_COUNT_) };

#define GPT2_NAME_(name, numel, decay, shape) #name,
static const char* const GPT2_TENSOR_NAMES[NUM_PARAMETER_TENSORS] = { GPT2_PARAMETER_TENSORS(GPT2_NAME_) };
#define GPT2_DECAY_(name, numel, decay, shape) decay,
static const int GPT2_TENSOR_DECAY[NUM_PARAMETER_TENSORS] = { GPT2_PARAMETER_TENSORS(GPT2_DECAY_) };
#define GPT2_SHAPE_(name, numel, decay, shape) shape,
static const char* const GPT2_TENSOR_SHAPES[NUM_PARAMETER_TENSORS] = { GPT2_PARAMETER_TENSORS(GPT2_SHAPE_) };

// A trainer declares its struct of views with one pointer per tensor from the same table, e.g.
//   #define FLOAT_VIEW_(name, numel, decay, shape) float* name;
//   typedef struct { GPT2_PARAMETER_TENSORS(FLOAT_VIEW_) } ParameterTensors;
// and gpt2_point_views sets every pointer into one allocation.

// Per-tensor element counts in checkpoint order.
static void gpt2_tensor_sizes(const GPT2Config* c, size_t sizes[NUM_PARAMETER_TENSORS]) {
    size_t Vp = (size_t)c->padded_vocab_size, C = (size_t)c->channels;
    size_t L = (size_t)c->num_layers, maxT = (size_t)c->max_seq_len;
    int i = 0;
#define GPT2_SIZE_(name, numel, decay, shape) sizes[i++] = (numel);
    GPT2_PARAMETER_TENSORS(GPT2_SIZE_)
#undef GPT2_SIZE_
}

// 1 if every size of this config fits: the parameter bytes, computed in double (exact far beyond
// what this bound needs), stay below 2^63, so the size_t sums above and file offsets cannot overflow.
// A header whose sizes multiply past that is corrupt, whatever its file size says.
static int gpt2_sizes_fit(const GPT2Config* c) {
    double Vp = c->padded_vocab_size, C = c->channels, L = c->num_layers, maxT = c->max_seq_len, bytes = 0.0;
#define GPT2_BYTES_(name, numel, decay, shape) bytes += 4.0 * (numel);
    GPT2_PARAMETER_TENSORS(GPT2_BYTES_)
#undef GPT2_BYTES_
    return bytes < 9.0e18;
}

static size_t gpt2_num_parameters(const GPT2Config* c) {
    size_t sizes[NUM_PARAMETER_TENSORS], total = 0;
    gpt2_tensor_sizes(c, sizes);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) total += sizes[i];
    return total;
}

// Points a struct of NUM_PARAMETER_TENSORS same-typed pointers into one buffer, in table order.
// views must be such a struct (the caller static_asserts its size); elem_size is sizeof the element.
static void gpt2_point_views(void* views, void* base, size_t elem_size, const GPT2Config* c) {
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_tensor_sizes(c, sizes);
    char** ptrs = (char**)views;
    char* p = (char*)base;
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) { ptrs[i] = p; p += sizes[i] * elem_size; }
}

static int round_up(int x, int multiple) { return ((x + multiple - 1) / multiple) * multiple; }

// Presets by name: d12 d24 d36 d48 are GPT-2 124M, 350M, 774M, 1.5B; tiny and small are for tests.
// Returns 1 and fills c if the name is known.
static int gpt2_config_from_name(const char* name, GPT2Config* c) {
    static const struct { const char* name; int L, C, NH, maxT; } presets[] = {
        {"tiny", 2, 64, 4, 64}, {"small", 4, 128, 4, 256},
        {"d12", 12, 768, 12, 1024}, {"d24", 24, 1024, 16, 1024},
        {"d36", 36, 1280, 20, 1024}, {"d48", 48, 1600, 25, 1024},
    };
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        if (strcmp(name, presets[i].name) == 0) {
            c->num_layers = presets[i].L;
            c->channels = presets[i].C;
            c->num_heads = presets[i].NH;
            c->max_seq_len = presets[i].maxT;
            c->vocab_size = GPT2_VOCAB_SIZE;
            c->padded_vocab_size = round_up(GPT2_VOCAB_SIZE, VOCAB_PAD_MULTIPLE);
            return 1;
        }
    }
    return 0;
}

static void gpt2_print_config(const GPT2Config* c, size_t num_params) {
    printf("model: L=%d NH=%d C=%d maxT=%d V=%d Vp=%d, %zu parameters (%.1fM)\n",
           c->num_layers, c->num_heads, c->channels, c->max_seq_len, c->vocab_size,
           c->padded_vocab_size, num_params, num_params / 1e6);
}

// ----------------------------------------------------------------------------
// A new model's parameters, and what a batch of (B, T) needs.

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
static int gpt2_check_activation_sizes(const GPT2Config* c, int B, int T, char* err, size_t n) {
    double BT = (double)B * T;
    double floats = BT * c->padded_vocab_size * 2.0 + BT * c->num_heads * (double)T * c->num_layers * 2.0
                  + BT * c->channels * c->num_layers * 32.0;
    if (floats * 4.0 > 4.6e18)
        return fail_with(err, n, "flags -b %d -t %d: the activations of this model would need about %.3g bytes, past 2^62",
                         B, T, floats * 4.0);
    return 0;
}

// ----------------------------------------------------------------------------
// Model checkpoint: header (magic, version, maxT, V, L, NH, C, Vp), then the tensors in table order.

// bf16 is the top half of an fp32: widening is exact.
static float bf16_bits_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

// Reads and validates the header; leaves f positioned at the parameters. Returns the version, or -1
// with a one-line reason in err.
static int gpt2_read_checkpoint_header(FILE* f, const char* path, GPT2Config* c, char* err, size_t n) {
    int header[HEADER_INTS];
    long actual = file_size_of(f, path);
    if (actual < (long)sizeof(header)) return fail_with(err, n, "checkpoint '%s' is truncated: shorter than its 1024-byte header", path);
    if (fread(header, sizeof(int), HEADER_INTS, f) != HEADER_INTS) return fail_with(err, n, "cannot read the header of '%s'", path);
    if (header[0] != MODEL_MAGIC) return fail_with(err, n, "checkpoint '%s' has magic %d, expected %d (a model file)", path, header[0], MODEL_MAGIC);
    int version = header[1];
    if (version != MODEL_VERSION_FP32 && version != MODEL_VERSION_BF16)
        return fail_with(err, n, "checkpoint '%s' has version %d, expected %d (fp32) or %d (bf16)", path, version,
                         MODEL_VERSION_FP32, MODEL_VERSION_BF16);
    c->max_seq_len = header[2];
    c->vocab_size = header[3];
    c->num_layers = header[4];
    c->num_heads = header[5];
    c->channels = header[6];
    c->padded_vocab_size = header[7];
    if (c->max_seq_len <= 0 || c->vocab_size <= 0 || c->num_layers <= 0 || c->num_heads <= 0 || c->channels <= 0 ||
        c->padded_vocab_size < c->vocab_size || c->channels % c->num_heads != 0)
        return fail_with(err, n, "checkpoint '%s' has an invalid config (maxT=%d V=%d L=%d NH=%d C=%d Vp=%d)", path, c->max_seq_len,
                         c->vocab_size, c->num_layers, c->num_heads, c->channels, c->padded_vocab_size);
    if (!gpt2_sizes_fit(c))
        return fail_with(err, n, "checkpoint '%s' has a config whose sizes overflow (maxT=%d V=%d L=%d NH=%d C=%d Vp=%d): a corrupt header",
                         path, c->max_seq_len, c->vocab_size, c->num_layers, c->num_heads, c->channels, c->padded_vocab_size);
    size_t elem = version == MODEL_VERSION_FP32 ? 4 : 2;
    long expected = (long)sizeof(header) + (long)(gpt2_num_parameters(c) * elem);
    if (actual != expected)
        return fail_with(err, n, "checkpoint '%s' is %ld bytes, expected %ld for its config (truncated or corrupt)", path, actual, expected);
    return version;
}

// What a checkpoint of a training run knows about itself (doc/formats.md, model slots 16..21).
typedef struct {
    int present;           // 0: a plain llm.c file (an initial model), no stamp
    int step;
    uint64_t run_id;       // the resume identity of the run that wrote it
    uint64_t checksum;     // FNV-1a of the parameter bytes as written
} ModelStamp;

static void put_u64(int* slots, uint64_t v) { slots[0] = (int)(uint32_t)v; slots[1] = (int)(uint32_t)(v >> 32); }
static uint64_t get_u64(const int* slots) { return (uint64_t)(uint32_t)slots[0] | ((uint64_t)(uint32_t)slots[1] << 32); }

// The stamp in a model file's header (present = 0 if it has none).
static ModelStamp gpt2_read_stamp(const char* path) {
    int header[HEADER_INTS];
    FILE* f = fopenCheck(path, "rb");
    freadCheck(header, sizeof(int), HEADER_INTS, f, path);
    fcloseCheck(f, path);
    ModelStamp s;
    memset(&s, 0, sizeof(s));
    if (header[MODEL_SLOT_STAMP] != MODEL_STAMP_MAGIC) return s;
    s.present = 1;
    s.step = header[MODEL_SLOT_STEP];
    s.run_id = get_u64(header + MODEL_SLOT_RUN_ID);
    s.checksum = get_u64(header + MODEL_SLOT_CHECKSUM);
    return s;
}

// Index of the first NaN or Inf in x[0..n), or -1.
static long first_nonfinite(const float* x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long)i;
    return -1;
}

// The tensor holding parameter index i (for messages).
static const char* gpt2_tensor_name_at(const GPT2Config* c, size_t i) {
    size_t sizes[NUM_PARAMETER_TENSORS], start = 0;
    gpt2_tensor_sizes(c, sizes);
    for (int t = 0; t < NUM_PARAMETER_TENSORS; t++) {
        if (i < start + sizes[t]) return GPT2_TENSOR_NAMES[t];
        start += sizes[t];
    }
    return "(padding)";
}

// Loads a checkpoint's parameters as fp32 into a freshly allocated buffer (bf16 files are widened).
// Returns NULL with a one-line reason in err if the file is missing, not a checkpoint, or corrupt.
static float* gpt2_try_load_checkpoint(const char* path, GPT2Config* c, char* err, size_t err_len) {
    FILE* f = fopen(path, "rb");
    if (f == NULL) { fail_with(err, err_len, "cannot open checkpoint '%s': %s", path, strerror(errno)); return NULL; }
    int version = gpt2_read_checkpoint_header(f, path, c, err, err_len);
    if (version < 0) { fclose(f); return NULL; }
    size_t n = gpt2_num_parameters(c);
    float* params = (float*)mallocCheck(n * sizeof(float));
    if (version == MODEL_VERSION_FP32) {
        freadCheck(params, sizeof(float), n, f, path);
    } else {
        uint16_t* tmp = (uint16_t*)mallocCheck(n * sizeof(uint16_t));
        freadCheck(tmp, sizeof(uint16_t), n, f, path);
        for (size_t i = 0; i < n; i++) params[i] = bf16_bits_to_float(tmp[i]);
        free(tmp);
    }
    fcloseCheck(f, path);
    return params;
}

// The same, ending the program with the reason (the test programs, one process).
static float* gpt2_load_checkpoint(const char* path, GPT2Config* c) {
    char err[1400];
    float* params = gpt2_try_load_checkpoint(path, c, err, sizeof(err));
    if (params == NULL) die("%s", err);
    return params;
}

// Writes fp32 parameters atomically (version 3, loadable by llm.c), with the run's stamp if given.
static void gpt2_save_checkpoint_stamped(const char* path, const GPT2Config* c, const float* params, const ModelStamp* stamp) {
    int header[HEADER_INTS] = {0};
    if (stamp != NULL) {
        header[MODEL_SLOT_STAMP] = MODEL_STAMP_MAGIC;
        header[MODEL_SLOT_STEP] = stamp->step;
        put_u64(header + MODEL_SLOT_RUN_ID, stamp->run_id);
        put_u64(header + MODEL_SLOT_CHECKSUM, stamp->checksum);
    }
    header[0] = MODEL_MAGIC;
    header[1] = MODEL_VERSION_FP32;
    header[2] = c->max_seq_len;
    header[3] = c->vocab_size;
    header[4] = c->num_layers;
    header[5] = c->num_heads;
    header[6] = c->channels;
    header[7] = c->padded_vocab_size;
    AtomicFile af;
    atomic_open(&af, path);
    atomic_write(&af, header, sizeof(int), HEADER_INTS);
    atomic_write(&af, params, sizeof(float), gpt2_num_parameters(c));
    atomic_commit(&af);
}

static void gpt2_save_checkpoint(const char* path, const GPT2Config* c, const float* params) {
    gpt2_save_checkpoint_stamped(path, c, params, NULL);
}

#endif // LLMC_GPT2_H
