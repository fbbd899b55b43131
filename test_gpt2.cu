/*
test_gpt2.cu: checks train_gpt2.cu against the PyTorch oracle (as test_gpt2.c does for train_gpt2.c),
that it is deterministic, and that the NCCL back end at world size 1 changes nothing.

  ./test_gpt2cu MODEL.bin DEBUG_STATE.bin [auto|flash|ref]
      (both files written by train_gpt2.py, see doc/formats.md; the third argument picks the attention
      as train_gpt2cu's -attn does, default auto)

Prints one line per check, "PASS name: ..." or "FAIL name: ...", with the error and the tolerance, and
exits 1 if any check failed. Without a CUDA device it prints one line "SKIP test_gpt2cu: no CUDA
device (...)" and exits 0.

Checks:
  1. one micro-step: logits, loss and every gradient tensor against PyTorch (fp32);
  2. the window of K micro-steps with different valid counts: every gradient tensor against PyTorch;
  3. K micro-steps of B rows against one of K*B rows, in this program; the naive mean of per-micro-step
     means is far off;
  4. the loss trajectory of a few AdamW steps on the same window against PyTorch's;
  5. determinism: save, 2 steps, reload (in run_training's resume order), 2 steps: identical bits;
  6. the window through the NCCL back end (world size 1) and through the plain "single-gpu" back end:
     identical gradient, parameters, optimizer state and losses (also with -z 0), and the same
     gradient with -sync_each_microstep 1;
  7. the window with the bf16 gradient buffer (-grad_bf16 1): every gradient tensor against PyTorch.

Tolerances. The oracle computes in fp32; this program stores parameters and activations in bf16
(8 significant bits: one rounding has relative error at most u = 2^-8 = 3.9e-3, about 2^-8/sqrt(3) =
2.3e-3 RMS for values spread over a binade) and sums in fp32. Errors are compared as norms, ||a-b||/||b||
over a whole tensor, which average independent roundings instead of picking the worst element.
Estimate: every bf16 rounding on the path to an output adds about 2.3e-3 RMS relative error,
independently, so n roundings give about 2.3e-3 * sqrt(n): the logits of the test's 2-layer model sit
about 6 roundings deep on the path that dominates them (parameters, embedding, residual stream,
LayerNorm output, logits), ~6e-3; a gradient adds its backward's roundings (dlogits, the residual
stream's gradient, the activation gradients), but its fp32 sums over rows average them again, ~6e-3.
Measured on an emulation (PyTorch on the CPU, fp32 math with bf16 rounding at every point where this
program stores bf16, forward and backward, on the test's tiny model and masked K=3 window): logits
5.7e-3, loss 6e-6 relative, gradient tensors 3.8e-3 .. 6.4e-3 (the same with the bf16 gradient buffer),
trajectory of 5 AdamW steps with fp32 master weights and stochastic rounding 1.3e-3 absolute. The
tolerances leave a factor 3.5 to 15 over those for what the emulation does not model (cuBLASLt's
summation orders, --use_fast_math's exp and tanh, the GELU epilogue, rounding at every += of the
residual gradient):
  - logits 2e-2; loss 1e-4 relative (the loss averages the logits' errors over the valid positions
    and the log-sum-exp over V = 50257 logits);
  - every gradient tensor 2.5e-2, also with -grad_bf16 1 (the gradient buffer then rounds after every
    accumulation, a few more roundings of 2^-8 spread over sums);
  - trajectory 1e-2 absolute at losses of ~10 (AdamW's first steps move each parameter by about lr
    whatever its gradient, so rounding-level gradient differences matter only for parameters whose
    gradient is at the noise level; bf16 parameters near 1, the LayerNorm weights, carry up to one ulp
    of 2^-7 of stochastic-rounding noise);
  - K x B vs 1 x KB in this program: the same arithmetic row by row; only the GEMMs' row count differs,
    so cuBLASLt may choose another algorithm and a few percent of the bf16 activations may round to the
    neighbouring value (one ulp), and the fp32 weight-gradient sums group the rows differently: 1e-2 per
    tensor. The naive mean-of-means must be at least 10x further from the exact gradient than the split
    is (the debug window's valid counts differ by a factor ~4 between micro-steps, which biases it by
    tens of percent);
  - determinism and the NCCL world-size-1 window: exact (every kernel is deterministic; NCCL's
    reduce-scatter at world size 1 is a copy and its all-gather in place is a no-op); with
    -sync_each_microstep the micro-steps' gradients are summed in another grouping: 1e-6 relative.
These bounds have not yet been checked on a GPU: the printed errors show how much margin is left.
*/
#define TESTING
#include "train_gpt2.cu"
#include "dev/test/debug_state.h"

#ifdef ENABLE_FP32
// The fp32 build (floatX = float): no bf16 rounding anywhere, only fp32 sums in other orders than
// PyTorch's. Measured on the CPU emulation (dev/cpucuda): logits 2.7e-7, loss 1.7e-8 relative, gradient
// tensors 0.8e-6 .. 2.0e-6, K x B vs 1 x KB 1.6e-7, trajectory 2.9e-6 absolute. The bounds leave a
// factor 5 .. 50 for a GPU's summation orders and --use_fast_math's expf and tanhf.
#define TOL_LOGITS 1e-5
#define TOL_LOSS 1e-6
#define TOL_GRAD 1e-4
#define TOL_SPLIT 1e-5
#define TOL_TRAJECTORY 1e-4
#else
#define TOL_LOGITS 2e-2
#define TOL_LOSS 1e-4
#define TOL_GRAD 2.5e-2
#define TOL_SPLIT 1e-2
#define TOL_TRAJECTORY 1e-2
#endif
#define NAIVE_FACTOR 10.0
#define TOL_SYNC_EACH 1e-6

// The summed gradient buffer, divided by N, on the host.
static void gradient_to_host(GPT2* m, double N, float* out) {
    Trainable tr = gpt2_trainable(m, -1.0);
    tr.grads_to_host(&tr, m->grads_memory, m->num_params, out);
    for (size_t i = 0; i < m->num_params; i++) out[i] = (float)(out[i] / N);
}

// The window's gradient G/N computed by this program, K micro-steps of model->B rows.
static double window_gradient(GPT2* m, const int* x, const int* y, int K, float* out) {
    Trainable tr = gpt2_trainable(m, -1.0);
    size_t BT = (size_t)m->B * m->T;
    tr.zero_grads(&tr);
    double N = 0.0;
    for (int k = 0; k < K; k++) {
        N += (double)count_valid_targets(y + k * BT, BT);
        tr.forward_backward(&tr, x + k * BT, y + k * BT);
    }
    gradient_to_host(m, N, out);
    return N;
}

// The biased recipe: each micro-step's mean loss, averaged over the K micro-steps.
static void naive_mean_gradient(GPT2* m, const int* x, const int* y, int K, float* out) {
    Trainable tr = gpt2_trainable(m, -1.0);
    size_t BT = (size_t)m->B * m->T, n = m->num_params;
    float* g = (float*)mallocCheck(n * sizeof(float));
    memset(out, 0, n * sizeof(float));
    for (int k = 0; k < K; k++) {
        double Nk = (double)count_valid_targets(y + k * BT, BT);
        tr.zero_grads(&tr);
        tr.forward_backward(&tr, x + k * BT, y + k * BT);
        gradient_to_host(m, Nk * K, g);
        for (size_t i = 0; i < n; i++) out[i] += g[i];
    }
    free(g);
}

// Back to the initial parameters, with zero optimizer state.
static void reset_model(GPT2* m, const float* init) {
    cudaCheck(cudaMemsetAsync(m->m_memory, 0, m->opt_count * sizeof(float), m->stream));
    cudaCheck(cudaMemsetAsync(m->v_memory, 0, m->opt_count * sizeof(float), m->stream));
    gpt2_params_from_host(m, init);   // bf16 parameters and the fp32 master; synchronizes
}

// Trains `steps` windows on the debug state's fixed window through `comm`; returns the losses.
static void train_fixed_window(GPT2* m, Comm* comm, const DebugState* d, int zero_stage, int sync_each,
                               int steps, float* losses) {
    Trainable tr = gpt2_trainable(m, -1.0);
    if (sync_each && m->grad_shard_acc == NULL) die("internal: the model has no shard accumulator");
    DataLoader dl;
    dataloader_open_memory(&dl, d->x, d->y, (size_t)d->K * d->B, m->B, m->T, 0, 1);
    WindowOptions wo = { zero_stage, sync_each, d->beta1, d->beta2, d->eps, d->weight_decay, d->grad_clip, NULL };
    int K = d->K * d->B / m->B;
    for (int s = 0; s < steps; s++) losses[s] = (float)train_window(&tr, &dl, comm, &wo, K, d->lr, s).loss;
    dataloader_free(&dl);
}

// Everything a window leaves behind, on the host, for exact comparisons.
typedef struct {
    float* params;     // (num_params)
    float* shard;      // (S) the last window's reduce-scattered gradient G (not normalized)
    void* opt;         // m, v, master
    size_t opt_bytes;
    float losses[2];
} WindowSnapshot;

static void snapshot(GPT2* m, const void* shard, WindowSnapshot* s) {
    Trainable tr = gpt2_trainable(m, -1.0);
    s->params = (float*)mallocCheck(m->num_params * sizeof(float));
    s->shard = (float*)mallocCheck(m->shard_size * sizeof(float));
    s->opt_bytes = tr.opt_state_bytes(&tr);
    s->opt = mallocCheck(s->opt_bytes);
    tr.params_to_host(&tr, s->params);
    tr.grads_to_host(&tr, shard, m->shard_size, s->shard);
    tr.opt_state_to_host(&tr, s->opt);
}

static void snapshot_free(WindowSnapshot* s) { free(s->params); free(s->shard); free(s->opt); }

static int same_bits(const void* a, const void* b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

int main(int argc, char** argv) {
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
        printf("SKIP test_gpt2cu: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
        return 0;
    }
    if (argc != 3 && argc != 4)
        die("usage: %s MODEL.bin DEBUG_STATE.bin [auto|flash|ref] (written by train_gpt2.py --write_checkpoint --write_debug_state)", argv[0]);
    const char* attn = argc == 4 ? argv[3] : "auto";
    if (strcmp(attn, "auto") != 0 && strcmp(attn, "flash") != 0 && strcmp(attn, "ref") != 0)
        die("the third argument (the attention) expects auto, flash or ref, got '%s'", attn);
    Tally tally = {0, 0};
    GPT2Config c;
    DebugState d;
    float* init = load_model_and_debug_state(argv[1], argv[2], &c, &d);
    int V = c.vocab_size, Vp = c.padded_vocab_size;
    size_t n = gpt2_num_parameters(&c);
    if (d.steps < 2) die("debug state '%s' has %d trajectory steps, the test needs at least 2", argv[2], d.steps);
    size_t BT = (size_t)d.B * d.T;

    Comm comm;
    comm_init_single(&comm);
    comm_init_nccl(&comm);   // world size 1, GPU 0
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    const int flash = use_flash_attention(attn, &c);
    printf("device %s; model L=%d C=%d V=%d; debug window B=%d T=%d K=%d, %d steps; attention %s\n", prop.name, c.num_layers,
           c.channels, V, d.B, d.T, d.K, d.steps, flash ? "flash" : "materialized");

    GPT2 model;
    gpt2_build(&model, &c, init, d.B, d.T, 0, 1, 1, 1, DTYPE_F32, flash);   // rank 0 of 1, ZeRO-1, shard accumulator
    comm_nccl_set_compute_stream(&comm, model.stream);
    Trainable tr = gpt2_trainable(&model, -1.0);

    // 1. One micro-step: logits, loss and every gradient tensor against PyTorch.
    gpt2_forward(&model, d.x, NULL);
    float* logits = (float*)mallocCheck(BT * Vp * sizeof(float));
    floatX_to_host(logits, model.acts.output, BT * Vp, model.stream);
    double ldiff = 0.0, lref = 0.0, lmax = 0.0;
    for (size_t i = 0; i < BT; i++)
        for (int v = 0; v < V; v++) {
            double got = logits[i * Vp + v], want = d.logits[i * V + v];
            ldiff += (got - want) * (got - want);
            lref += want * want;
            lmax = fmax(lmax, fabs(got - want));
        }
    double logit_err = sqrt(ldiff / fmax(lref, 1e-300));
    check(&tally, logit_err <= TOL_LOGITS, "logits", "||dz||/||z|| = %.2e (tolerance %.1e), max |dz| = %.2e",
          logit_err, TOL_LOGITS, lmax);
    free(logits);

    tr.zero_grads(&tr);
    double loss_sum = tr.forward_backward(&tr, d.x, d.y);
    double N0 = (double)count_valid_targets(d.y, BT);
    double loss_err = fabs(loss_sum / N0 - d.loss0) / fabs(d.loss0);
    check(&tally, loss_err <= TOL_LOSS, "loss", "%.6f vs PyTorch %.6f, relative error %.2e (tolerance %.1e), N = %.0f of %zu targets",
          loss_sum / N0, d.loss0, loss_err, TOL_LOSS, N0, BT);
    float* g = (float*)mallocCheck(n * sizeof(float));
    gradient_to_host(&model, N0, g);
    compare_tensors(&tally, "grad", g, d.grads0, &c, TOL_GRAD);

    // 2. The window: K micro-steps of B rows whose valid counts differ.
    float* g_window = (float*)mallocCheck(n * sizeof(float));
    double N = window_gradient(&model, d.x, d.y, d.K, g_window);
    printf("     window of K=%d micro-steps, valid targets per micro-step:", d.K);
    for (int k = 0; k < d.K; k++) printf(" %ld", count_valid_targets(d.y + k * BT, BT));
    printf(" (N = %.0f)\n", N);
    compare_tensors(&tally, "window grad vs PyTorch", g_window, d.window_grads, &c, TOL_GRAD);

    // 3. K micro-steps of B rows == one micro-step of K*B rows, in this program ...
    {
        GPT2 big;
        gpt2_build(&big, &c, init, d.K * d.B, d.T, 0, 1, 1, 0, DTYPE_F32, flash);
        float* g_big = (float*)mallocCheck(n * sizeof(float));
        window_gradient(&big, d.x, d.y, 1, g_big);
        double worst = compare_tensors(&tally, "K x B vs 1 x KB", g_window, g_big, &c, TOL_SPLIT);
        // ... while the naive mean of per-micro-step means is biased whenever the counts differ.
        float* g_naive = (float*)mallocCheck(n * sizeof(float));
        naive_mean_gradient(&model, d.x, d.y, d.K, g_naive);
        double naive = relative_error(g_naive, g_big, n);
        double whole = relative_error(g_window, g_big, n);
        check(&tally, naive > NAIVE_FACTOR * fmax(whole, worst), "naive mean-of-means is biased",
              "||g_naive - g||/||g|| = %.2e vs %.2e for the exact window (worst tensor %.2e): %.0fx larger (needs %.0fx)",
              naive, whole, worst, naive / fmax(whole, 1e-12), NAIVE_FACTOR);
        free(g_naive);
        free(g_big);
        gpt2_free(&big);
    }

    // 4. Training steps on the same window: the losses follow PyTorch's.
    float* losses = (float*)mallocCheck((size_t)d.steps * sizeof(float));
    reset_model(&model, init);
    train_fixed_window(&model, &comm, &d, 1, 0, d.steps, losses);
    double worst_loss = 0.0;
    for (int s = 0; s < d.steps; s++) {
        printf("     step %d: loss %.6f, PyTorch %.6f\n", s, losses[s], d.losses[s]);
        double e = fabs(losses[s] - d.losses[s]);
        if (!(e <= worst_loss)) worst_loss = e;   // a NaN loss makes worst_loss NaN, and the check fails
    }
    check(&tally, worst_loss <= TOL_TRAJECTORY, "loss trajectory", "max |dloss| over %d steps = %.2e (tolerance %.1e), loss %.4f -> %.4f",
          d.steps, worst_loss, TOL_TRAJECTORY, losses[0], losses[d.steps - 1]);
    check(&tally, losses[d.steps - 1] < losses[0], "loss falls", "%.4f -> %.4f", losses[0], losses[d.steps - 1]);

    // 5. Determinism: from a saved state (checkpoint file + optimizer state), the same steps give the
    //    same bits. Reloaded in run_training's resume order: parameters, then the optimizer state.
    {
        const char* tmp_path = "test_gpt2cu_determinism.bin";
        float* saved = (float*)mallocCheck(n * sizeof(float));
        tr.params_to_host(&tr, saved);
        gpt2_save_checkpoint(tmp_path, &c, saved);
        size_t opt_bytes = tr.opt_state_bytes(&tr);
        void* opt_saved = mallocCheck(opt_bytes);
        tr.opt_state_to_host(&tr, opt_saved);
        WindowSnapshot a, b;
        train_fixed_window(&model, &comm, &d, 1, 0, 2, a.losses);
        snapshot(&model, model.grad_shard, &a);
        GPT2Config c2;
        float* reloaded = gpt2_load_checkpoint(tmp_path, &c2);
        remove(tmp_path);
        tr.params_from_host(&tr, reloaded);
        tr.opt_state_from_host(&tr, opt_saved);
        train_fixed_window(&model, &comm, &d, 1, 0, 2, b.losses);
        snapshot(&model, model.grad_shard, &b);
        int same = same_bits(a.params, b.params, n * sizeof(float)) && same_bits(a.losses, b.losses, sizeof(a.losses)) &&
                   same_bits(a.opt, b.opt, a.opt_bytes) && same_bits(a.shard, b.shard, model.shard_size * sizeof(float));
        check(&tally, same, "determinism", "save, 2 steps, reload, 2 steps: parameters, gradient, optimizer state and losses %s",
              same ? "bit-identical" : "DIFFER");
        snapshot_free(&a);
        snapshot_free(&b);
        free(reloaded);
        free(opt_saved);
        free(saved);
    }

    // 6. The same window through NCCL (world size 1) and through the plain single-GPU back end.
    {
        Comm single;
        comm_init_single_gpu(&single, model.stream);
        WindowSnapshot ref, got;
        reset_model(&model, init);
        train_fixed_window(&model, &single, &d, 1, 0, 2, ref.losses);
        snapshot(&model, model.grad_shard, &ref);
        reset_model(&model, init);
        CommStats before = comm.stats;
        train_fixed_window(&model, &comm, &d, 1, 0, 2, got.losses);
        CommStats used = comm_stats_diff(&comm.stats, &before);
        snapshot(&model, model.grad_shard, &got);
        int same = same_bits(ref.params, got.params, n * sizeof(float)) && same_bits(ref.losses, got.losses, sizeof(ref.losses)) &&
                   same_bits(ref.opt, got.opt, ref.opt_bytes) && same_bits(ref.shard, got.shard, model.shard_size * sizeof(float));
        check(&tally, same, "nccl world 1 == single-gpu",
              "2 windows: gradient shard, parameters, optimizer state and losses %s; NCCL calls: %ld reduce-scatter, %ld all-gather, %ld scalar",
              same ? "bit-identical" : "DIFFER", used.calls[COMM_REDUCE_SCATTER], used.calls[COMM_ALL_GATHER], used.calls[COMM_SCALARS]);
        snapshot_free(&got);

        // -z 0: all-reduce of the whole buffer and AdamW over everything: the same calls at world size 1
        GPT2 rep;
        gpt2_build(&rep, &c, init, d.B, d.T, 0, 1, 0, 0, DTYPE_F32, flash);
        comm_nccl_set_compute_stream(&comm, rep.stream);
        train_fixed_window(&rep, &comm, &d, 0, 0, 2, got.losses);
        snapshot(&rep, rep.grads_memory, &got);
        int same0 = same_bits(ref.params, got.params, n * sizeof(float)) && same_bits(ref.losses, got.losses, sizeof(ref.losses)) &&
                    same_bits(ref.opt, got.opt, ref.opt_bytes) && same_bits(ref.shard, got.shard, rep.shard_size * sizeof(float));
        check(&tally, same0, "nccl -z 0 == single-gpu", "2 windows: gradient, parameters, optimizer state and losses %s",
              same0 ? "bit-identical" : "DIFFER");
        snapshot_free(&got);
        gpt2_free(&rep);
        comm_nccl_set_compute_stream(&comm, model.stream);

        // -sync_each_microstep 1: K reduce-scatters into the shard accumulator
        reset_model(&model, init);
        train_fixed_window(&model, &comm, &d, 1, 1, 1, got.losses);
        float* acc = (float*)mallocCheck(model.shard_size * sizeof(float));
        tr.grads_to_host(&tr, model.grad_shard_acc, model.shard_size, acc);
        reset_model(&model, init);
        train_fixed_window(&model, &single, &d, 1, 0, 1, ref.losses);
        float* g1 = (float*)mallocCheck(model.shard_size * sizeof(float));
        tr.grads_to_host(&tr, model.grad_shard, model.shard_size, g1);
        double se = relative_error(acc, g1, model.shard_size);
        check(&tally, se <= TOL_SYNC_EACH && fabs(got.losses[0] - ref.losses[0]) <= TOL_SYNC_EACH * fabs(ref.losses[0]),
              "nccl -sync_each_microstep 1", "window gradient vs single-gpu: relative error %.2e (tolerance %.1e), loss %.6f vs %.6f",
              se, TOL_SYNC_EACH, got.losses[0], ref.losses[0]);
        free(acc);
        free(g1);
        snapshot_free(&ref);
    }

    // 7. The bf16 gradient buffer (-grad_bf16 1): the window's gradient against PyTorch.
#ifdef ENABLE_FP32
    printf("SKIP bf16 window grad vs PyTorch: the fp32 build has no bf16 gradient buffer\n");
#else
    {
        GPT2 m16;
        gpt2_build(&m16, &c, init, d.B, d.T, 0, 1, 1, 0, DTYPE_BF16, flash);
        float* g16 = (float*)mallocCheck(n * sizeof(float));
        window_gradient(&m16, d.x, d.y, d.K, g16);
        compare_tensors(&tally, "bf16 window grad vs PyTorch", g16, d.window_grads, &c, TOL_GRAD);
        free(g16);
        gpt2_free(&m16);
    }
#endif

    gpt2_free(&model);
    comm_finalize(&comm);
    free(g);
    free(g_window);
    free(losses);
    free(init);
    printf("test_gpt2cu total: %d checks passed, %d failed\n", tally.passed, tally.failed);
    return tally.failed == 0 ? 0 : 1;
}
