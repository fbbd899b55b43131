// sample.h: the samples a run prints every -s steps (rank 0): GPT-2 decoding from the end-of-text
// token, one token at a time, through the Trainable's next_token_logits.
#ifndef LLMC_SAMPLE_H
#define LLMC_SAMPLE_H

#include <math.h>
#include "utils.h"
#include "format.h"
#include "gpt2.h"
#include "args.h"
#include "comm.h"
#include "rand.h"
#include "tokenizer.h"
#include "window.h"

// The token samples start from: the tokenizer's end-of-text, or GPT-2's without a tokenizer.
// -1 when the model's vocabulary has no such token (a model with its own smaller vocabulary).
static int sample_start_token(const Tokenizer* tk, int vocab_size) {
    int eot = tk->tokens ? tk->eot_token : GPT2_EOT;
    return eot >= 0 && eot < vocab_size ? eot : -1;
}

static void sample_and_print(Trainable* tr, const Tokenizer* tk, Rng* rng, int gen_T, int start_token, int step) {
    int T = tr->T < gen_T ? tr->T : gen_T;
    int V = tr->config.vocab_size;
    int* tokens = (int*)mallocCheck((size_t)tr->B * tr->T * sizeof(int));
    float* logits = (float*)mallocCheck((size_t)V * sizeof(float));
    for (size_t i = 0; i < (size_t)tr->B * tr->T; i++) tokens[i] = start_token;
    printf("sample: ");
    for (int t = 1; t < T; t++) {
        tr->next_token_logits(tr, tokens, t, logits);
        long bad = first_nonfinite(logits, (size_t)V);
        if (bad >= 0) die("step %d: sampling: logit %ld is %g (the parameters hold NaN or Inf)", step, bad, logits[bad]);
        float maxv = logits[0], sum = 0.0f;
        for (int v = 1; v < V; v++) maxv = fmaxf(maxv, logits[v]);
        for (int v = 0; v < V; v++) { logits[v] = expf(logits[v] - maxv); sum += logits[v]; }
        for (int v = 0; v < V; v++) logits[v] /= sum;
        tokens[t] = sample_from_probs(logits, V, rng_uniform(rng));
        tokenizer_print(tk, tokens[t]);
    }
    printf("\n---\n");
    fflush(stdout);
    free(tokens);
    free(logits);
}

// Rank 0 loads the tokenizer the samples are printed with; every rank agrees that they can start.
// Returns the token the samples start from.
static int prepare_samples(Tokenizer* tk, const TrainOptions* o, int vocab_size, Comm* c) {
    int start_token = GPT2_EOT;
    if (o->sample_every <= 0) return start_token;
    char reason[300] = "";
    if (c->rank == 0) {
        tokenizer_init(tk, o->tokenizer);
        start_token = sample_start_token(tk, vocab_size);
        if (start_token < 0)
            snprintf(reason, sizeof(reason), "flag -s %d: samples start from the end-of-text token %d, beyond this model's "
                     "vocab_size %d (give -s 0, or a tokenizer -tk whose end-of-text token is in the vocabulary)",
                     o->sample_every, tk->tokens ? tk->eot_token : GPT2_EOT, vocab_size);
    }
    comm_agree_or_die(c, "preparing samples", reason[0] ? reason : NULL);
    return start_token;
}

#endif // LLMC_SAMPLE_H
