/*
test_gpt2.c: checks train_gpt2.c against the PyTorch oracle, and the window's exactness.

  ./test_gpt2 MODEL.bin DEBUG_STATE.bin     (both written by train_gpt2.py, see doc/formats.md)

Prints one line per check, "PASS name: ..." or "FAIL name: ...", with the worst error and the
tolerance, and exits 1 if any check failed.

Tolerances. Both sides compute in fp32 and differ only in the order of additions. Each float
addition has relative error at most 2^-24 = 6e-8, and the errors of a sum of n terms grow like
sqrt(n) for random rounding; the longest reductions here (LM head over C, wte gradient over B*T,
softmax over V = 50257) give about 6e-8 * sqrt(5e4) = 1.3e-5 in the worst element, much less in a
tensor's norm. So: logits 1e-4 absolute (|logit| < 10), loss 1e-5 relative, and every gradient tensor
||dg||/||g|| <= 1e-4 against PyTorch. Between two runs of this program that differ only in how the
window is split (K micro-steps of B rows vs one of K*B rows), the same reasoning with the window's
extra additions gives ||dg||/||g|| <= 1e-5, the bound the project promises.
*/
#define TESTING
#include "train_gpt2.c"
#include "dev/test/debug_state.h"

// The window's gradient G/N as train_window computes it: K micro-steps of model->B rows from the debug
// state's window, read back from the normalized gradient it dumps (-dump_grads). lr = 0 leaves the
// parameters as they were (AdamW's step is lr times its direction); the optimizer state it moves is
// reset before the trajectory. Returns N.
static double window_gradient(GPT2* model, const DebugState* d, int K, float* out) {
    const char* path = "test_gpt2_window_grads.bin";
    remove(path);   // the dump writes in place, it does not truncate
    Comm comm;
    comm_init_single(&comm);
    Trainable tr = gpt2_trainable(model);
    DataLoader dl;
    dataloader_open_memory(&dl, d->x, d->y, (size_t)K * model->B, model->B, model->T, 0, 1);
    WindowOptions wo = { 1, 0, d->beta1, d->beta2, d->eps, d->weight_decay, d->grad_clip, path };
    WindowResult r = train_window(&tr, &dl, &comm, &wo, K, 0.0f, 0);
    dataloader_free(&dl);
    if (r.skipped || r.nonfinite) die("the debug window gave no gradient (N = %.0f, loss %f)", r.num_valid, r.loss);
    FILE* f = fopenCheck(path, "rb");
    freadCheck(out, sizeof(float), model->num_params, f, path);
    fcloseCheck(f, path);
    remove(path);
    return r.num_valid;
}

// The common biased recipe: each micro-step's mean loss, averaged over the K micro-steps.
static void naive_mean_gradient(GPT2* model, const int* x, const int* y, int K, float* out) {
    Trainable tr = gpt2_trainable(model);
    size_t BT = (size_t)model->B * model->T;
    memset(out, 0, model->num_params * sizeof(float));
    for (int k = 0; k < K; k++) {
        double Nk = (double)count_valid_targets(y + k * BT, BT);
        tr.zero_grads(&tr);
        tr.forward_backward(&tr, x + k * BT, y + k * BT);
        for (size_t i = 0; i < model->num_params; i++) out[i] += (float)(model->grads_memory[i] / Nk / K);
    }
}

// Trains `steps` windows on the debug state's fixed window; returns the losses.
static void train_fixed_window(GPT2* model, const DebugState* d, int steps, float* losses) {
    Comm comm;
    comm_init_single(&comm);
    Trainable tr = gpt2_trainable(model);
    DataLoader dl;
    dataloader_open_memory(&dl, d->x, d->y, (size_t)d->K * d->B, model->B, model->T, 0, 1);
    WindowOptions wo = { 1, 0, d->beta1, d->beta2, d->eps, d->weight_decay, d->grad_clip, NULL };
    int K = d->K * d->B / model->B;
    for (int s = 0; s < steps; s++) losses[s] = (float)train_window(&tr, &dl, &comm, &wo, K, d->lr, s).loss;
    dataloader_free(&dl);
}

int main(int argc, char** argv) {
    if (argc != 3) die("usage: %s MODEL.bin DEBUG_STATE.bin (written by train_gpt2.py --write_checkpoint --write_debug_state)", argv[0]);
    GPT2Config c;
    DebugState d;
    float* init = load_model_and_debug_state(argv[1], argv[2], &c, &d);
    int V = c.vocab_size, Vp = c.padded_vocab_size;
    size_t n = gpt2_num_parameters(&c);
    printf("model L=%d C=%d V=%d; debug window B=%d T=%d K=%d, %d steps\n", c.num_layers, c.channels, V, d.B, d.T, d.K, d.steps);
    size_t BT = (size_t)d.B * d.T;

    // 1. One micro-step: logits, loss and every gradient tensor against PyTorch.
    GPT2 model;
    gpt2_build(&model, &c, init, d.B, d.T, 1, 1, 0);
    Trainable tr = gpt2_trainable(&model);
    tr.zero_grads(&tr);
    double loss_sum = tr.forward_backward(&tr, d.x, d.y);
    double N0 = (double)count_valid_targets(d.y, BT);
    double max_logit_err = 0.0;
    for (size_t i = 0; i < BT; i++)
        for (int v = 0; v < V; v++)
            max_logit_err = fmax(max_logit_err, fabs(model.acts.logits[i * Vp + v] - d.logits[i * V + v]));
    Tally tally = {0, 0};
    check(&tally, max_logit_err <= 1e-4, "logits", "max |dlogit| = %.2e (tolerance 1e-4)", max_logit_err);
    double loss_err = fabs(loss_sum / N0 - d.loss0) / fabs(d.loss0);
    check(&tally, loss_err <= 1e-5, "loss", "%.6f vs PyTorch %.6f, relative error %.2e (tolerance 1e-5), N = %.0f of %zu targets",
          loss_sum / N0, d.loss0, loss_err, N0, BT);
    float* g = (float*)mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) g[i] = (float)(model.grads_memory[i] / N0);
    compare_tensors(&tally, "grad", g, d.grads0, &c, 1e-4);

    // 2. The window: K micro-steps of B rows whose valid counts differ.
    float* g_window = (float*)mallocCheck(n * sizeof(float));
    double N = window_gradient(&model, &d, d.K, g_window);
    printf("     window of K=%d micro-steps, valid targets per micro-step:", d.K);
    for (int k = 0; k < d.K; k++) printf(" %ld", count_valid_targets(d.y + k * BT, BT));
    printf(" (N = %.0f)\n", N);
    compare_tensors(&tally, "window grad vs PyTorch", g_window, d.window_grads, &c, 1e-4);

    // 3. K micro-steps of B rows == one micro-step of K*B rows, both windows through train_window.
    GPT2 big;
    gpt2_build(&big, &c, init, d.K * d.B, d.T, 1, 1, 0);
    float* g_big = (float*)mallocCheck(n * sizeof(float));
    window_gradient(&big, &d, 1, g_big);
    double worst = compare_tensors(&tally, "K x B vs 1 x KB", g_window, g_big, &c, 1e-5);
    // ... while the naive mean of per-micro-step means is biased whenever the counts differ.
    float* g_naive = (float*)mallocCheck(n * sizeof(float));
    naive_mean_gradient(&model, d.x, d.y, d.K, g_naive);
    double naive = relative_error(g_naive, g_big, n);
    check(&tally, naive > 100.0 * fmax(worst, 1e-7), "naive mean-of-means is biased",
          "||g_naive - g||/||g|| = %.2e vs %.2e for the exact window: %.0fx larger", naive, worst, naive / fmax(worst, 1e-12));
    gpt2_free(&big);

    // 4. Training steps on the same window: the losses follow PyTorch's.
    float* losses = (float*)mallocCheck((size_t)d.steps * sizeof(float));
    memcpy(model.params_memory, init, n * sizeof(float));
    memset(model.m_memory, 0, model.opt_count * sizeof(float));
    memset(model.v_memory, 0, model.opt_count * sizeof(float));
    train_fixed_window(&model, &d, d.steps, losses);
    double worst_loss = 0.0;
    for (int s = 0; s < d.steps; s++) {
        printf("     step %d: loss %.6f, PyTorch %.6f\n", s, losses[s], d.losses[s]);
        worst_loss = fmax(worst_loss, fabs(losses[s] - d.losses[s]));
    }
    // AdamW's first steps move each parameter by about lr whatever the gradient's size, so
    // rounding-level gradient differences become lr-level parameter agreement; 1e-4 in the loss.
    check(&tally, worst_loss <= 1e-4, "loss trajectory", "max |dloss| over %d steps = %.2e (tolerance 1e-4), loss %.4f -> %.4f",
          d.steps, worst_loss, losses[0], losses[d.steps - 1]);
    check(&tally, losses[d.steps - 1] < losses[0], "loss falls", "%.4f -> %.4f", losses[0], losses[d.steps - 1]);

    // 5. Determinism: from a saved state, the same steps give the same bits.
    float* params_a = (float*)mallocCheck(n * sizeof(float));
    float* params_b = (float*)mallocCheck(n * sizeof(float));
    float* losses_b = (float*)mallocCheck((size_t)d.steps * sizeof(float));
    size_t opt_bytes = tr.opt_state_bytes(&tr);
    void* opt_saved = mallocCheck(opt_bytes);
    const char* tmp_path = "test_gpt2_determinism.bin";
    gpt2_save_checkpoint(tmp_path, &c, model.params_memory);
    tr.opt_state_to_host(&tr, opt_saved);
    train_fixed_window(&model, &d, 2, losses);
    memcpy(params_a, model.params_memory, n * sizeof(float));
    GPT2Config c2;
    float* reloaded = gpt2_load_checkpoint(tmp_path, &c2);
    remove(tmp_path);
    tr.params_from_host(&tr, reloaded);
    tr.opt_state_from_host(&tr, opt_saved);
    train_fixed_window(&model, &d, 2, losses_b);
    memcpy(params_b, model.params_memory, n * sizeof(float));
    int same = memcmp(params_a, params_b, n * sizeof(float)) == 0 && memcmp(losses, losses_b, 2 * sizeof(float)) == 0;
    check(&tally, same, "determinism", "save, 2 steps, reload, 2 steps: parameters and losses %s",
          same ? "bit-identical" : "DIFFER");

    gpt2_free(&model);
    printf("test_gpt2 total: %d checks passed, %d failed\n", tally.passed, tally.failed);
    return tally.failed == 0 ? 0 : 1;
}
