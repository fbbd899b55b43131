#!/usr/bin/env python3
"""Exact gradient accumulation versus the naive mean of micro-batch means, on padded SFT data.

    make train_gpt2 && python3 dev/demo_accumulation.py            # 2-4 minutes on 2 CPU cores
    python3 dev/demo_accumulation.py --steps 300 --val_every 25     # longer curves

The data is the synthetic instruction task (dev/data/synthetic.py, built if missing): one example per
row (-pad 1), prompts masked, so each row has 2 to 9 valid targets. Four runs from the same initial
model on the same rows, each window 8*b rows of T tokens:

    exact K=1   ./train_gpt2   B=8b, K=1   loss summed over valid targets / N
    exact K=8   ./train_gpt2   B=b,  K=8   the same window in 8 micro-steps: the same gradient
    naive K=1   train_gpt2.py --naive_mean 1, B=8b, K=1   one micro-step: mean = the exact loss
    naive K=8   train_gpt2.py --naive_mean 1, B=b,  K=8   mean over micro-steps of each one's mean

Writes doc/gradient_accumulation.png (training and validation loss against the step) and
doc/gradient_accumulation_table.md: at the exact K=1 run's parameters at a few steps (its
checkpoints), the window gradient of each recipe against the K=1 gradient, ||g - g_ref|| / ||g_ref||,
on the data's first window. Gradients are computed with train_gpt2.py (the PyTorch oracle, called
in-process through its main()) and, for exact K=8, also with ./train_gpt2 (-dump_grads).
"""
import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "dev", "data"))
import formats  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="train_gpt2.py preset (default: %(default)s: L=4, C=128)")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default: %(default)s)")
    ap.add_argument("--b", type=int, default=2, help="rows per micro-step at K=8; K=1 takes 8*b (default: %(default)s)")
    ap.add_argument("--T", type=int, default=32, help="row length (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=2e-3, help="learning rate, constant (default: %(default)s)")
    ap.add_argument("--val_every", type=int, default=10, help="validation every n steps (default: %(default)s)")
    ap.add_argument("--val_rows", type=int, default=128,
                    help="validation rows, a multiple of 8*b (default: %(default)s)")
    ap.add_argument("--checkpoints", type=int, default=4,
                    help="gradient comparisons after step 0: at every steps/n (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per run; runs go two at a time (default: %(default)s; on a shared machine more "
                         "threads than free cores make OpenMP and torch much slower)")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="initialization seed (default: %(default)s)")
    ap.add_argument("--data_dir", default=os.path.join(REPO, "dev", "data", "synthetic"),
                    help="synthetic shards, built here if missing (default: %(default)s)")
    ap.add_argument("--work_dir", default=os.path.join(REPO, "build", "demo"), help="runs (default: %(default)s)")
    ap.add_argument("--plot", default=os.path.join(REPO, "doc", "gradient_accumulation.png"))
    ap.add_argument("--table", default=os.path.join(REPO, "doc", "gradient_accumulation_table.md"))
    args = ap.parse_args()
    if args.val_rows % (8 * args.b):
        ap.error(f"--val_rows {args.val_rows} must be a multiple of 8*b = {8 * args.b}")
    if args.steps < args.checkpoints or args.steps % args.checkpoints:
        ap.error(f"--steps {args.steps} must be a multiple of --checkpoints {args.checkpoints}")
    return args


def ensure_data(data_dir):
    train = os.path.join(data_dir, "synthetic_train_000000.bin")
    val = os.path.join(data_dir, "synthetic_val_000000.bin")
    if not (os.path.exists(train) and os.path.exists(val)):
        print(f"building the synthetic shards in {data_dir}", flush=True)
        subprocess.run([sys.executable, os.path.join(REPO, "dev", "data", "synthetic.py"), "--shards", "--n", "10000",
                        "--seed", "1", "--val_examples", "500", "--out_dir", data_dir], cwd=REPO, check=True)
    return train, val


def oracle(argv):
    """train_gpt2.main(argv) in this process (no torch start-up per call); returns its stdout."""
    import train_gpt2
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        train_gpt2.main(argv)
    return buf.getvalue()


def parse_log(text):
    """(training loss per step, [(step, val loss)]) from train_gpt2's or train_gpt2.py's output."""
    train = [float(l.split("| loss ")[1].split()[0]) for l in text.splitlines()
             if l.startswith("step ") and "| loss " in l]
    val = []
    for l in text.splitlines():
        m = re.match(r"val after (\d+) steps \| loss (\S+)", l)          # train_gpt2.py
        if m:
            val.append((int(m.group(1)), float(m.group(2))))
        elif l.startswith("val loss "):                                   # train_gpt2 (C)
            val.append((None, float(l.split()[2])))
    return train, val


def run_all(jobs, parallel, threads):
    """Runs [(key, name, cmd, log_path)] `parallel` at a time; returns {key: dict(train, val, seconds, name)}."""
    out, pending, running = {}, list(jobs), []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    while pending or running:
        while pending and len(running) < parallel:
            key, name, cmd, log_path = pending.pop(0)
            f = open(log_path, "w")
            p = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True, env=env)
            running.append((key, name, log_path, f, p, time.time()))
        time.sleep(0.2)
        for job in list(running):
            key, name, log_path, f, p, t0 = job
            if p.poll() is None:
                continue
            running.remove(job)
            f.close()
            if p.returncode != 0:
                for other in running:   # stop the other runs before reporting the failure
                    other[4].terminate()
            out[key] = finish(name, p.returncode, log_path, time.time() - t0)
    return out


def finish(name, rc, log_path, dt):
    text = open(log_path).read()
    if rc != 0:
        sys.exit(f"demo: {name} failed (exit {rc}); see {log_path}:\n" + "\n".join(text.splitlines()[-5:]))
    train, val = parse_log(text)
    print(f"  {name:34s} {len(train)} steps in {dt:5.1f} s: train loss {train[0]:.3f} -> {np.mean(train[-10:]):.3f} "
          f"(last 10), val loss {val[0][1]:.3f} -> {val[-1][1]:.3f}", flush=True)
    return dict(train=train, val=[v for _, v in val], seconds=dt, name=name)


def rel_err(g, ref):
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def main():
    args = parse_args()
    t_start = time.time()
    exe = os.path.join(REPO, "train_gpt2")
    if not os.path.exists(exe):
        sys.exit("demo: ./train_gpt2 not found: run `make train_gpt2` first")
    train, val = ensure_data(args.data_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    b, R, T, S = args.b, 8 * args.b, args.T, args.steps
    ck_every = S // args.checkpoints
    init = os.path.join(args.work_dir, "init.bin")
    oracle(["--model", args.model, "--seed", str(args.seed), "--threads", str(args.threads), "--write_checkpoint", init])
    config, _ = formats.read_model(init)
    num_params = formats.read_model(init)[1].size
    print(f"model {args.model}: L={config['num_layers']} C={config['channels']}, {num_params:,} parameters; "
          f"window {R} rows x T={T} (padded SFT rows), {S} steps at lr {args.lr:g}", flush=True)

    # --- the four runs ---------------------------------------------------------------------------
    c_common = [exe, "-e", init, "-pad", "1", "-i", train, "-j", val, "-t", str(T), "-x", str(S), "-l", str(args.lr),
                "-c", "0", "-clip", "1", "-v", str(args.val_every), "-s", "0"]
    py_common = [sys.executable, "train_gpt2.py", "--init_checkpoint", init, "--input_bin", train, "--input_val_bin",
                 val, "--pad", "1", "--T", str(T), "--num_iterations", str(S), "--learning_rate", str(args.lr),
                 "--weight_decay", "0", "--grad_clip", "1", "--val_every", str(args.val_every), "--naive_mean", "1",
                 "--threads", str(args.threads)]
    k1_dir = os.path.join(args.work_dir, "exact_k1")
    shutil.rmtree(k1_dir, ignore_errors=True)   # no checkpoints of an earlier run
    jobs = [
        ("naive_k1", "naive K=1 (train_gpt2.py)", py_common + ["--B", str(R), "--K", "1",
                                                               "--val_max_steps", str(args.val_rows // R)]),
        ("naive_k8", "naive K=8 (train_gpt2.py)", py_common + ["--B", str(b), "--K", "8",
                                                               "--val_max_steps", str(args.val_rows // b)]),
        ("exact_k1", "exact K=1 (./train_gpt2)", c_common + ["-b", str(R), "-k", "1", "-m", str(args.val_rows // R),
                                                             "-o", k1_dir, "-n", str(ck_every)]),
        ("exact_k8", "exact K=8 (./train_gpt2)", c_common + ["-b", str(b), "-k", "8", "-m", str(args.val_rows // b)]),
    ]
    print(f"four runs, {args.parallel} at a time, {args.threads} thread(s) each:", flush=True)
    runs = run_all([(key, name, cmd, os.path.join(args.work_dir, key + ".log")) for key, name, cmd in jobs],
                   args.parallel, args.threads)

    for name in os.listdir(k1_dir):   # only the model_*.bin checkpoints are needed below
        if name.startswith("state_"):
            os.remove(os.path.join(k1_dir, name))

    # --- gradients at the exact K=1 run's parameters ----------------------------------------------
    import train_gpt2
    loader = train_gpt2.RowLoader(train, T, 1)
    _, y = loader.rows(0, R)
    counts = [int((y[k * b:(k + 1) * b] != -1).sum()) for k in range(8)]
    N = sum(counts)
    rows = []
    for step in [0] + list(range(ck_every, S + 1, ck_every)):
        params = init if step == 0 else os.path.join(k1_dir, f"model_{step:08d}.bin")
        grads = {}
        for key, B, K, naive in [("ref", R, 1, 0), ("exact", b, 8, 0), ("naive", b, 8, 1)]:
            dump = os.path.join(args.work_dir, f"grad_{key}.bin")
            oracle(["--init_checkpoint", params, "--input_bin", train, "--pad", "1", "--T", str(T), "--B", str(B),
                    "--K", str(K), "--naive_mean", str(naive), "--num_iterations", "1", "--learning_rate", "0",
                    "--threads", str(args.threads), "--dump_grads", dump])
            grads[key] = np.fromfile(dump, dtype=np.float32).astype(np.float64)
        for key, B, K in [("c_ref", R, 1), ("c_exact", b, 8)]:
            dump = os.path.join(args.work_dir, f"grad_{key}.bin")
            subprocess.run([exe, "-e", params, "-pad", "1", "-i", train, "-j", "", "-t", str(T), "-b", str(B),
                            "-k", str(K), "-x", "1", "-l", "0", "-v", "0", "-s", "0", "-dump_grads", dump],
                           cwd=REPO, check=True, capture_output=True,
                           env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
            grads[key] = np.fromfile(dump, dtype=np.float32).astype(np.float64)
        row = dict(step=step, norm=float(np.linalg.norm(grads["ref"])),
                   exact=rel_err(grads["exact"], grads["ref"]), c_exact=rel_err(grads["c_exact"], grads["c_ref"]),
                   c_vs_py=rel_err(grads["c_ref"], grads["ref"]), naive=rel_err(grads["naive"], grads["ref"]),
                   cos=float(grads["naive"] @ grads["ref"] / np.linalg.norm(grads["naive"]) / np.linalg.norm(grads["ref"])))
        rows.append(row)

    # --- the table --------------------------------------------------------------------------------
    early = min(20, S)
    lines = [
        f"Gradient of the first window ({R} padded rows of T={T}, N = {N} valid targets; per micro-step of "
        f"{b} rows at K=8: {counts}) at the parameters of the exact K=1 run after each step, relative to "
        f"the K=1 gradient g: ||g' - g|| / ||g||. Model `{args.model}` ({num_params:,} parameters), "
        f"`python3 dev/demo_accumulation.py` with {S} steps at lr {args.lr:g}.",
        "",
        "| after step | ‖g‖ | exact K=8 vs K=1, train_gpt2.py | exact K=8 vs K=1, ./train_gpt2 | "
        "./train_gpt2 vs train_gpt2.py, K=1 | **naive K=8** vs K=1, train_gpt2.py | cos(naive, g) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['step']} | {r['norm']:.3f} | {r['exact']:.1e} | {r['c_exact']:.1e} | {r['c_vs_py']:.1e} | "
                     f"**{r['naive']:.1e}** | {r['cos']:.3f} |")
    lines += [
        "",
        f"Loss after {S} steps (training: mean of the last 10 steps' window losses; validation: "
        f"{args.val_rows} rows, token-weighted, completions only):",
        "",
        f"| run | max \\|loss − loss(exact K=1)\\|, steps 1-{early} | same, steps 1-{S} | training loss | "
        "validation loss | time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ref_loss = np.array(runs["exact_k1"]["train"])
    for key in ("exact_k1", "exact_k8", "naive_k1", "naive_k8"):
        r = runs[key]
        diff = np.abs(np.array(r["train"]) - ref_loss)
        lines.append(f"| {r['name']} | {diff[:early].max():.1e} | {diff.max():.1e} | {np.mean(r['train'][-10:]):.4f} | "
                     f"{r['val'][-1]:.4f} | {r['seconds']:.0f} s |")
    table = "\n".join(lines) + "\n"
    with open(args.table, "w") as f:
        f.write(table)
    print()
    print(table)

    # --- the plot ---------------------------------------------------------------------------------
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    style = {"exact_k1": ("tab:blue", "-"), "exact_k8": ("tab:cyan", "--"),
             "naive_k1": ("tab:orange", ":"), "naive_k8": ("tab:red", "-")}
    w = 10
    for key, (color, ls) in style.items():
        r = runs[key]
        tr = np.array(r["train"])
        smooth = np.convolve(tr, np.ones(w) / w, mode="valid")
        ax1.plot(np.arange(w, len(tr) + 1), smooth, color=color, ls=ls, lw=1.8, label=r["name"])
        vsteps = [s for s in range(0, S, args.val_every)] + [S]
        ax2.plot(vsteps[:len(r["val"])], r["val"], color=color, ls=ls, lw=1.8, marker="o", ms=3, label=r["name"])
        if key != "exact_k1":
            diff = np.maximum(np.abs(tr - np.array(runs["exact_k1"]["train"])), 1e-7)
            ax3.semilogy(np.arange(1, len(tr) + 1), diff, color=color, ls=ls, lw=1.4, label=r["name"])
    ax1.set_title(f"training loss (token-weighted window loss, mean of {w} steps)")
    ax2.set_title(f"validation loss ({args.val_rows} rows, completions only)")
    ax3.set_title("|training loss − exact K=1's| per step (0 drawn at 1e-7)")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats / valid token)" if ax is not ax3 else "nats")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    lo = min(min(r["val"]) for r in runs.values())
    for ax in (ax1, ax2):   # the first steps fall from 10.8: zoom on where the runs differ
        ax.set_ylim(max(lo - 0.3, 0), min(lo + 2.5, 11))
    fig.suptitle(f"{args.model} GPT-2, padded SFT rows, window = {R} rows: exact K=8 = exact K=1; naive K=8 "
                 f"(mean of micro-batch means) differs ({rows[0]['naive']:.0%} gradient error at step 0)")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"wrote {os.path.relpath(args.plot, REPO)} and {os.path.relpath(args.table, REPO)}; "
          f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
