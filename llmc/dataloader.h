// dataloader.h: token shards -> (B,T) inputs and targets for one rank.
//
// The data is a sequence of rows addressed by a global row index (doc/formats.md, "Rows"):
//   packed (default): row j of a shard = tokens[j*T .. j*T+T], targets shifted by one;
//   padded (-pad 1):  row j of a shard = example j, from its opening end-of-text token to the
//                     next one, truncated to T; the rest of the row is padding with target -1.
// A target whose loss mask is 0 (version-2 shards) becomes -1: it adds nothing to loss or gradient.
// Micro-step m: rank r takes the rows at stream positions g + r*B .. g + r*B + B-1, then g += B*P.
// Any split of the same P*K*B therefore sees the same rows in each window: the split changes, the
// data does not. Position g is row g mod total_rows, or, shuffled, row order_e[g mod total_rows] for
// epoch e = g / total_rows: a permutation that depends only on (seed, e), so every rank draws the same.
#ifndef LLMC_DATALOADER_H
#define LLMC_DATALOADER_H

#include <glob.h>
#include "utils.h"
#include "format.h"
#include "rand.h"

typedef struct {
    char path[1024];
    FILE* file;
    int version;            // DATA_VERSION_TOKENS or DATA_VERSION_MASKED
    size_t num_tokens;
    size_t num_rows;
    size_t first_row;       // global index of this shard's row 0
    size_t* example_start;  // padded layout: token offset of each example's opening end-of-text
    size_t* example_len;    // padded layout: tokens in the example before the next opening one
} Shard;

typedef struct {
    int B, T;
    int rank, world;
    int padded;
    int vocab_size;
    Shard* shards;
    int num_shards;
    size_t total_rows;
    size_t next_row;        // g: stream position of the next micro-step's first row (before the rank offset);
                            // it counts on across epochs, so a checkpoint's g also says which epoch
    int shuffle;            // 1: each epoch visits the rows in its own random order
    int shuffle_seed;
    uint32_t* order;        // shuffled: (total_rows) the permutation of epoch order_epoch
    size_t order_epoch;
    size_t rows_truncated;  // padded layout: examples longer than T (their tails are never trained)
    const int* memory_inputs;   // rows held in memory instead of shards (tests), (total_rows, T)
    const int* memory_targets;
    uint16_t* row_tokens;   // (T+1) scratch
    uint8_t* row_mask;      // (T+1) scratch
    int* inputs;            // (B,T)
    int* targets;           // (B,T), -1 where masked
} DataLoader;

// ----------------------------------------------------------------------------
// Opening: returns 0, or -1 with a one-line reason in err (so that ranks can agree before aborting).

// Reads the whole shard once, in chunks, when it is opened: every token id must be < vocab_size and
// every mask byte 0 or 1. A bad value is found now, not when its row comes up hours into a run.
// Leaves the file positioned anywhere (rows are read with explicit seeks).
static int shard_validate(Shard* s, int vocab_size, char* err, size_t errlen) {
    const size_t CHUNK = (size_t)1 << 20;  // tokens per read
    uint16_t* tokens = (uint16_t*)mallocCheck(CHUNK * sizeof(uint16_t));
    int rc = 0;
    fseekCheck(s->file, HEADER_INTS * sizeof(int), SEEK_SET, s->path);
    for (size_t done = 0; done < s->num_tokens && rc == 0; done += CHUNK) {
        size_t n = s->num_tokens - done < CHUNK ? s->num_tokens - done : CHUNK;
        if (fread(tokens, sizeof(uint16_t), n, s->file) != n) { rc = fail_with(err, errlen, "cannot read tokens of '%s'", s->path); break; }
        for (size_t i = 0; i < n; i++)
            if (tokens[i] >= vocab_size) {
                rc = fail_with(err, errlen, "data shard '%s' has token id %d at position %zu, expected < vocab size %d",
                                s->path, tokens[i], done + i, vocab_size);
                break;
            }
    }
    uint8_t* mask = (uint8_t*)tokens;  // the tokens are checked: reuse the buffer (2*CHUNK bytes) for the mask
    for (size_t done = 0; s->version == DATA_VERSION_MASKED && done < s->num_tokens && rc == 0; done += CHUNK) {
        size_t n = s->num_tokens - done < CHUNK ? s->num_tokens - done : CHUNK;
        if (fread(mask, 1, n, s->file) != n) { rc = fail_with(err, errlen, "cannot read the mask of '%s'", s->path); break; }
        for (size_t i = 0; i < n; i++)
            if (mask[i] > 1) {
                rc = fail_with(err, errlen, "data shard '%s' has mask byte %d at position %zu, expected 0 or 1",
                                s->path, mask[i], done + i);
                break;
            }
    }
    free(tokens);
    return rc;
}

// Every rank validates every shard it opens (shard_validate): ranks on different nodes may see
// different copies of the data, and each must know its own is sound before step 1.
static int shard_open(Shard* s, const char* path, int T, int padded, int vocab_size, char* err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    if (strlen(path) >= sizeof(s->path))
        return fail_with(err, errlen, "data shard path of %zu characters, expected at most %zu: '%.80s...'",
                          strlen(path), sizeof(s->path) - 1, path);
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->file = fopen(path, "rb");
    if (s->file == NULL) return fail_with(err, errlen, "cannot open data shard '%s': %s", path, strerror(errno));
    int header[HEADER_INTS];
    long size = file_size_of(s->file, path);
    if (size < (long)sizeof(header)) return fail_with(err, errlen, "data shard '%s' is truncated: %ld bytes, less than its header", path, size);
    if (fread(header, sizeof(int), HEADER_INTS, s->file) != HEADER_INTS) return fail_with(err, errlen, "cannot read header of '%s'", path);
    if (header[0] != DATA_MAGIC) return fail_with(err, errlen, "data shard '%s' has magic %d, expected %d (a token shard)", path, header[0], DATA_MAGIC);
    s->version = header[1];
    if (s->version != DATA_VERSION_TOKENS && s->version != DATA_VERSION_MASKED)
        return fail_with(err, errlen, "data shard '%s' has version %d, expected 1 (tokens) or %d (tokens + mask)", path, s->version, DATA_VERSION_MASKED);
    if (header[2] < 0) return fail_with(err, errlen, "data shard '%s' has a negative token count %d", path, header[2]);
    s->num_tokens = (size_t)header[2];
    size_t bytes_per_token = s->version == DATA_VERSION_MASKED ? 3 : 2;
    long expected = (long)sizeof(header) + (long)(s->num_tokens * bytes_per_token);
    if (size != expected) return fail_with(err, errlen, "data shard '%s' is %ld bytes, header implies %ld (truncated or corrupt)", path, size, expected);
    if (shard_validate(s, vocab_size, err, errlen) != 0) return -1;
    fseekCheck(s->file, HEADER_INTS * sizeof(int), SEEK_SET, path);
    if (!padded) {
        s->num_rows = s->num_tokens > 0 ? (s->num_tokens - 1) / (size_t)T : 0;
        return 0;
    }
    // Padded layout: index the examples by their opening end-of-text tokens.
    uint16_t* tokens = (uint16_t*)mallocCheck(s->num_tokens * sizeof(uint16_t));
    if (fread(tokens, sizeof(uint16_t), s->num_tokens, s->file) != s->num_tokens) {
        free(tokens);
        return fail_with(err, errlen, "cannot read tokens of '%s'", path);
    }
    size_t count = 0;
    for (size_t i = 0; i < s->num_tokens; i++) count += tokens[i] == GPT2_EOT;
    s->example_start = (size_t*)mallocCheck(count * sizeof(size_t));
    s->example_len = (size_t*)mallocCheck(count * sizeof(size_t));
    size_t k = 0;
    for (size_t i = 0; i < s->num_tokens; i++) {
        if (tokens[i] != GPT2_EOT) continue;
        size_t end = i + 1;
        while (end < s->num_tokens && tokens[end] != GPT2_EOT) end++;
        // The example is tokens[i .. end]: inputs tokens[i..end-1], targets up to the closing token.
        // Tokens after the last end-of-text belong to no complete example and are not used.
        if (end < s->num_tokens) { s->example_start[k] = i; s->example_len[k] = end - i; k++; }
    }
    free(tokens);
    s->num_rows = k;
    if (k == 0) return fail_with(err, errlen, "data shard '%s' has no examples for -pad 1 (no end-of-text token %d opens one)", path, GPT2_EOT);
    return 0;
}

static int dataloader_open(DataLoader* dl, const char* pattern, int B, int T, int rank, int world, int padded,
                           int vocab_size, char* err, size_t errlen) {
    memset(dl, 0, sizeof(*dl));
    dl->B = B; dl->T = T; dl->rank = rank; dl->world = world; dl->padded = padded; dl->vocab_size = vocab_size;
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc != 0 || g.gl_pathc == 0) {
        snprintf(err, errlen, "no data shard matches '%s'", pattern);
        if (rc == 0) globfree(&g);
        return -1;
    }
    dl->num_shards = (int)g.gl_pathc;  // glob sorts the names
    dl->shards = (Shard*)callocCheck(dl->num_shards, sizeof(Shard));
    for (int i = 0; i < dl->num_shards; i++) {
        if (shard_open(&dl->shards[i], g.gl_pathv[i], T, padded, vocab_size, err, errlen) != 0) { globfree(&g); return -1; }
        dl->shards[i].first_row = dl->total_rows;
        dl->total_rows += dl->shards[i].num_rows;
        if (padded)
            for (size_t k = 0; k < dl->shards[i].num_rows; k++) dl->rows_truncated += dl->shards[i].example_len[k] > (size_t)T;
    }
    globfree(&g);
    if (dl->total_rows == 0) {
        snprintf(err, errlen, "data '%s' holds no row of T+1=%d tokens", pattern, T + 1);
        return -1;
    }
    dl->row_tokens = (uint16_t*)mallocCheck((T + 1) * sizeof(uint16_t));
    dl->row_mask = (uint8_t*)mallocCheck((T + 1) * sizeof(uint8_t));
    dl->inputs = (int*)mallocCheck((size_t)B * T * sizeof(int));
    dl->targets = (int*)mallocCheck((size_t)B * T * sizeof(int));
    return 0;
}

// A loader over rows already in memory (inputs and targets (rows, T)): the tests feed fixed windows.
static void dataloader_open_memory(DataLoader* dl, const int* inputs, const int* targets, size_t rows,
                                   int B, int T, int rank, int world) {
    memset(dl, 0, sizeof(*dl));
    dl->B = B; dl->T = T; dl->rank = rank; dl->world = world;
    dl->memory_inputs = inputs;
    dl->memory_targets = targets;
    dl->total_rows = rows;
    dl->inputs = (int*)mallocCheck((size_t)B * T * sizeof(int));
    dl->targets = (int*)mallocCheck((size_t)B * T * sizeof(int));
}

static void dataloader_free(DataLoader* dl) {
    for (int i = 0; i < dl->num_shards; i++) {
        if (dl->shards[i].file) fclose(dl->shards[i].file);
        free(dl->shards[i].example_start);
        free(dl->shards[i].example_len);
    }
    free(dl->shards);
    free(dl->order);
    free(dl->row_tokens);
    free(dl->row_mask);
    free(dl->inputs);
    free(dl->targets);
    memset(dl, 0, sizeof(*dl));
}

// ----------------------------------------------------------------------------
// Reading rows

// Reads count tokens (and their mask) starting at token offset of a shard into the row scratch.
static void shard_read_span(DataLoader* dl, Shard* s, size_t offset, size_t count) {
    long token_pos = (long)(HEADER_INTS * sizeof(int) + offset * sizeof(uint16_t));
    fseekCheck(s->file, token_pos, SEEK_SET, s->path);
    freadCheck(dl->row_tokens, sizeof(uint16_t), count, s->file, s->path);
    if (s->version == DATA_VERSION_MASKED) {
        long mask_pos = (long)(HEADER_INTS * sizeof(int) + s->num_tokens * sizeof(uint16_t) + offset);
        fseekCheck(s->file, mask_pos, SEEK_SET, s->path);
        freadCheck(dl->row_mask, sizeof(uint8_t), count, s->file, s->path);
    } else {
        memset(dl->row_mask, 1, count);
    }
    // Checked when the shard was opened; this only catches a file changed under a running job.
    for (size_t i = 0; i < count; i++)
        if (dl->row_tokens[i] >= dl->vocab_size)
            die("data shard '%s' has token id %d at position %zu, expected < vocab size %d",
                s->path, dl->row_tokens[i], offset + i, dl->vocab_size);
}

// Fills inputs[0..T) and targets[0..T) with global row `row`.
static void dataloader_read_row(DataLoader* dl, size_t row, int* inputs, int* targets) {
    int T = dl->T;
    if (dl->memory_inputs) {
        memcpy(inputs, dl->memory_inputs + row * T, (size_t)T * sizeof(int));
        memcpy(targets, dl->memory_targets + row * T, (size_t)T * sizeof(int));
        return;
    }
    int s_idx = 0;
    while (s_idx + 1 < dl->num_shards && dl->shards[s_idx + 1].first_row <= row) s_idx++;
    Shard* s = &dl->shards[s_idx];
    size_t j = row - s->first_row;
    size_t start, len;  // len: number of valid input positions (each has a target)
    if (dl->padded) {
        start = s->example_start[j];
        len = s->example_len[j] < (size_t)T ? s->example_len[j] : (size_t)T;
    } else {
        start = j * (size_t)T;
        len = (size_t)T;
    }
    shard_read_span(dl, s, start, len + 1);
    for (int t = 0; t < T; t++) {
        if ((size_t)t < len) {
            inputs[t] = dl->row_tokens[t];
            targets[t] = dl->row_mask[t + 1] ? dl->row_tokens[t + 1] : -1;
        } else {
            inputs[t] = GPT2_EOT;  // padding: any valid token, never a target
            targets[t] = -1;
        }
    }
}

// ----------------------------------------------------------------------------
// Row order: in file order, or shuffled anew each epoch.

// From now on, epoch e visits the rows in an order drawn from (seed, e) alone. Ranks never exchange it:
// they all draw the same one, and a resumed run redraws the epoch it stopped in.
static void dataloader_shuffle(DataLoader* dl, int seed) {
    if (dl->total_rows > UINT32_MAX) die("cannot shuffle %zu rows: at most %u (use larger T or fewer shards)", dl->total_rows, UINT32_MAX);
    dl->shuffle = 1;
    dl->shuffle_seed = seed;
    dl->order = (uint32_t*)mallocCheck(dl->total_rows * sizeof(uint32_t));
    dl->order_epoch = SIZE_MAX;  // none drawn yet
}

// Fisher-Yates with a 64-bit draw per swap: the modulo bias is below n / 2^64, far under any effect.
static void draw_epoch_order(DataLoader* dl, size_t epoch) {
    Rng rng;
    rng_seed(&rng, ((uint64_t)(uint32_t)dl->shuffle_seed << 32) ^ (uint64_t)epoch);
    size_t n = dl->total_rows;
    for (size_t i = 0; i < n; i++) dl->order[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        uint64_t draw = ((uint64_t)rng_u32(&rng) << 32) | rng_u32(&rng);
        size_t j = (size_t)(draw % (i + 1));
        uint32_t tmp = dl->order[i]; dl->order[i] = dl->order[j]; dl->order[j] = tmp;
    }
    dl->order_epoch = epoch;
}

// The global row at stream position pos.
static size_t dataloader_row_at(DataLoader* dl, size_t pos) {
    size_t within = pos % dl->total_rows;
    if (!dl->shuffle) return within;
    size_t epoch = pos / dl->total_rows;
    if (epoch != dl->order_epoch) draw_epoch_order(dl, epoch);
    return dl->order[within];
}

// Loads this rank's B rows of the next micro-step into dl->inputs, dl->targets.
static void dataloader_next_batch(DataLoader* dl) {
    for (int b = 0; b < dl->B; b++) {
        size_t row = dataloader_row_at(dl, dl->next_row + (size_t)dl->rank * dl->B + b);
        dataloader_read_row(dl, row, dl->inputs + (size_t)b * dl->T, dl->targets + (size_t)b * dl->T);
    }
    dl->next_row += (size_t)dl->B * dl->world;
}

static void dataloader_reset(DataLoader* dl) { dl->next_row = 0; }

// Valid targets in this rank's current batch.
static long count_valid_targets(const int* targets, size_t n) {
    long count = 0;
    for (size_t i = 0; i < n; i++) count += targets[i] != -1;
    return count;
}

#endif // LLMC_DATALOADER_H
