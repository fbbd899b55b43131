#!/usr/bin/env python3
"""Supervised fine-tuning data through the C trainer: the rows, the learning, the exact window.

1. Rows. dev/test/loader_rows.c prints what llmc/dataloader.h yields; this script computes the same
   rows independently, straight from doc/formats.md ("Rows") with formats.read_shard (not through
   train_gpt2.py's loader), and compares them token for token, for
     - the synthetic SFT shards (version 2: prompts masked) in the packed and the padded layout,
       alone and as two shards (train + val, crossing the shard boundary),
     - two packed version-1 shards cut mid-example (no mask: every target valid), in both layouts;
   at P=1 and P=2 (the ranks' row indices are disjoint and rank 0's rows then rank 1's are the P=1 run
   with 2B rows), past the end of the data (wrap-around), with examples longer than T (truncated).
   The padded rows' valid-target counts vary strongly (min/max printed per row and per micro-step):
   that is what makes the naive mean-of-means wrong.
2. Learning. The C trainer on the padded synthetic task takes the completion-only validation loss
   down by more than 3 nats.
3. The window. On padded data, K=4 x B=2 and K=1 x B=8 dump the same normalized gradient
   (||dg||/||g|| <= 1e-5); the naive recipe, the mean of the 4 micro-batch means (each micro-batch's
   gradient dumped by a K=1, B=2 run at lr 0), is far off; the token-weighted mean sum_k N_k g_k / N of
   the same dumps is the exact gradient again.
"""
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, Suite, ensure_synthetic, fixture, fresh_dir, logged, run, tail  # noqa: E402

EOT = formats.EOT_TOKEN
suite = Suite(__file__)
WORK = os.path.join(BUILD, "sft")
LOADER = os.path.join(BUILD, "loader_rows")
T = 32
VAL_STEPS = 25                         # 25 x 14 = 350 rows > 300 padded / 132 packed rows: wraps


def work(name):
    return os.path.join(WORK, name)


@fixture
def data():
    """A fresh work directory and the synthetic SFT shards: dict(train, val, both (a pattern of the two))."""
    fresh_dir(WORK)
    d = ensure_synthetic()
    return dict(train=os.path.join(d, "synthetic_train_000000.bin"), val=os.path.join(d, "synthetic_val_000000.bin"),
                both=os.path.join(d, "synthetic_*_000000.bin"))


@fixture
def loader():
    """dev/test/loader_rows.c compiled: what llmc/dataloader.h yields, printed."""
    rc, so, se = run(["gcc", "-O2", "-I.", "dev/test/loader_rows.c", "-o", LOADER])
    if rc != 0:
        raise RuntimeError(f"compile dev/test/loader_rows.c: {tail(se, 3)}")
    return LOADER


# --- 1. rows --------------------------------------------------------------------------------------
def reference_rows(paths, T, padded):
    """All rows of the data, per doc/formats.md: [(inputs, targets)] as tuples, and the number of
    padded examples longer than T."""
    rows, truncated = [], 0
    for path in sorted(paths):
        tokens, mask = formats.read_shard(path)
        tokens = tokens.astype(np.int64)
        mask = np.ones(tokens.size, dtype=np.uint8) if mask is None else mask
        if padded:
            eots = np.flatnonzero(tokens == EOT)
            spans = [(a, min(b - a, T)) for a, b in zip(eots[:-1], eots[1:])]
            truncated += sum(b - a > T for a, b in zip(eots[:-1], eots[1:]))
        else:
            spans = [(j * T, T) for j in range((tokens.size - 1) // T)]
        for start, n in spans:
            x = np.full(T, EOT, dtype=np.int64)
            y = np.full(T, -1, dtype=np.int64)
            x[:n] = tokens[start:start + n]
            y[:n] = np.where(mask[start + 1:start + n + 1] == 1, tokens[start + 1:start + n + 1], -1)
            rows.append((tuple(x.tolist()), tuple(y.tolist())))
    return rows, truncated


def c_rows(pattern, B, T, padded, rank, world, steps, shuffle_seed=None):
    """What the C loader yields: (total rows, truncated, [[(inputs, targets)] * B] per micro-step)."""
    extra = [] if shuffle_seed is None else [str(shuffle_seed)]
    rc, so, se = run([loader(), pattern, str(B), str(T), str(padded), str(rank), str(world), str(steps)] + extra)
    if rc != 0:
        raise RuntimeError(f"loader_rows {pattern} failed: {tail(se)}")
    lines = so.splitlines()
    head = lines[0].split()
    out = [[] for _ in range(steps)]
    for line in lines[1:]:
        ids, xs, ys = line.split("|")
        m, b = (int(v) for v in ids.split())
        assert b == len(out[m])
        out[m].append((tuple(int(v) for v in xs.split()), tuple(int(v) for v in ys.split())))
    return int(head[1]), int(head[3]), out


def check_layout(name, paths, pattern, B, T, padded, steps):
    """Compares the C rows at P=1 (B*2 rows) and P=2 (B rows per rank) with the reference."""
    ref, ref_trunc = reference_rows(paths, T, padded)
    R = len(ref)
    # P=1 with 2B rows per micro-step, and each rank of P=2 with B rows.
    total, trunc, one = c_rows(pattern, 2 * B, T, padded, 0, 1, steps)
    counts_ok = total == R and (not padded or trunc == ref_trunc)
    suite.check(counts_ok, f"{name}: row count",
                f"C {total} rows ({trunc} truncated), reference {R} rows ({ref_trunc if padded else 0} truncated)")
    want = [[ref[(m * 2 * B + b) % R] for b in range(2 * B)] for m in range(steps)]
    bad = [(m, b) for m in range(steps) for b in range(2 * B) if one[m][b] != want[m][b]]
    suite.check(not bad, f"{name}: P=1 B={2 * B} rows = doc/formats.md",
                f"{steps} micro-steps x {2 * B} rows = {steps * 2 * B} rows of {R} (wraps {steps * 2 * B // R}x)"
                + (f"; first mismatch at micro-step {bad[0][0]} row {bad[0][1]}" if bad else ""))
    ranks = [c_rows(pattern, B, T, padded, r, 2, steps)[2] for r in range(2)]
    bad = [(r, m, b) for r in range(2) for m in range(steps) for b in range(B)
           if ranks[r][m][b] != ref[(m * 2 * B + r * B + b) % R]]
    suite.check(not bad, f"{name}: P=2 B={B} each rank's rows = doc/formats.md",
                "rank r takes rows g + r*B .. g + r*B + B-1" + (f"; first mismatch {bad[0]}" if bad else ""))
    concat = all(ranks[0][m] + ranks[1][m] == one[m] for m in range(steps))
    # Global row indices of one epoch per rank: disjoint, and together every row once.
    epoch = R // (2 * B)
    idx = [{(m * 2 * B + r * B + b) for m in range(epoch) for b in range(B)} for r in range(2)]
    content = collections.Counter(ranks[0][m][b] for m in range(steps) for b in range(B)) + \
        collections.Counter(ranks[1][m][b] for m in range(steps) for b in range(B))
    content_ok = content == collections.Counter(r for m in range(steps) for r in one[m])
    suite.check(concat and content_ok and not (idx[0] & idx[1]) and idx[0] | idx[1] == set(range(epoch * 2 * B)),
                f"{name}: P=2 splits the P=1 rows",
                f"rank 0's rows + rank 1's rows = the P=1 micro-step in all {steps}; the ranks' row indices are "
                f"disjoint and cover rows 0..{epoch * 2 * B - 1} in {epoch} micro-steps")
    return one


def layout_name(padded):
    return "padded" if padded else "packed"


def two_shard_steps(padded):
    """Micro-steps of 16 rows through train + val, and 3 more: crossing the boundary and wrapping."""
    d = data()
    return len(reference_rows([d["train"], d["val"]], T, padded)[0]) // 16 + 3


@suite.case
def compile_loader():
    """dev/test/loader_rows.c compiles (it prints the C loader's rows for the cases below)."""
    loader()
    suite.check(True, "compile dev/test/loader_rows.c", "built")


@suite.case
def rows_one_shard():
    """The synthetic validation shard's rows, packed and padded, at P=1 and P=2, wrapping = doc/formats.md."""
    val = data()["val"]
    for padded in (0, 1):
        check_layout(f"synthetic val, {layout_name(padded)}", [val], val, 7, T, padded, VAL_STEPS)


@suite.case
def rows_two_shards():
    """Two shards in sorted-name order (train, then val): rows crossing the boundary and wrapping."""
    d = data()
    for padded in (0, 1):
        check_layout(f"synthetic train+val, {layout_name(padded)}", [d["train"], d["val"]], d["both"], 8, T, padded,
                     two_shard_steps(padded))


@suite.case
def rows_truncated():
    """Padded rows at T=16, where most examples are longer than a row (truncated)."""
    val = data()["val"]
    check_layout("synthetic val, padded, T=16", [val], val, 7, 16, 1, VAL_STEPS)


def check_shuffled(name, paths, pattern, B, T, padded, seed):
    """-shuffle 1: each epoch is a permutation of all rows, a different one per epoch and seed, and
    P=2 still splits the P=1 micro-steps."""
    ref = reference_rows(paths, T, padded)[0]
    R = len(ref)
    steps = (3 * R) // (2 * B) + 1                       # a little more than three epochs

    def stream(seed, rank=0, world=1, b=2 * B):
        return [r for step in c_rows(pattern, b, T, padded, rank, world, steps, seed)[2] for r in step]
    one = stream(seed)
    epochs = [one[e * R:(e + 1) * R] for e in range(3)]
    perms = all(collections.Counter(ep) == collections.Counter(ref) for ep in epochs)
    orders_differ = epochs[0] != ref[:R] and epochs[1] != epochs[0] and epochs[2] != epochs[1]
    other_seed = stream(seed + 1)[:R] != epochs[0]
    suite.check(perms and orders_differ and other_seed, f"{name}: -shuffle 1 epochs are permutations",
                f"{R} rows; each of 3 epochs holds every row once; file order, epochs 0/1/2 and seed {seed} vs "
                f"{seed + 1} all differ" + ("" if perms else "; an epoch is NOT a permutation")
                + ("" if orders_differ and other_seed else "; two orders are identical"))
    ranks = [stream(seed, r, 2, B) for r in range(2)]
    split = all(ranks[0][m * B:(m + 1) * B] + ranks[1][m * B:(m + 1) * B] == one[m * 2 * B:(m + 1) * 2 * B]
                for m in range(steps))
    suite.check(split, f"{name}: -shuffle 1 P=2 splits the P=1 rows",
                f"{steps} micro-steps crossing 3 epoch boundaries: rank 0's + rank 1's = the P=1 micro-step")


@suite.case
def rows_shuffled():
    """-shuffle 1: every epoch a new permutation of the rows, per seed, and P=2 still splits P=1."""
    d = data()
    check_shuffled("synthetic val, padded", [d["val"]], d["val"], 7, T, 1, 1337)
    check_shuffled("synthetic train+val, packed", [d["train"], d["val"]], d["both"], 8, T, 0, 5)


@suite.case
def rows_version1():
    """Two version-1 shards (no mask) cut mid-example, sizes not multiples of T, in both layouts."""
    tokens, _ = formats.read_shard(data()["train"])
    v1 = [work("v1_a.bin"), work("v1_b.bin")]
    formats.write_shard(v1[0], tokens[5:1005])
    formats.write_shard(v1[1], tokens[1005:1782])
    for padded in (0, 1):
        R = len(reference_rows(v1, T, padded)[0])
        rows = check_layout(f"version-1 shards, {layout_name(padded)}", v1, work("v1_*.bin"), 3, T, padded, R // 6 + 4)
        if not padded:
            valid = all(t != -1 for step in rows for _, y in step for t in y)
            suite.check(valid, "version-1 packed: every target valid", "no mask: no -1 target")


def valid_targets(rows):
    return [sum(t != -1 for t in y) for _, y in rows]


@suite.case
def rows_valid_counts_vary():
    """Padded rows' valid-target counts vary strongly (what makes the naive mean-of-means wrong)."""
    d = data()
    # The P=1 rows of 2 x 8 per micro-step through train + val, as in rows_two_shards; per micro-step
    # of B=2, as in the window test below.
    padded_rows = [r for step in c_rows(d["both"], 16, T, 1, 0, 1, two_shard_steps(1))[2] for r in step]
    per_row = valid_targets(padded_rows[:len(reference_rows([d["train"]], T, 1)[0])])
    per_step = [per_row[i] + per_row[i + 1] for i in range(0, len(per_row) - 1, 2)]
    packed_counts = valid_targets([r for step in c_rows(d["both"], 16, T, 0, 0, 1, two_shard_steps(0))[2] for r in step])
    ok = min(per_row) >= 1 and max(per_row) >= 3 * min(per_row) and max(per_step) >= 2 * min(per_step)
    suite.check(ok, "padded rows: valid targets vary strongly",
                f"per row (T={T}) min {min(per_row)} max {max(per_row)} mean {np.mean(per_row):.1f}; per micro-step of "
                f"B=2 min {min(per_step)} max {max(per_step)}; packed rows: min {min(packed_counts)} max {max(packed_counts)}")


# --- 2. the synthetic task is learnable by the C trainer ------------------------------------------------
@suite.case
def learns():
    """The C trainer on the padded synthetic task takes the completion-only validation loss down by > 3 nats."""
    d, log = data(), work("learns.log")
    rc, so, se = run(["./train_gpt2", "-e", "tiny", "-pad", "1", "-i", d["train"], "-j", d["val"], "-t", "32", "-b", "8", "-k", "1",
                      "-x", "60", "-l", "2e-3", "-v", "30", "-m", "10", "-s", "0", "-log", log], timeout=300)
    vals = logged(log, "tel")
    ok = rc == 0 and len(vals) == 3 and vals[-1] < vals[0] - 3
    suite.check(ok, "C trainer learns the padded synthetic task",
                f"completion-only val loss at steps 0/30/60: {' '.join(f'{v:.3f}' for v in vals)} (want a fall > 3)"
                if vals else tail(se))


# --- 3. the window's gradient: exact at any K; the naive mean is biased ----------------------------------
def dump_run(name, K, B, steps, lr):
    """The normalized gradient of each window (steps, params) and its valid-target count N."""
    d = data()
    grads, log = work(name + ".grads"), work(name + ".log")
    rc, so, se = run(["./train_gpt2", "-e", "tiny", "-pad", "1", "-i", d["train"], "-j", "", "-t", "32", "-s", "0", "-v", "0",
                      "-k", str(K), "-b", str(B), "-x", str(steps), "-l", lr, "-dump_grads", grads, "-log", log])
    if rc != 0:
        raise RuntimeError(f"{name} runs: {tail(se)}")
    g = np.fromfile(grads, dtype=np.float32).astype(np.float64).reshape(steps, -1)
    return g, [int(n) for n in logged(log, "valid")]


full_batch = fixture(lambda: dump_run("K1_B8", 1, 8, 2, "1e-3"))


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@suite.case
def window_exact_at_any_K():
    """K=4 x B=2 dumps the same normalized gradient as K=1 x B=8 (1e-5)."""
    g_ref, n_ref = full_batch()
    g_k4, n_k4 = dump_run("K4_B2", 4, 2, 2, "1e-3")
    errs = [rel(a, b) for a, b in zip(g_k4, g_ref)]
    suite.check(n_k4 == n_ref and max(errs) <= 1e-5, "K=4 B=2 gradient = K=1 B=8 gradient",
                f"||dg||/||g|| = {' '.join(f'{e:.1e}' for e in errs)} in windows 1, 2 (tolerance 1e-5); N = {n_ref}")


@suite.case
def naive_mean_biased():
    """The mean of the 4 micro-batch means is far off; their token-weighted mean is exact again."""
    g_ref, n_ref = full_batch()
    g_mb, n_mb = dump_run("K1_B2_lr0", 1, 2, 4, "0")        # window 0's four micro-batches, parameters fixed
    naive = g_mb.mean(axis=0)
    weighted = (np.array(n_mb, dtype=np.float64)[:, None] * g_mb).sum(axis=0) / sum(n_mb)
    e_naive, e_weighted = rel(naive, g_ref[0]), rel(weighted, g_ref[0])
    suite.check(sum(n_mb) == n_ref[0] and e_naive > 1e-2 and e_naive > 1000 * 1e-5,
                "naive mean of micro-batch means is biased",
                f"micro-batch N = {n_mb} (window N = {n_ref[0]}): ||dg||/||g|| = {e_naive:.3f} for mean_k(g_k)")
    suite.check(e_weighted <= 1e-5, "token-weighted mean of the micro-batch gradients is exact",
                f"||sum_k N_k g_k / N - g|| / ||g|| = {e_weighted:.1e} (tolerance 1e-5)")


if __name__ == "__main__":
    suite.main()
