#!/usr/bin/env python3
"""Loss curves from the trainers' main.log: train and validation loss (and HellaSwag when logged),
against the step and against the tokens seen, several runs overlaid.

    python3 dev/plot_log.py out_a out_b -o curves.png

Each RUN_DIR holds a main.log (written with -o). Its lines are "s:<step> key:value ..." (doc/formats.md):
trl = training loss of the step, tel = validation loss, eval = HellaSwag acc_norm, tok = tokens seen.
A run resumed into the same directory appends; the last value logged for a step wins.
A missing log, or one with no loss in it, stops with one line naming the file and exit 1.
"""
import argparse
import os
import sys


def parse_log(path):
    """{kind: {step: {key: value}}} for kind in trl, tel, eval; exits 1 naming the file on a bad log."""
    series = {"trl": {}, "tel": {}, "eval": {}}
    try:
        lines = open(path, "r", encoding="utf-8").read().splitlines()
    except OSError as e:
        sys.exit(f"error: {path}: cannot read ({e.strerror}); run the trainer with -o RUN_DIR to write it")
    for n, line in enumerate(lines, 1):
        fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
        kind = next((k for k in series if k in fields), None)
        if "s" not in fields or kind is None:
            continue  # a line of another kind: not plotted
        try:
            series[kind][int(fields["s"])] = {k: float(v) for k, v in fields.items() if k != "s"}
        except ValueError:
            sys.exit(f"error: {path} line {n}: not 'key:number' fields: {line!r}")
    if not series["trl"] and not series["tel"]:
        sys.exit(f"error: {path}: no data (no 's:<step> trl:<loss>' or 'tel:<loss>' line)")
    return series


def points(series, kind, key, x):
    """(xs, ys) of one curve, x = 's' (step) or 'tok'; empty when the log lacks the x (an older log)."""
    steps = sorted(series[kind])
    if x == "tok" and any("tok" not in series[kind][s] for s in steps):
        return [], []
    xs = [s if x == "s" else series[kind][s]["tok"] for s in steps]
    return xs, [series[kind][s][key] for s in steps]


def plot(runs, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    has_eval = any(series["eval"] for _, series in runs)
    rows = 2 if has_eval else 1
    fig, axes = plt.subplots(rows, 2, figsize=(12, 4.5 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, series) in enumerate(runs):
        color = colors[i % len(colors)]
        for col, x in enumerate(("s", "tok")):
            ax = axes[0][col]
            xs, ys = points(series, "trl", "trl", x)
            ax.plot(xs, ys, color=color, alpha=0.8, lw=1, label=f"{name} train")
            xs, ys = points(series, "tel", "tel", x)
            ax.plot(xs, ys, color=color, lw=2, ls="--", marker="o", ms=3, label=f"{name} val")
            if has_eval:
                xs, ys = points(series, "eval", "eval", x)
                axes[1][col].plot(xs, ys, color=color, marker="o", ms=3, label=f"{name} acc_norm")
    for col, xlabel in enumerate(("step", "tokens seen")):
        axes[0][col].set(xlabel=xlabel, ylabel="loss (nats per valid target)", title=f"loss vs {xlabel}")
        if has_eval:
            axes[1][col].set(xlabel=xlabel, ylabel="HellaSwag acc_norm", title=f"HellaSwag vs {xlabel}")
        for row in range(rows):
            axes[row][col].grid(alpha=0.3)
            axes[row][col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output directories (-o) holding main.log")
    ap.add_argument("-o", "--out", default="curves.png", help="image to write (default: %(default)s)")
    args = ap.parse_args()
    runs = [(os.path.basename(os.path.normpath(d)), parse_log(os.path.join(d, "main.log"))) for d in args.runs]
    plot(runs, args.out)
    print(f"wrote {args.out}: {len(runs)} run(s)")


if __name__ == "__main__":
    main()
