// tokenizer.h: decoding GPT-2 token ids to bytes, from llm.c's tokenizer file
// (written by dev/data/tinyshakespeare.py or train_gpt2.py from the GPT-2 BPE tables).
// Only decoding is needed here: training data arrives already tokenized.
#ifndef LLMC_TOKENIZER_H
#define LLMC_TOKENIZER_H

#include <ctype.h>
#include "utils.h"
#include "format.h"

typedef struct {
    int vocab_size;
    int eot_token;
    char** tokens;   // tokens[id]: NUL-terminated bytes of the token
} Tokenizer;

// Returns 1 on success; 0 (with a warning) if the file is missing, so training can go on without samples.
static int tokenizer_init(Tokenizer* tk, const char* path) {
    memset(tk, 0, sizeof(*tk));
    FILE* f = fopen(path, "rb");
    if (f == NULL) {
        warn("tokenizer file '%s' not found: samples will print token ids (dev/data/tinyshakespeare.py writes it)", path);
        return 0;
    }
    int header[HEADER_INTS];
    freadCheck(header, sizeof(int), HEADER_INTS, f, path);
    if (header[0] != TOKENIZER_MAGIC) die("tokenizer '%s' has magic %d, expected %d", path, header[0], TOKENIZER_MAGIC);
    if (header[1] != TOKENIZER_VERSION) die("tokenizer '%s' has version %d, expected %d", path, header[1], TOKENIZER_VERSION);
    if (header[2] <= 0 || header[3] < 0 || header[3] >= header[2])
        die("tokenizer '%s' has vocab_size %d and end-of-text token %d, expected 0 <= eot < vocab_size", path, header[2], header[3]);
    tk->vocab_size = header[2];
    tk->eot_token = header[3];
    tk->tokens = (char**)mallocCheck((size_t)tk->vocab_size * sizeof(char*));
    for (int i = 0; i < tk->vocab_size; i++) {
        unsigned char len;
        freadCheck(&len, 1, 1, f, path);
        if (len == 0) die("tokenizer '%s': token %d has length 0", path, i);
        tk->tokens[i] = (char*)mallocCheck(len + 1);
        freadCheck(tk->tokens[i], 1, len, f, path);
        tk->tokens[i][len] = '\0';
    }
    fcloseCheck(f, path);
    return 1;
}

static void tokenizer_free(Tokenizer* tk) {
    for (int i = 0; i < tk->vocab_size; i++) free(tk->tokens[i]);
    free(tk->tokens);
    memset(tk, 0, sizeof(*tk));
}

// Prints a token's bytes, skipping lone control bytes that would garble a terminal.
static void tokenizer_print(const Tokenizer* tk, int id) {
    if (tk->tokens == NULL || id < 0 || id >= tk->vocab_size) { printf("<%d>", id); return; }
    const char* s = tk->tokens[id];
    if (s[0] != '\0' && s[1] == '\0' && !(isprint((unsigned char)s[0]) || isspace((unsigned char)s[0]))) return;
    printf("%s", s);
}

#endif // LLMC_TOKENIZER_H
