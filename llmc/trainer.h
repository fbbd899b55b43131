// trainer.h: the training program around the window, shared by train_gpt2.c and train_gpt2.cu.
// A trainer's main() is: parse_args, init communication, build its device model as a Trainable,
// run_training. Everything here is the same on CPU and GPU.
#ifndef LLMC_TRAINER_H
#define LLMC_TRAINER_H

#include <signal.h>
#include "utils.h"
#include "format.h"
#include "gpt2.h"
#include "args.h"
#include "comm.h"
#include "dataloader.h"
#include "schedule.h"
#include "tokenizer.h"
#include "rand.h"
#include "window.h"
#include "hellaswag.h"
#include "sample.h"
#include "checkpoint.h"

// ----------------------------------------------------------------------------
// Initial parameters: a checkpoint file, or a preset initialized from the seed.

// Returns host fp32 parameters (num_params) and fills the config. Checks -t against the model's
// max_seq_len and the activation sizes here, before the trainer allocates anything for (B, T).
// Every rank loads its own -e; all agree before anyone aborts (one line when all fail alike).
static float* load_initial_parameters(const TrainOptions* o, GPT2Config* c, Comm* comm) {
    char err[1400] = "";
    float* params = NULL;
    if (gpt2_config_from_name(o->init, c)) {
        params = (float*)mallocCheck(gpt2_num_parameters(c) * sizeof(float));
        gpt2_init_random(c, params, (uint64_t)o->seed);
    } else {
        params = load_checkpoint_file(o->init, c, err, sizeof(err));
    }
    if (params != NULL && o->T > c->max_seq_len)
        fail_with(err, sizeof(err), "flag -t %d exceeds the model's max_seq_len %d", o->T, c->max_seq_len);
    else if (params != NULL)
        gpt2_check_activation_sizes(c, o->B, o->T, err, sizeof(err));
    comm_agree_or_die(comm, "loading the initial model (-e)", err[0] ? err : NULL);
    return params;
}

// Hash of this rank's parameters as fp32 (what the checkpoint would hold), to compare across ranks.
static uint64_t parameters_hash(Trainable* tr) {
    float* host = (float*)mallocCheck(tr->num_params * sizeof(float));
    tr->params_to_host(tr, host);
    uint64_t h = fnv1a(FNV1A_SEED, host, tr->num_params * sizeof(float));
    free(host);
    return h;
}

// ----------------------------------------------------------------------------
// Told to stop. A cluster ends a run with a signal some time before the kill: Slurm sends SIGTERM at
// preemption and at the time limit (or the signal asked for, --signal=USR1@120, that long before it),
// Kubernetes sends SIGTERM. The handler only records the signal (window.h's stop_signal); the window
// in progress finishes, the record travels in its scalar all-reduce, and every rank checkpoints the
// same step and exits with EXIT_STOPPED (args.h). A second signal records itself again, so it cannot
// interrupt the checkpoint being written.

static void record_stop_signal(int signo) { stop_signal = signo; }

// SA_RESTART: a read or write under way when the signal lands carries on instead of failing with EINTR.
static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = record_stop_signal;
    sa.sa_flags = SA_RESTART;
    if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGUSR1, &sa, NULL) != 0)
        die("cannot install the SIGTERM and SIGUSR1 handlers: %s", strerror(errno));
}

static const char* stop_signal_name(int signo) {
    return signo == SIGTERM ? "SIGTERM" : signo == SIGUSR1 ? "SIGUSR1" : "a signal to another rank";
}

// ----------------------------------------------------------------------------
// The run.

// K per step from -d, -k or -k_schedule.
static void resolve_k_schedule(const TrainOptions* o, int world, KSchedule* ks) {
    if (o->k_schedule[0]) {
        char err[256];
        if (kschedule_parse(ks, o->k_schedule, err, sizeof(err)) != 0) die("flag -k_schedule '%s': %s", o->k_schedule, err);
    } else if (o->K > 0) {
        kschedule_constant(ks, o->K);
    } else if (o->total_batch > 0) {
        long per_micro_step = (long)o->B * o->T * world;  // B*T < 2^31 (parse_args) and P < 2^31: no overflow
        if (o->total_batch % per_micro_step != 0)
            die("flag -d %ld: the total batch must be a multiple of B*T*P = %d*%d*%d = %ld tokens",
                o->total_batch, o->B, o->T, world, per_micro_step);
        long K = o->total_batch / per_micro_step;
        if (K > INT_MAX) die("flag -d %ld: K = d/(B*T*P) = %ld micro-steps, expected at most %d", o->total_batch, K, INT_MAX);
        kschedule_constant(ks, (int)K);
    } else {
        kschedule_constant(ks, 1);  // -d -1 and no -k: one micro-step
    }
    // Rows per window, K*B*P, count stream positions in size_t: refuse a schedule that overflows it.
    for (int i = 0; i < ks->count; i++) {
        size_t rows;
        if (!size_mul_ok((size_t)ks->k[i], (size_t)o->B * (size_t)world, &rows))
            die("K = %d at step %d: K*B*P rows per window overflows (B=%d, P=%d)", ks->k[i], ks->start[i], o->B, world);
    }
}

static void open_loader(DataLoader* dl, const char* pattern, const TrainOptions* o, Comm* c, int vocab, const char* what) {
    char err[1400];
    int rc = dataloader_open(dl, pattern, o->B, o->T, c->rank, c->world, o->pad, vocab, err, sizeof(err));
    comm_agree_or_die(c, what, rc == 0 ? NULL : err);
}

// main.log: every write is checked, so a full disk stops the run instead of losing the log.
typedef struct {
    FILE* f;                   // NULL: no log (no -o, or not rank 0)
    char path[1100];
} TrainLog;

static void log_open(TrainLog* log, const TrainOptions* o, int master) {
    memset(log, 0, sizeof(*log));
    if (!master) return;
    if (o->log_file[0]) snprintf(log->path, sizeof(log->path), "%s", o->log_file);  // -log: at most MAX_PATH_CHARS
    else if (o->out_dir[0]) snprintf(log->path, sizeof(log->path), "%s/main.log", o->out_dir);  // -o: the same
    else return;
    log->f = fopen(log->path, o->resume ? "a" : "w");
    if (log->f == NULL)
        die("%s: cannot open '%s' for writing: %s", o->log_file[0] ? "flag -log" : "flag -o", log->path, strerror(errno));
}

// One line, "s:<step> key:value ..." (doc/formats.md; dev/plot_log.py reads it).
static void log_line(TrainLog* log, const char* fmt, ...) {
    if (log->f == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    int written = vfprintf(log->f, fmt, ap);
    va_end(ap);
    if (written < 0 || fflush(log->f) != 0) die("cannot write '%s': %s", log->path, strerror(errno));
}

static void log_close(TrainLog* log) {
    if (log->f != NULL) fcloseCheck(log->f, log->path);
    log->f = NULL;
}

// One evaluation of the validation loss; NaN or Inf stops the run (it would only get worse).
static void validate(const TrainOptions* o, Trainable* tr, DataLoader* val, Comm* c, int step, double tokens_seen, TrainLog* log) {
    double num_valid = 0.0;
    double vl = evaluate_loss(tr, val, c, (size_t)o->val_rows, &num_valid);
    if (c->rank == 0 && num_valid == 0.0) printf("val loss n/a (no valid target in %d validation rows)\n", o->val_rows);
    if (num_valid == 0.0) return;
    if (c->rank == 0) printf("val loss %.6f\n", vl);  // prints nan or inf as such
    if (!isfinite(vl)) {
        char reason[200];
        snprintf(reason, sizeof(reason), "step %d: the validation loss is %g (non-finite): training stopped", step, vl);
        stop_together(c, reason);
    }
    log_line(log, "s:%d tel:%.6f tok:%.0f\n", step, vl, tokens_seen);
}

// Tokens the run has trained on before step `step` (all ranks, masked or not): sum of P*K(s)*B*T.
static double tokens_before_step(const KSchedule* ks, int step, int world, int B, int T) {
    double total = 0.0;
    for (int s = 0; s < step; s++) total += (double)world * kschedule_at(ks, s) * B * T;
    return total;
}

// "1h02m", "3m05s", "12s": the time left at the mean step time so far.
static void format_duration(char* out, size_t n, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(out, n, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60) snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, n, "%lds", s);
}

static void run_hellaswag(Trainable* tr, const EvalSet* es, Comm* c, TrainLog* log, int step, double tokens) {
    EvalResult h = evaluate_hellaswag(tr, es, c);
    if (c->rank != 0) return;
    printf("hellaswag: acc_norm %d/%d = %.4f | acc %d/%d = %.4f\n", h.correct_norm, h.examples,
           (double)h.correct_norm / h.examples, h.correct, h.examples, (double)h.correct / h.examples);
    log_line(log, "s:%d eval:%.6f acc:%.6f n:%d tok:%.0f\n", step, (double)h.correct_norm / h.examples,
             (double)h.correct / h.examples, h.examples, tokens);
}

// The window before `step` carried a stop request: every rank saves `step` (with -o) and the run ends
// before that step's evaluations and samples, which the resumed run starts with, so its log continues
// this one's as if the run had never stopped.
static int stop_on_request(const TrainOptions* o, Trainable* tr, Comm* c, int step, int max_steps,
                           uint64_t config_hash, const Rng* rng, const DataLoader* train) {
    int saved = o->out_dir[0] != '\0';
    if (saved) save_checkpoint(o, tr, c, step, config_hash, rng, train);
    if (c->rank == 0 && saved)
        printf("stopped after step %d/%d on %s: checkpoint of step %d in %s, run again with -y 1 to continue "
               "(exit code %d)\n", step, max_steps, stop_signal_name(stop_signal), step, o->out_dir, EXIT_STOPPED);
    else if (c->rank == 0)
        printf("stopped after step %d/%d on %s: no checkpoint written, as there is no output directory (-o) "
               "(exit code %d)\n", step, max_steps, stop_signal_name(stop_signal), EXIT_STOPPED_UNSAVED);
    fflush(stdout);
    return saved ? EXIT_STOPPED : EXIT_STOPPED_UNSAVED;
}

// What one run holds from its start to its end; every part of the loop gets it explicitly.
typedef struct {
    uint64_t config_hash;      // resume_hash: the identity its checkpoints carry
    KSchedule ks;
    int max_steps, start;      // steps [start, max_steps): start > 0 after a resume
    DataLoader train, val;
    int has_val;
    EvalSet hellaswag;         // loaded with -h 1
    Tokenizer tk;              // rank 0, with -s: the samples' decoder
    int start_token;           // the samples' first token
    Rng rng;                   // the samples' draws; checkpointed
    WindowOptions wo;
    TrainLog log;
} TrainRun;

// The windows' time and traffic, for the summary. The first window of a run is not timed (it warms
// up caches and, on a GPU, the kernels): ms and tokens are those of the timed windows only, so that
// tokens / ms holds whatever K each window had (-k_schedule).
typedef struct {
    int windows, timed;
    double ms, tokens;
    CommStats comm;            // summed over windows, to show that nothing else was communicated in them
} RunTotals;

static void stop_unless_pad_fits(const TrainOptions* o, const GPT2Config* cfg, Comm* c) {
    if (!o->pad || cfg->vocab_size > GPT2_EOT) return;
    char reason[200];
    snprintf(reason, sizeof(reason), "flag -pad 1 needs the end-of-text token %d, beyond this model's vocab_size %d",
             GPT2_EOT, cfg->vocab_size);
    stop_together(c, reason);
}

// The training and validation data, the HellaSwag examples, and the step count they decide.
static void open_run_data(TrainRun* run, const TrainOptions* o, const GPT2Config* cfg, Comm* c) {
    open_loader(&run->train, o->train_data, o, c, cfg->vocab_size, "opening the training data (-i)");
    if (o->shuffle) dataloader_shuffle(&run->train, o->seed);
    run->has_val = o->val_data[0] != '\0' && o->val_every > 0;
    if (run->has_val) open_loader(&run->val, o->val_data, o, c, cfg->vocab_size, "opening the validation data (-j)");
    if (o->hellaswag) {
        char err[1400];
        int rc = evalset_load(&run->hellaswag, o->hellaswag_file, cfg->vocab_size, err, sizeof(err));
        comm_agree_or_die(c, "opening the HellaSwag file (-h_file)", rc == 0 ? NULL : err);
    }
    run->max_steps = o->max_steps;
    if (run->max_steps < 0) {  // one epoch at the first step's K
        size_t rows_per_window = (size_t)o->B * c->world * kschedule_at(&run->ks, 0);  // fits: resolve_k_schedule checked
        size_t epoch_steps = run->train.total_rows / rows_per_window;
        run->max_steps = epoch_steps < 1 ? 1 : epoch_steps > INT_MAX ? INT_MAX : (int)epoch_steps;
    }
    agree_on_data(c, run->train.total_rows, run->has_val, run->has_val ? run->val.total_rows : 0, run->max_steps);
}

static void print_run_setup(const TrainRun* run, const TrainOptions* o, const Comm* c) {
    const DataLoader* train = &run->train;
    int K0 = kschedule_at(&run->ks, 0);
    printf("data: %zu training rows of T=%d (%s layout) in %d shard(s), %s%s\n", train->total_rows, o->T,
           o->pad ? "padded" : "packed", train->num_shards, o->shuffle ? "shuffled each epoch" : "in file order",
           run->has_val ? "" : ", no validation");
    if (o->val_defaulted_off)
        printf("validation: off, because -i is not the default data and -j was not given (-j PATTERN validates)\n");
    if (o->hellaswag) printf("hellaswag: %d examples from %s\n", run->hellaswag.num_examples, o->hellaswag_file);
    if (o->pad && train->rows_truncated)
        printf("data: %zu example(s) are longer than T=%d and will be truncated\n", train->rows_truncated, o->T);
    printf("window: P=%d ranks x K=%d micro-steps x B=%d rows x T=%d = %.0f tokens per step%s; %s optimizer%s\n",
           c->world, K0, o->B, o->T, (double)c->world * K0 * o->B * o->T,
           run->ks.count > 1 ? " (K scheduled)" : "", o->zero_stage ? "sharded (ZeRO-1)" : "replicated (-z 0)",
           o->sync_each_microstep ? ", reduce-scatter each micro-step" : "");
    printf("steps: %d, lr %g warmup %d final fraction %g, weight decay %g, clip %g, comm back end %s\n",
           run->max_steps, o->lr, o->warmup, o->final_lr_frac, o->weight_decay, o->grad_clip, c->backend->name);
}

// Everything before the first step: agreement, data, samples, output directory, resume, log.
static void start_run(TrainRun* run, const TrainOptions* o, Trainable* tr, Comm* c) {
    const GPT2Config* cfg = &tr->config;
    memset(run, 0, sizeof(*run));
    agree_on_options(c, o, cfg, parameters_hash(tr));
    run->config_hash = resume_hash(o, cfg);
    stop_unless_pad_fits(o, cfg, c);
    resolve_k_schedule(o, c->world, &run->ks);
    open_run_data(run, o, cfg, c);
    if (c->rank == 0) print_run_setup(run, o, c);
    run->start_token = prepare_samples(&run->tk, o, cfg->vocab_size, c);
    rng_seed(&run->rng, (uint64_t)o->seed + 1);
    if (o->dump_grads[0] && c->rank == 0) {
        FILE* f = fopenCheck(o->dump_grads, "wb");  // start empty; ranks then write their slices
        fcloseCheck(f, o->dump_grads);
    }
    if (o->out_dir[0]) prepare_output_dir(o, c);
    comm_barrier(c);
    if (o->resume) {
        run->start = resume_checkpoint(o, tr, c, run->config_hash, &run->rng, &run->train);
        agree_on_resumed_state(c, run->start, run->rng.state, run->train.next_row, parameters_hash(tr));
    }
    log_open(&run->log, o, c->rank == 0);
    WindowOptions wo = { o->zero_stage, o->sync_each_microstep, o->beta1, o->beta2, o->eps, o->weight_decay,
                         o->grad_clip, o->dump_grads[0] ? o->dump_grads : NULL };
    run->wo = wo;
}

static void end_run(TrainRun* run, const TrainOptions* o) {
    log_close(&run->log);
    if (run->tk.tokens) tokenizer_free(&run->tk);
    dataloader_free(&run->train);
    if (run->has_val) dataloader_free(&run->val);
    if (o->hellaswag) evalset_free(&run->hellaswag);
}

// What happens at a step before its window: validation, HellaSwag, a sample, a checkpoint.
static void evaluate_and_save(TrainRun* run, const TrainOptions* o, Trainable* tr, Comm* c, int step, double tokens_seen) {
    int last = step == run->max_steps;
    if (run->has_val && (step % o->val_every == 0 || last)) validate(o, tr, &run->val, c, step, tokens_seen, &run->log);
    if (o->hellaswag && ((o->val_every > 0 && step % o->val_every == 0) || last))
        run_hellaswag(tr, &run->hellaswag, c, &run->log, step, tokens_seen);
    if (c->rank == 0 && o->sample_every > 0 && ((step > 0 && step % o->sample_every == 0) || last))
        sample_and_print(tr, &run->tk, &run->rng, o->gen_T, run->start_token, step);
    if (o->ckpt_every > 0 && step > run->start && (step % o->ckpt_every == 0 || last))
        save_checkpoint(o, tr, c, step, run->config_hash, &run->rng, &run->train);
}

// MFU as llm.c computes it (gpt2_estimate_mfu), so the figure compares with llm.c's published ones:
// 6 flops per parameter per token (forward 2, backward 4) plus 6*L*C*T for attention's two matmuls,
// over the device's dense bf16 peak. (PaLM's appendix B counts attention 12*L*C*T, without the causal
// mask's halving: a bigger figure for the same run.) tokens_per_s: one rank's.
static double mfu_percent(const Trainable* tr, int T, double tokens_per_s) {
    const GPT2Config* cfg = &tr->config;
    double flops_per_token = 6.0 * tr->num_params + 6.0 * cfg->num_layers * cfg->channels * T;
    return 100.0 * flops_per_token * tokens_per_s / tr->peak_flops;
}

// One window as rank 0 reports it.
typedef struct {
    int step, max_steps, K;
    float lr;
    double ms;
    double tokens;             // this window's, all ranks
    double tokens_seen;        // all windows' so far, this one included
    double eta_seconds;        // < 0: not known yet (the first window is not timed)
} StepReport;

// The step line on stdout, with its MFU and ETA, and the step's line in the log.
static void log_step(TrainLog* log, const Trainable* tr, const Comm* c, int T, const StepReport* s, const WindowResult* r) {
    printf("step %4d/%d | loss %.6f | N %.0f | norm %.4f | lr %.2e | K %d | %.1f ms (comm %.1f ms) | %.0f tok/s",
           s->step + 1, s->max_steps, r->loss, r->num_valid, r->grad_norm, s->lr, s->K, s->ms, 1e3 * r->comm.seconds,
           s->tokens / (s->ms / 1e3));
    if (tr->peak_flops > 0.0) printf(" | MFU %.1f%%", mfu_percent(tr, T, s->tokens / c->world / (s->ms / 1e3)));
    else if (tr->peak_flops < 0.0) printf(" | MFU unknown");
    if (s->eta_seconds >= 0.0) {
        char eta[32];
        format_duration(eta, sizeof(eta), s->eta_seconds);
        printf(" | ETA %s", eta);
    }
    printf("%s\n", r->skipped ? " | skipped (N = 0)" : "");
    fflush(stdout);
    if (r->skipped)
        log_line(log, "s:%d skip:1 valid:0 k:%d tok:%.0f lr:%.6e ms:%.1f\n", s->step, s->K, s->tokens_seen, s->lr, s->ms);
    else
        log_line(log, "s:%d trl:%.6f valid:%.0f k:%d tok:%.0f lr:%.6e norm:%.6f ms:%.1f\n", s->step, r->loss,
                 r->num_valid, s->K, s->tokens_seen, s->lr, r->grad_norm, s->ms);
}

// The window of `step`; a non-finite loss or norm stops every rank. Returns whether a rank was asked to stop.
static int train_step(TrainRun* run, const TrainOptions* o, Trainable* tr, Comm* c, int step, RunTotals* totals,
                      double* tokens_seen) {
    StepReport s = { step, run->max_steps, kschedule_at(&run->ks, step), 0.0f, 0.0, 0.0, 0.0, -1.0 };
    s.lr = lr_at_step(step, o->lr, o->warmup, run->max_steps, o->final_lr_frac);
    double t0 = wall_seconds();
    WindowResult r = train_window(tr, &run->train, c, &run->wo, s.K, s.lr, step);
    if (r.nonfinite) {  // every rank has the same all-reduced sums: all stop here, rank 0 says why
        char reason[300];
        snprintf(reason, sizeof(reason), "step %d/%d: the window loss is %g and the gradient norm %g (non-finite): "
                 "the update is skipped and training stopped; no checkpoint of this state is written",
                 step + 1, run->max_steps, r.loss, r.grad_norm);
        stop_together(c, reason);
    }
    s.ms = 1e3 * (wall_seconds() - t0);
    s.tokens = (double)c->world * s.K * o->B * o->T;
    totals->windows++;
    if (step > run->start) { totals->ms += s.ms; totals->tokens += s.tokens; totals->timed++; }
    for (int kind = 0; kind < COMM_NUM_KINDS; kind++) {
        totals->comm.calls[kind] += r.comm.calls[kind];
        totals->comm.bytes[kind] += r.comm.bytes[kind];
    }
    *tokens_seen += s.tokens;
    s.tokens_seen = *tokens_seen;
    if (totals->timed > 0) s.eta_seconds = totals->ms / totals->timed / 1e3 * (run->max_steps - step - 1);
    if (c->rank == 0 && step == run->start) comm_print_stats(&r.comm, "communication per window");
    if (c->rank == 0) log_step(&run->log, tr, c, o->T, &s, &r);
    return r.stop;  // the same on every rank: the all-reduced count of ranks asked to stop
}

static void print_summary(const RunTotals* t) {
    if (t->windows > 0) {
        char title[64];
        snprintf(title, sizeof(title), "communication in %d window(s)", t->windows);
        comm_print_stats(&t->comm, title);
    }
    if (t->timed > 0) printf("summary: mean_ms=%.2f tok_per_s=%.0f\n", t->ms / t->timed, t->tokens / (t->ms / 1e3));
}

// Returns the process's exit code: 0 when every step is done, EXIT_STOPPED(_UNSAVED) when told to stop.
static int run_training(const TrainOptions* o, Trainable* tr, Comm* c) {
    TrainRun run;
    start_run(&run, o, tr, c);
    RunTotals totals;
    memset(&totals, 0, sizeof(totals));
    double tokens_seen = tokens_before_step(&run.ks, run.start, c->world, o->B, o->T);
    int exit_code = 0, stopping = 0;
    install_stop_handlers();  // from here on a run has something to save
    for (int step = run.start; step <= run.max_steps; step++) {
        if (stopping) {
            exit_code = stop_on_request(o, tr, c, step, run.max_steps, run.config_hash, &run.rng, &run.train);
            break;
        }
        evaluate_and_save(&run, o, tr, c, step, tokens_seen);
        if (step == run.max_steps) break;
        stopping = train_step(&run, o, tr, c, step, &totals, &tokens_seen);
    }
    if (c->rank == 0) print_summary(&totals);
    end_run(&run, o);
    return exit_code;
}

#endif // LLMC_TRAINER_H
