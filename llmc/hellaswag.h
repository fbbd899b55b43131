// hellaswag.h: multiple-choice evaluation (HellaSwag) by completion scoring, in llm.c's eval file format.
//
// An example is a context and a few endings, one of them right (the label). Each ending is scored
// by the model's loss over the ending's own tokens only, given the context:
//     row = context ++ ending;  inputs = row[0..n-2], targets = row[1..n-1] with every target that is
//     not an ending token set to -1
// so the loss comes from the same per-token masked cross-entropy as training. With S_k the summed
// loss of ending k and n_k its number of scored tokens:
//     acc      counts argmin_k S_k       == label
//     acc_norm counts argmin_k S_k / n_k == label   (the mean; llm.c's and nanoGPT's "acc_norm")
// A row longer than T+1 tokens keeps its last T+1 tokens (the context is cut from the left).
// Examples are spread over ranks (example e on rank e mod P); the counts are summed at the end.
//
// File (doc/formats.md, written by dev/data/hellaswag.py and by llm.c's): a header of 256 int32
// (magic 20240522, version 1, number of examples, longest example in bytes), then per example a
// stream of uint16: 65535, bytes of the example, its index, label, number of endings, context
// length, the context tokens, then for each ending its length and its tokens.
#ifndef LLMC_HELLASWAG_H
#define LLMC_HELLASWAG_H

#include "utils.h"
#include "format.h"
#include "comm.h"
#include "window.h"

typedef struct {
    int label;
    int num_endings;
    int context_len;
    const uint16_t* context;
    int ending_len[EVAL_MAX_ENDINGS];
    const uint16_t* ending[EVAL_MAX_ENDINGS];
} EvalExample;

typedef struct {
    int num_examples;
    EvalExample* examples;
    uint16_t* stream;        // the file's examples; the EvalExample pointers point into it
} EvalSet;

typedef struct {
    int examples, correct, correct_norm;   // over all ranks
} EvalResult;

// Parses example e at stream[*pos]; returns NULL or what is wrong with it.
static const char* eval_parse_example(EvalExample* ex, const uint16_t* s, size_t n, size_t* pos, int vocab_size) {
    size_t start = *pos, p = start;
    if (p + 6 > n) return "truncated example header";
    if (s[p] != EVAL_EXAMPLE_START) return "does not start with the delimiter 65535";
    size_t declared = s[p + 1] / 2;  // the example's length in bytes -> in uint16
    ex->label = s[p + 3];
    ex->num_endings = s[p + 4];
    ex->context_len = s[p + 5];
    p += 6;
    if (ex->num_endings < 1 || ex->num_endings > EVAL_MAX_ENDINGS) return "number of endings is not in 1..16";
    if (ex->label >= ex->num_endings) return "its label names no ending (no valid ending to score)";
    if (ex->context_len < 1) return "empty context (the first ending token needs one to be predicted from)";
    if (p + (size_t)ex->context_len > n) return "truncated context";
    ex->context = s + p;
    p += ex->context_len;
    for (int k = 0; k < ex->num_endings; k++) {
        if (p >= n) return "truncated ending";
        ex->ending_len[k] = s[p++];
        if (ex->ending_len[k] < 1) return "an ending has no tokens (no valid ending to score)";
        if (p + (size_t)ex->ending_len[k] > n) return "truncated ending";
        ex->ending[k] = s + p;
        p += ex->ending_len[k];
    }
    if (p - start != declared) return "its byte count does not match its contents";
    for (int i = 0; i < ex->context_len; i++) if (ex->context[i] >= vocab_size) return "a context token is >= vocab_size";
    for (int k = 0; k < ex->num_endings; k++)
        for (int i = 0; i < ex->ending_len[k]; i++) if (ex->ending[k][i] >= vocab_size) return "an ending token is >= vocab_size";
    *pos = p;
    return NULL;
}

// Loads and checks the whole file; returns 0, or -1 with one line in err naming the file and the problem.
static int evalset_load(EvalSet* es, const char* path, int vocab_size, char* err, size_t errlen) {
    memset(es, 0, sizeof(*es));
    FILE* f = fopen(path, "rb");
    if (f == NULL) { snprintf(err, errlen, "HellaSwag file '%s': cannot open (%s); make it with dev/data/hellaswag.py", path, strerror(errno)); return -1; }
    int header[HEADER_INTS];
    long size = file_size_of(f, path);
    if (size < (long)sizeof(header) || fread(header, sizeof(int), HEADER_INTS, f) != HEADER_INTS) {
        snprintf(err, errlen, "HellaSwag file '%s': shorter than its 1024-byte header", path);
        fclose(f);
        return -1;
    }
    if (header[0] != EVAL_MAGIC || header[1] != EVAL_VERSION || header[2] <= 0) {
        snprintf(err, errlen, "HellaSwag file '%s': header has magic %d version %d examples %d, expected magic %d version %d and at least one example",
                 path, header[0], header[1], header[2], EVAL_MAGIC, EVAL_VERSION);
        fclose(f);
        return -1;
    }
    size_t n = (size_t)(size - sizeof(header)) / sizeof(uint16_t);
    es->stream = (uint16_t*)mallocCheck(n * sizeof(uint16_t) + 1);
    freadCheck(es->stream, sizeof(uint16_t), n, f, path);
    fclose(f);
    es->num_examples = header[2];
    es->examples = (EvalExample*)callocCheck((size_t)es->num_examples, sizeof(EvalExample));
    size_t pos = 0;
    for (int e = 0; e < es->num_examples; e++) {
        const char* why = eval_parse_example(&es->examples[e], es->stream, n, &pos, vocab_size);
        if (why != NULL) {
            snprintf(err, errlen, "HellaSwag file '%s': example %d: %s", path, e, why);
            return -1;
        }
    }
    if (pos != n) {
        snprintf(err, errlen, "HellaSwag file '%s': %zu bytes after the %d examples its header announces", path, 2 * (n - pos), es->num_examples);
        return -1;
    }
    return 0;
}

static void evalset_free(EvalSet* es) {
    free(es->examples);
    free(es->stream);
    memset(es, 0, sizeof(*es));
}

// Row b of (inputs, targets) for ending k of ex: targets are -1 except at the ending's tokens.
static void eval_fill_row(int* inputs, int* targets, int T, const EvalExample* ex, int k) {
    int n = ex->context_len + ex->ending_len[k];       // tokens in context ++ ending
    int cut = n - 1 > T ? n - 1 - T : 0;               // keep the last T+1 tokens
    for (int t = 0; t < T; t++) { inputs[t] = GPT2_EOT; targets[t] = -1; }
    for (int i = cut; i < n; i++) {
        int tok = i < ex->context_len ? ex->context[i] : ex->ending[k][i - ex->context_len];
        if (i < n - 1) inputs[i - cut] = tok;
        if (i > cut && i >= ex->context_len) targets[i - 1 - cut] = tok;   // an ending token, as a target
    }
}

// Fills an empty row (nothing scored): pads a partly used batch.
static void eval_empty_row(int* inputs, int* targets, int T) {
    for (int t = 0; t < T; t++) { inputs[t] = GPT2_EOT; targets[t] = -1; }
}

// The index of the smallest value; the first one on a tie (as torch.argmin).
static int argmin_double(const double* v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (v[i] < v[best]) best = i;
    return best;
}

// Scores this rank's examples in batches of B rows (one row per ending) and sums the counts over ranks.
static EvalResult evaluate_hellaswag(Trainable* tr, const EvalSet* es, Comm* c) {
    int B = tr->B, T = tr->T;
    int* inputs = (int*)mallocCheck((size_t)B * T * sizeof(int));
    int* targets = (int*)mallocCheck((size_t)B * T * sizeof(int));
    float* losses = (float*)mallocCheck((size_t)B * T * sizeof(float));
    // The (example, ending) pairs of this rank, in order, and each one's summed loss and scored tokens.
    size_t rows = 0;
    for (int e = c->rank; e < es->num_examples; e += c->world) rows += es->examples[e].num_endings;
    int* row_example = (int*)mallocCheck((rows + 1) * sizeof(int));
    int* row_ending = (int*)mallocCheck((rows + 1) * sizeof(int));
    double* row_sum = (double*)mallocCheck((rows + 1) * sizeof(double));
    double* row_count = (double*)mallocCheck((rows + 1) * sizeof(double));
    size_t r = 0;
    for (int e = c->rank; e < es->num_examples; e += c->world)
        for (int k = 0; k < es->examples[e].num_endings; k++) { row_example[r] = e; row_ending[r] = k; r++; }
    for (size_t first = 0; first < rows; first += (size_t)B) {
        for (int b = 0; b < B; b++) {
            size_t i = first + (size_t)b;
            if (i < rows) eval_fill_row(inputs + (size_t)b * T, targets + (size_t)b * T, T, &es->examples[row_example[i]], row_ending[i]);
            else eval_empty_row(inputs + (size_t)b * T, targets + (size_t)b * T, T);
        }
        tr->token_losses(tr, inputs, targets, losses);
        for (int b = 0; b < B && first + (size_t)b < rows; b++) {
            double sum = 0.0, count = 0.0;
            for (int t = 0; t < T; t++)
                if (targets[(size_t)b * T + t] != -1) { sum += losses[(size_t)b * T + t]; count += 1.0; }
            row_sum[first + b] = sum;
            row_count[first + b] = count;
        }
    }
    double counts[3] = { 0.0, 0.0, 0.0 };   // examples, correct (summed loss), correct (mean loss)
    for (size_t i = 0; i < rows; i += (size_t)es->examples[row_example[i]].num_endings) {
        const EvalExample* ex = &es->examples[row_example[i]];
        double mean[EVAL_MAX_ENDINGS];
        for (int k = 0; k < ex->num_endings; k++) mean[k] = row_sum[i + k] / row_count[i + k];
        counts[0] += 1.0;
        counts[1] += argmin_double(row_sum + i, ex->num_endings) == ex->label;
        counts[2] += argmin_double(mean, ex->num_endings) == ex->label;
    }
    comm_scalars(c, counts, 3);
    free(inputs); free(targets); free(losses);
    free(row_example); free(row_ending); free(row_sum); free(row_count);
    EvalResult res = { (int)counts[0], (int)counts[1], (int)counts[2] };
    return res;
}

#endif // LLMC_HELLASWAG_H
