/*
profile_cpu.c: where a training step of train_gpt2.c spends its time, op by op, and a check that
every fast layer function equals its *_reference version.

  gcc -O3 -march=native -fopenmp -DOMP -I. -o profile_cpu dev/bench/profile_cpu.c -lm
  OMP_NUM_THREADS=2 ./profile_cpu -e d12 -b 4 -t 64 -n 3

Flags: -e preset (tiny small d12 ...), -b B, -t T, -n timed iterations (after one warm-up),
-c 0 skips the checks, -p 0 skips the profile. Prints "PASS name: ..." / "FAIL name: ..." lines for
the checks (exit code 1 if any failed), then a table of milliseconds per op (forward, backward, and
% of the forward+backward step), with the matmuls split by call site. The profile replays the calls
of gpt2_forward and gpt2_backward one by one with a clock around each; its last line compares the
sum with gpt2_forward + gpt2_backward timed as they are, so a drift between the two shows.
*/
#define TESTING
#include "../../train_gpt2.c"
#include "llmc/rand.h"

// ----------------------------------------------------------------------------
// Checks: fast op == reference op within fp32 tolerance

static int failures = 0;

static float* random_floats(Rng* r, size_t n, float scale) {
    float* p = (float*)mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = scale * (2.0f * rng_uniform(r) - 1.0f);
    return p;
}

static float* copy_floats(const float* a, size_t n) {
    float* p = (float*)mallocCheck(n * sizeof(float));
    memcpy(p, a, n * sizeof(float));
    return p;
}

// ||a - b|| / ||b||, in double
static double rel_err(const float* a, const float* b, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) { double e = (double)a[i] - b[i]; d += e * e; r += (double)b[i] * b[i]; }
    return r > 0.0 ? sqrt(d / r) : sqrt(d);
}

static void check(const char* name, double err, double tol) {
    int ok = err <= tol;
    printf("%s %s: rel err %.2e (tolerance %.0e)\n", ok ? "PASS" : "FAIL", name, err, tol);
    if (!ok) failures++;
}

#define TOL 1e-5  // fp32 sums in a different order: a few 1e-7 for these sizes

static void check_matmul(Rng* rng, int N, int C, int OC, int with_bias) {
    char name[128];
    float* inp = random_floats(rng, (size_t)N * C, 1.0f);
    float* w = random_floats(rng, (size_t)OC * C, 0.1f);
    float* bias = with_bias ? random_floats(rng, OC, 0.1f) : NULL;
    float* out = random_floats(rng, (size_t)N * OC, 1.0f);  // garbage: forward must overwrite it
    float* out_ref = (float*)mallocCheck((size_t)N * OC * sizeof(float));
    matmul_forward(out, inp, w, bias, N, C, OC);
    matmul_forward_reference(out_ref, inp, w, bias, N, C, OC);
    snprintf(name, sizeof(name), "matmul_forward N=%d C=%d OC=%d%s", N, C, OC, with_bias ? "" : " no bias");
    check(name, rel_err(out, out_ref, (size_t)N * OC), TOL);
    // backward accumulates: start from nonzero gradients
    float* dout = random_floats(rng, (size_t)N * OC, 1.0f);
    float* dinp = random_floats(rng, (size_t)N * C, 1.0f);
    float* dw = random_floats(rng, (size_t)OC * C, 1.0f);
    float* db = random_floats(rng, OC, 1.0f);
    float* dinp_ref = copy_floats(dinp, (size_t)N * C);
    float* dw_ref = copy_floats(dw, (size_t)OC * C);
    float* db_ref = copy_floats(db, OC);
    matmul_backward(dinp, dw, with_bias ? db : NULL, dout, inp, w, N, C, OC);
    matmul_backward_reference(dinp_ref, dw_ref, with_bias ? db_ref : NULL, dout, inp, w, N, C, OC);
    snprintf(name, sizeof(name), "matmul_backward dinp N=%d C=%d OC=%d", N, C, OC);
    check(name, rel_err(dinp, dinp_ref, (size_t)N * C), TOL);
    snprintf(name, sizeof(name), "matmul_backward dweight N=%d C=%d OC=%d", N, C, OC);
    check(name, rel_err(dw, dw_ref, (size_t)OC * C), TOL);
    if (with_bias) {
        snprintf(name, sizeof(name), "matmul_backward dbias N=%d C=%d OC=%d", N, C, OC);
        check(name, rel_err(db, db_ref, OC), TOL);
    }
    // the same call twice gives the same bits
    float* out2 = (float*)mallocCheck((size_t)N * OC * sizeof(float));
    matmul_forward(out2, inp, w, bias, N, C, OC);
    snprintf(name, sizeof(name), "matmul_forward deterministic N=%d C=%d OC=%d", N, C, OC);
    int same = memcmp(out, out2, (size_t)N * OC * sizeof(float)) == 0;
    printf("%s %s: %s\n", same ? "PASS" : "FAIL", name, same ? "bitwise equal" : "differs");
    if (!same) failures++;
    free(inp); free(w); free(bias); free(out); free(out_ref); free(dout); free(dinp); free(dw); free(db);
    free(dinp_ref); free(dw_ref); free(db_ref); free(out2);
}

static void check_layernorm(Rng* rng, int N, int C) {
    float* x = random_floats(rng, (size_t)N * C, 2.0f);
    float* w = random_floats(rng, C, 1.0f);
    float* b = random_floats(rng, C, 1.0f);
    float* y = (float*)mallocCheck((size_t)N * C * sizeof(float));
    float* mean = (float*)mallocCheck(N * sizeof(float));
    float* rstd = (float*)mallocCheck(N * sizeof(float));
    layernorm_forward(y, mean, rstd, x, w, b, N, C);
    float* dout = random_floats(rng, (size_t)N * C, 1.0f);
    float* dx = random_floats(rng, (size_t)N * C, 1.0f);
    float* dw = random_floats(rng, C, 1.0f);
    float* db = random_floats(rng, C, 1.0f);
    float* dx_ref = copy_floats(dx, (size_t)N * C);
    float* dw_ref = copy_floats(dw, C);
    float* db_ref = copy_floats(db, C);
    layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C);
    layernorm_backward_reference(dx_ref, dw_ref, db_ref, dout, x, w, mean, rstd, N, C);
    char name[128];
    snprintf(name, sizeof(name), "layernorm_backward N=%d C=%d", N, C);
    double e = rel_err(dx, dx_ref, (size_t)N * C);
    double e2 = rel_err(dw, dw_ref, C), e3 = rel_err(db, db_ref, C);
    check(name, e > e2 ? (e > e3 ? e : e3) : (e2 > e3 ? e2 : e3), TOL);
    free(x); free(w); free(b); free(y); free(mean); free(rstd); free(dout); free(dx); free(dw); free(db);
    free(dx_ref); free(dw_ref); free(db_ref);
}

static void check_attention(Rng* rng, int B, int T, int C, int NH) {
    size_t btc = (size_t)B * T * C, att_n = (size_t)B * NH * T * T;
    float* qkv = random_floats(rng, 3 * btc, 1.0f);
    float* out = (float*)mallocCheck(btc * sizeof(float));
    float* out_ref = (float*)mallocCheck(btc * sizeof(float));
    float* pre = (float*)mallocCheck(att_n * sizeof(float));
    float* pre_ref = (float*)mallocCheck(att_n * sizeof(float));
    float* att = (float*)mallocCheck(att_n * sizeof(float));
    float* att_ref = (float*)mallocCheck(att_n * sizeof(float));
    attention_forward(out, pre, att, qkv, B, T, C, NH);
    attention_forward_reference(out_ref, pre_ref, att_ref, qkv, B, T, C, NH);
    char name[128];
    snprintf(name, sizeof(name), "attention_forward B=%d T=%d C=%d NH=%d", B, T, C, NH);
    double e = rel_err(out, out_ref, btc), e2 = rel_err(att, att_ref, att_n);
    check(name, e > e2 ? e : e2, TOL);
    float* dout = random_floats(rng, btc, 1.0f);
    float* dqkv = random_floats(rng, 3 * btc, 1.0f);
    float* dqkv_ref = copy_floats(dqkv, 3 * btc);
    float* dpre = (float*)callocCheck(att_n, sizeof(float));
    float* datt = (float*)callocCheck(att_n, sizeof(float));
    attention_backward(dqkv, dpre, datt, dout, qkv, att_ref, B, T, C, NH);
    attention_backward_reference(dqkv_ref, dpre, datt, dout, qkv, att_ref, B, T, C, NH);
    snprintf(name, sizeof(name), "attention_backward B=%d T=%d C=%d NH=%d", B, T, C, NH);
    check(name, rel_err(dqkv, dqkv_ref, 3 * btc), TOL);
    free(qkv); free(out); free(out_ref); free(pre); free(pre_ref); free(att); free(att_ref);
    free(dout); free(dqkv); free(dqkv_ref); free(dpre); free(datt);
}

static void check_gelu(Rng* rng, size_t n) {
    float* x = random_floats(rng, n, 8.0f);  // covers both saturated tails
    float* y = (float*)mallocCheck(n * sizeof(float));
    float* y_ref = (float*)mallocCheck(n * sizeof(float));
    gelu_forward(y, x, n);
    gelu_forward_reference(y_ref, x, n);
    check("gelu_forward", rel_err(y, y_ref, n), TOL);
    float* dout = random_floats(rng, n, 1.0f);
    float* dx = random_floats(rng, n, 1.0f);
    float* dx_ref = copy_floats(dx, n);
    gelu_backward(dx, x, dout, n);
    gelu_backward_reference(dx_ref, x, dout, n);
    check("gelu_backward", rel_err(dx, dx_ref, n), TOL);
    free(x); free(y); free(y_ref); free(dout); free(dx); free(dx_ref);
}

static void check_classifier(Rng* rng, int N, int V, int Vp) {
    float* logits = random_floats(rng, (size_t)N * Vp, 10.0f);
    int* targets = (int*)mallocCheck(N * sizeof(int));
    for (int n = 0; n < N; n++) targets[n] = n % 3 == 2 ? -1 : (int)(rng_u32(rng) % V);
    float* probs = (float*)mallocCheck((size_t)N * Vp * sizeof(float));
    float* probs_ref = (float*)mallocCheck((size_t)N * Vp * sizeof(float));
    float* losses = (float*)mallocCheck(N * sizeof(float));
    float* losses_ref = (float*)mallocCheck(N * sizeof(float));
    double total = classifier_forward(probs, losses, logits, targets, N, V, Vp);
    double total_ref = classifier_forward_reference(probs_ref, losses_ref, logits, targets, N, V, Vp);
    check("classifier_forward probs", rel_err(probs, probs_ref, (size_t)N * Vp), TOL);
    check("classifier_forward losses", rel_err(losses, losses_ref, N), TOL);
    check("classifier_forward total", fabs(total - total_ref) / fabs(total_ref), TOL);
    free(logits); free(targets); free(probs); free(probs_ref); free(losses); free(losses_ref);
}

static void run_checks(void) {
    Rng rng;
    rng_seed(&rng, 42);
    check_matmul(&rng, 37, 67, 131, 1);   // ragged everywhere: edge tiles in rows and columns
    check_matmul(&rng, 128, 64, 600, 1);  // K = OC > MM_KC in the dinp product
    check_matmul(&rng, 300, 520, 96, 0);  // K = C > MM_KC in the forward, K = N > MM_KC in dweight
    check_matmul(&rng, 64, 48, 1000, 0);  // the LM head's shape in small: few columns for dinp, dweight
    check_layernorm(&rng, 37, 100);
    check_layernorm(&rng, 64, 768);
    check_attention(&rng, 2, 13, 48, 4);
    check_attention(&rng, 2, 64, 128, 2);
    check_gelu(&rng, 100003);
    check_classifier(&rng, 9, 1000, 1024);
}

// ----------------------------------------------------------------------------
// Profile: gpt2_forward and gpt2_backward, call by call

enum { ENCODER, LAYERNORM, MM_QKV, ATTENTION, MM_ATTPROJ, RESIDUAL, MM_FC, GELU, MM_FCPROJ, MM_LMHEAD,
       CLASSIFIER, ZERO_GRAD_ACTS, NUM_OPS };
static const char* OP_NAMES[NUM_OPS] = { "encoder", "layernorm", "matmul qkv", "attention", "matmul attproj",
    "residual", "matmul fc", "gelu", "matmul fcproj", "matmul lm head", "classifier", "zero grad acts" };
static double fwd_s[NUM_OPS], bwd_s[NUM_OPS];
static double op_t0;
static void tic(void) { op_t0 = wall_seconds(); }
static void toc(double* acc, int op) { acc[op] += wall_seconds() - op_t0; }

// gpt2_forward, with a clock around each call
static void forward_timed(GPT2* model, const int* inputs, const int* targets) {
    const GPT2Config* c = &model->config;
    int B = model->B, T = model->T, C = c->channels, NH = c->num_heads, V = c->vocab_size, Vp = c->padded_vocab_size;
    int BT = B * T;
    ParameterTensors* p = &model->params;
    ActivationTensors* a = &model->acts;
    model->inputs = inputs;
    model->targets = targets;
    tic(); encoder_forward(a->encoded, inputs, p->wte, p->wpe, B, T, C); toc(fwd_s, ENCODER);
    float* residual = a->encoded;
    for (int l = 0; l < c->num_layers; l++) {
        size_t btc = (size_t)BT * C, att_n = (size_t)B * NH * T * T;
        float* ln1 = a->ln1 + l * btc;
        float* qkv = a->qkv + l * 3 * btc;
        float* atty = a->atty + l * btc;
        float* attproj = a->attproj + l * btc;
        float* residual2 = a->residual2 + l * btc;
        float* ln2 = a->ln2 + l * btc;
        float* fch = a->fch + l * 4 * btc;
        float* fch_gelu = a->fch_gelu + l * 4 * btc;
        float* fcproj = a->fcproj + l * btc;
        float* residual3 = a->residual3 + l * btc;
        tic(); layernorm_forward(ln1, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, residual, p->ln1w + l * C, p->ln1b + l * C, BT, C); toc(fwd_s, LAYERNORM);
        tic(); matmul_forward(qkv, ln1, p->qkvw + (size_t)l * 3 * C * C, p->qkvb + l * 3 * C, BT, C, 3 * C); toc(fwd_s, MM_QKV);
        tic(); attention_forward(atty, a->preatt + l * att_n, a->att + l * att_n, qkv, B, T, C, NH); toc(fwd_s, ATTENTION);
        tic(); matmul_forward(attproj, atty, p->attprojw + (size_t)l * C * C, p->attprojb + l * C, BT, C, C); toc(fwd_s, MM_ATTPROJ);
        tic(); residual_forward(residual2, residual, attproj, btc); toc(fwd_s, RESIDUAL);
        tic(); layernorm_forward(ln2, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, residual2, p->ln2w + l * C, p->ln2b + l * C, BT, C); toc(fwd_s, LAYERNORM);
        tic(); matmul_forward(fch, ln2, p->fcw + (size_t)l * 4 * C * C, p->fcb + l * 4 * C, BT, C, 4 * C); toc(fwd_s, MM_FC);
        tic(); gelu_forward(fch_gelu, fch, 4 * btc); toc(fwd_s, GELU);
        tic(); matmul_forward(fcproj, fch_gelu, p->fcprojw + (size_t)l * 4 * C * C, p->fcprojb + l * C, BT, 4 * C, C); toc(fwd_s, MM_FCPROJ);
        tic(); residual_forward(residual3, residual2, fcproj, btc); toc(fwd_s, RESIDUAL);
        residual = residual3;
    }
    tic(); layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, residual, p->lnfw, p->lnfb, BT, C); toc(fwd_s, LAYERNORM);
    tic(); matmul_forward(a->logits, a->lnf, p->wte, NULL, BT, C, Vp); toc(fwd_s, MM_LMHEAD);
    tic(); classifier_forward(a->probs, a->losses, a->logits, targets, BT, V, Vp); toc(fwd_s, CLASSIFIER);
}

// gpt2_backward, with a clock around each call
static void backward_timed(GPT2* model) {
    const GPT2Config* c = &model->config;
    int B = model->B, T = model->T, C = c->channels, NH = c->num_heads, V = c->vocab_size, Vp = c->padded_vocab_size;
    int BT = B * T, L = c->num_layers;
    ParameterTensors* p = &model->params;
    ParameterTensors* g = &model->grads;
    ActivationTensors* a = &model->acts;
    ActivationTensors* d = &model->grad_acts;
    tic();
    memset(model->grad_acts_memory, 0, point_activations(d, NULL, c, B, T) * sizeof(float));
    point_activations(d, model->grad_acts_memory, c, B, T);
    toc(bwd_s, ZERO_GRAD_ACTS);
    tic(); classifier_backward(d->logits, a->probs, model->targets, BT, V, Vp); toc(bwd_s, CLASSIFIER);
    tic(); matmul_backward(d->lnf, g->wte, NULL, d->logits, a->lnf, p->wte, BT, C, Vp); toc(bwd_s, MM_LMHEAD);
    float* residual = L > 0 ? a->residual3 + (size_t)(L - 1) * BT * C : a->encoded;
    float* dresidual = L > 0 ? d->residual3 + (size_t)(L - 1) * BT * C : d->encoded;
    tic(); layernorm_backward(dresidual, g->lnfw, g->lnfb, d->lnf, residual, p->lnfw, a->lnf_mean, a->lnf_rstd, BT, C); toc(bwd_s, LAYERNORM);
    for (int l = L - 1; l >= 0; l--) {
        size_t btc = (size_t)BT * C, att_n = (size_t)B * NH * T * T;
        float* residual_in = l == 0 ? a->encoded : a->residual3 + (l - 1) * btc;
        float* dresidual_in = l == 0 ? d->encoded : d->residual3 + (l - 1) * btc;
        float* dresidual3 = d->residual3 + l * btc;
        float* dresidual2 = d->residual2 + l * btc;
        tic(); residual_backward(dresidual2, d->fcproj + l * btc, dresidual3, btc); toc(bwd_s, RESIDUAL);
        tic(); matmul_backward(d->fch_gelu + l * 4 * btc, g->fcprojw + (size_t)l * 4 * C * C, g->fcprojb + l * C,
                               d->fcproj + l * btc, a->fch_gelu + l * 4 * btc, p->fcprojw + (size_t)l * 4 * C * C, BT, 4 * C, C); toc(bwd_s, MM_FCPROJ);
        tic(); gelu_backward(d->fch + l * 4 * btc, a->fch + l * 4 * btc, d->fch_gelu + l * 4 * btc, 4 * btc); toc(bwd_s, GELU);
        tic(); matmul_backward(d->ln2 + l * btc, g->fcw + (size_t)l * 4 * C * C, g->fcb + l * 4 * C,
                               d->fch + l * 4 * btc, a->ln2 + l * btc, p->fcw + (size_t)l * 4 * C * C, BT, C, 4 * C); toc(bwd_s, MM_FC);
        tic(); layernorm_backward(dresidual2, g->ln2w + l * C, g->ln2b + l * C, d->ln2 + l * btc, a->residual2 + l * btc,
                                  p->ln2w + l * C, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, BT, C); toc(bwd_s, LAYERNORM);
        tic(); residual_backward(dresidual_in, d->attproj + l * btc, dresidual2, btc); toc(bwd_s, RESIDUAL);
        tic(); matmul_backward(d->atty + l * btc, g->attprojw + (size_t)l * C * C, g->attprojb + l * C,
                               d->attproj + l * btc, a->atty + l * btc, p->attprojw + (size_t)l * C * C, BT, C, C); toc(bwd_s, MM_ATTPROJ);
        tic(); attention_backward(d->qkv + l * 3 * btc, d->preatt + l * att_n, d->att + l * att_n, d->atty + l * btc,
                                  a->qkv + l * 3 * btc, a->att + l * att_n, B, T, C, NH); toc(bwd_s, ATTENTION);
        tic(); matmul_backward(d->ln1 + l * btc, g->qkvw + (size_t)l * 3 * C * C, g->qkvb + l * 3 * C,
                               d->qkv + l * 3 * btc, a->ln1 + l * btc, p->qkvw + (size_t)l * 3 * C * C, BT, C, 3 * C); toc(bwd_s, MM_QKV);
        tic(); layernorm_backward(dresidual_in, g->ln1w + l * C, g->ln1b + l * C, d->ln1 + l * btc, residual_in,
                                  p->ln1w + l * C, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, BT, C); toc(bwd_s, LAYERNORM);
    }
    tic(); encoder_backward(g->wte, g->wpe, d->encoded, model->inputs, B, T, C); toc(bwd_s, ENCODER);
}

static void run_profile(const char* preset, int B, int T, int iters) {
    GPT2Config config;
    if (!gpt2_config_from_name(preset, &config)) die("profile_cpu: unknown preset '%s'", preset);
    if (T > config.max_seq_len) die("profile_cpu: T=%d > max_seq_len %d", T, config.max_seq_len);
    size_t num_params = gpt2_num_parameters(&config);
    float* init = (float*)mallocCheck(num_params * sizeof(float));
    gpt2_init_random(&config, init, 1337);
    GPT2 model;
    gpt2_build(&model, &config, init, B, T, 1, 0, 0);
    free(init);
    int* tokens = (int*)mallocCheck((size_t)B * T * 2 * sizeof(int));
    Rng rng;
    rng_seed(&rng, 7);
    for (int i = 0; i < B * T * 2; i++) tokens[i] = (int)(rng_u32(&rng) % config.vocab_size);
    const int* inputs = tokens;
    const int* targets = tokens + B * T;
    int threads = 1;
#ifdef OMP
    threads = omp_get_max_threads();
#endif
    printf("\nprofile: %s (L=%d C=%d NH=%d Vp=%d, %.1fM parameters), B=%d T=%d, %d thread(s), %d iteration(s) after 1 warm-up\n",
           preset, config.num_layers, config.channels, config.num_heads, config.padded_vocab_size, num_params / 1e6,
           B, T, threads, iters);
    gpt2_forward(&model, inputs, targets);  // warm-up: pages in every buffer
    gpt2_backward(&model);
    double whole = 0.0;
    for (int it = 0; it < iters; it++) {
        forward_timed(&model, inputs, targets);
        backward_timed(&model);
        double t0 = wall_seconds();
        gpt2_forward(&model, inputs, targets);
        gpt2_backward(&model);
        whole += wall_seconds() - t0;
    }
    double total = 0.0;
    for (int i = 0; i < NUM_OPS; i++) total += fwd_s[i] + bwd_s[i];
    // matmul FLOPs per call site (forward 2*N*C*OC, backward twice that), for GFLOP/s
    double N = (double)B * T, C = config.channels, L = config.num_layers, Vp = config.padded_vocab_size;
    double mm_flops[NUM_OPS] = {0};
    mm_flops[MM_QKV] = 2 * N * C * 3 * C * L;
    mm_flops[MM_ATTPROJ] = 2 * N * C * C * L;
    mm_flops[MM_FC] = 2 * N * C * 4 * C * L;
    mm_flops[MM_FCPROJ] = 2 * N * 4 * C * C * L;
    mm_flops[MM_LMHEAD] = 2 * N * C * Vp;
    printf("%-16s %10s %10s %10s %7s %10s %10s\n", "op", "fwd ms", "bwd ms", "total ms", "%", "fwd GF/s", "bwd GF/s");
    for (int i = 0; i < NUM_OPS; i++) {
        double f = fwd_s[i] / iters * 1e3, b = bwd_s[i] / iters * 1e3;
        printf("%-16s %10.2f %10.2f %10.2f %6.1f%%", OP_NAMES[i], f, b, f + b, 100.0 * (fwd_s[i] + bwd_s[i]) / total);
        if (mm_flops[i] > 0) printf(" %10.1f %10.1f", mm_flops[i] / (f * 1e6), 2 * mm_flops[i] / (b * 1e6));
        printf("\n");
    }
    double mm = 0.0;
    for (int i = MM_QKV; i <= MM_LMHEAD; i++)
        if (mm_flops[i] > 0) mm += fwd_s[i] + bwd_s[i];
    printf("%-16s %10s %10s %10.2f %6.1f%%  (all matmuls)\n", "matmul total", "", "", mm / iters * 1e3, 100.0 * mm / total);
    printf("%-16s %10s %10s %10.2f %6.1f%%\n", "sum of ops", "", "", total / iters * 1e3, 100.0);
    printf("gpt2_forward + gpt2_backward as called by the trainer: %.2f ms (%.0f tokens/s without the optimizer)\n",
           whole / iters * 1e3, N * iters / whole);
    gpt2_free(&model);
    free(tokens);
}

int main(int argc, char** argv) {
    const char* preset = "d12";
    int B = 4, T = 64, iters = 3, do_checks = 1, do_profile = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-e") == 0) preset = argv[i + 1];
        else if (strcmp(argv[i], "-b") == 0) B = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-t") == 0) T = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-n") == 0) iters = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-c") == 0) do_checks = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-p") == 0) do_profile = atoi(argv[i + 1]);
        else die("usage: %s [-e preset] [-b B] [-t T] [-n iterations] [-c 0|1 checks] [-p 0|1 profile]", argv[0]);
    }
    if (iters < 1) iters = 1;
    if (do_checks) run_checks();
    if (do_profile) run_profile(preset, B, T, iters);
    if (do_checks) printf("checks: %s\n", failures ? "FAIL" : "all PASS");
    return failures ? 1 : 0;
}
