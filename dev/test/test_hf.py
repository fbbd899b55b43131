#!/usr/bin/env python3
"""Hugging Face import/export, HellaSwag and the loss plot, against transformers computing on its own.

Models are made on the spot: a tiny GPT2LMHeadModel (L=2, C=64, 4 heads, maxT=64, V=50257) with
every tensor random (LayerNorm weights and all biases too, so a swapped or untransposed tensor
changes the numbers). Checks:
  - import -> train_gpt2's validation loss equals transformers' loss on the same rows within 1e-5;
  - export after training steps -> transformers' loss on the validation rows equals the trainer's;
  - import(export(x)) is bit-identical (fp32 and bf16); a model in the HF cache imports by name;
  - bad models, checkpoints, HellaSwag files and logs: one line naming the file, exit 1.

Tolerance. The reference runs transformers in float64; the trainer is fp32 with a loss of ~11 summed
over 512 targets. fp32 rounding in the forward (C=64 dot products, a 50257-way softmax) leaves errors
of ~1e-6 in the mean loss; 1e-5 leaves a margin and still catches any misplaced tensor (those move
the loss by >1e-2 with these random weights).
"""
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
import formats  # noqa: E402
from harness import BUILD, MPI_ENV, PYTHON, SHARED, Suite, fixture, fresh_dir, read_log, run, tail  # noqa: E402

suite = Suite(__file__)
checks = suite
try:
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError:
    transformers = None

T, ROWS = 64, 8
LOSS_TOL = 1e-5
WORK = os.path.join(BUILD, "hf")


@fixture
def work_dir():
    """A fresh build/test/hf (transformers checked first: every case needs it)."""
    if transformers is None:
        raise RuntimeError("transformers is not installed: run scripts/install_deps.sh")
    fresh_dir(WORK)
    print(f"     transformers {transformers.__version__}, torch {torch.__version__}", flush=True)
    return WORK


def random_hf_model(out_dir, seed, **overrides):
    """A tiny GPT-2 with every tensor random, saved with save_pretrained; returns the model."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=50257, n_positions=T, n_embd=64, n_layer=2, n_head=4, **overrides)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    model.save_pretrained(out_dir)
    return model


def hf_mean_loss(model, x, y):
    """transformers' mean cross-entropy over the targets != -1, in float64."""
    model = model.double().eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x).long()).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), torch.from_numpy(y).long().reshape(-1),
                                                 ignore_index=-1, reduction="mean").item()


def val_loss(log):
    """The last validation loss in the trainer's log (-log FILE or -o's main.log)."""
    found = [line["tel"] for line in read_log(log) if "tel" in line]
    return found[-1] if found else float("nan")


def log_path(name):
    return os.path.join(work_dir(), name + ".log")


def one_line_error(name, cmd, path_word):
    """Runs cmd expecting exit 1 and one stderr line naming path_word."""
    rc, so, se = run(cmd)
    lines = se.strip().splitlines()
    checks.check(rc == 1 and len(lines) == 1 and path_word in lines[0], name, f"rc={rc}: {tail(se, 2)}")


# ---------------------------------------------------------------------------------------------
# Validation rows: 8 packed rows of random tokens (rows j: tokens[jT : jT+T+1]).
@fixture
def val_rows():
    """(shard, x, y, the trainer's flags to evaluate on it)."""
    rng = np.random.default_rng(3)
    val_tokens = rng.integers(0, 50257, size=ROWS * T + 1)
    val_bin = os.path.join(work_dir(), "val.bin")
    formats.write_shard(val_bin, val_tokens)
    val_x = np.stack([val_tokens[j * T:j * T + T] for j in range(ROWS)])
    val_y = np.stack([val_tokens[j * T + 1:j * T + T + 1] for j in range(ROWS)])
    return val_bin, val_x, val_y, ["-i", val_bin, "-j", val_bin, "-b", "4", "-t", str(T), "-m", str(ROWS), "-s", "0"]


@fixture
def imported():
    """(Hugging Face directory, the checkpoint import_hf.py made of it, the transformers model)."""
    src = os.path.join(work_dir(), "hf_random")
    model = random_hf_model(src, seed=11)
    ckpt = os.path.join(work_dir(), "imported.bin")
    rc, so, se = run([PYTHON, "dev/import_hf.py", src, ckpt])
    if rc != 0:
        raise RuntimeError(f"import_hf.py on a random tiny GPT-2 failed: {tail(se + so, 2)}")
    return src, ckpt, model


@suite.case
def import_val_loss():
    """import_hf.py, then train_gpt2's validation loss of the import = transformers' loss."""
    src, ckpt, model = imported()
    checks.check(True, "import_hf.py on a random tiny GPT-2", ckpt)
    val_bin, val_x, val_y, EVAL = val_rows()
    log = log_path("import")
    rc, so, se = run(["./train_gpt2", "-e", ckpt, "-x", "0", "-v", "1", "-log", log] + EVAL)
    ours, ref = val_loss(log), hf_mean_loss(model, val_x, val_y)
    checks.check(rc == 0 and abs(ours - ref) <= LOSS_TOL, "imported model: train_gpt2 val loss = transformers' loss",
                 f"train_gpt2 {ours:.7f}, transformers {ref:.7f}, |diff| {abs(ours - ref):.2e} (tol {LOSS_TOL:g})")


@suite.case
def cache_name():
    """A model 'in the cache' by name: a hub-cache layout (refs/main -> snapshots/<hash>) built here."""
    src, ckpt, _ = imported()
    work = work_dir()
    cache = os.path.join(work, "hub")
    snap = os.path.join(cache, "models--gpt2", "snapshots", "0123456789abcdef")
    os.makedirs(snap)
    os.makedirs(os.path.join(cache, "models--gpt2", "refs"))
    with open(os.path.join(cache, "models--gpt2", "refs", "main"), "w") as f:
        f.write("0123456789abcdef")
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(os.path.join(src, name), os.path.join(snap, name))
    out = os.path.join(work, "from_cache.bin")
    rc, so, se = run([PYTHON, "dev/import_hf.py", "gpt2", out], env={"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"})
    same = rc == 0 and open(out, "rb").read() == open(ckpt, "rb").read()
    checks.check(same, "import_hf.py by name from the Hugging Face cache", f"rc={rc}, same bytes as from the directory: {same}")
    one_line_error("import_hf.py: a name not in the cache", [PYTHON, "dev/import_hf.py", "gpt2-xl", out], "gpt2-xl")


@suite.case
def export():
    """Train 3 steps, export_hf.py: transformers' loss = the trainer's; import(export(x)) bit-identical."""
    _, ckpt, _ = imported()
    work, (_, val_x, val_y, EVAL) = work_dir(), val_rows()
    out = os.path.join(work, "run")
    rc, so_train, se = run(["./train_gpt2", "-e", ckpt, "-x", "3", "-v", "3", "-l", "1e-3", "-c", "0.1", "-o", out, "-n", "3"] + EVAL)
    if not checks.check(rc == 0, "train 3 steps from the imported model", tail(se, 2)):
        return
    trained = os.path.join(out, "model_00000003.bin")
    hf_dir = os.path.join(work, "exported")
    rc, so, se = run([PYTHON, "dev/export_hf.py", trained, hf_dir, "--tokenizer", os.path.join(SHARED, "gpt2")])
    if not checks.check(rc == 0, "export_hf.py after training", tail(se + so, 2)):
        return
    # The trainer printed its validation loss at the last step, with the weights it then saved.
    model = GPT2LMHeadModel.from_pretrained(hf_dir)
    ours, ref = val_loss(os.path.join(out, "main.log")), hf_mean_loss(model, val_x, val_y)
    checks.check(abs(ours - ref) <= LOSS_TOL, "exported model: transformers' loss = train_gpt2's val loss after 3 steps",
                 f"train_gpt2 {ours:.7f}, transformers {ref:.7f}, |diff| {abs(ours - ref):.2e} (tol {LOSS_TOL:g})")
    back = os.path.join(work, "roundtrip.bin")
    rc, so, se = run([PYTHON, "dev/import_hf.py", hf_dir, back])
    # A trainer's checkpoint also carries its run's stamp (header slots 16..21, doc/formats.md), which
    # a model rebuilt from Hugging Face files rightly lacks: every other byte must be the same.
    def model_bytes(path):
        b = open(path, "rb").read()
        return b[:16 * 4] + b[22 * 4:]
    same = rc == 0 and model_bytes(back) == model_bytes(trained)
    checks.check(same, "import(export(x)) is bit-identical (fp32; all but the run stamp in header slots 16..21)", f"rc={rc} {tail(se, 1)}")
    try:
        tok = transformers.GPT2Tokenizer.from_pretrained(hf_dir)
        text = "Hello world, it's the GPT-2 tokenizer."
        ids = tok.encode(text)
        ok = tok.decode(ids) == text and ids[:2] == [15496, 995]  # 'Hello', ' world' in GPT-2's encoder.json
        checks.check(ok, "exported tokenizer files load in GPT2Tokenizer", f"ids {ids[:4]}...")
    except Exception as e:  # noqa: BLE001 - any failure to load is the failure reported
        checks.check(False, "exported tokenizer files load in GPT2Tokenizer", repr(e))


@suite.case
def bf16_roundtrip():
    """import --dtype bfloat16, export, import: the same bytes; train_gpt2 loads it."""
    src, _, _ = imported()
    work, EVAL = work_dir(), val_rows()[3]
    x5 = os.path.join(work, "imported_bf16.bin")
    rc, so, se = run([PYTHON, "dev/import_hf.py", src, x5, "--dtype", "bfloat16"])
    hf_dir = os.path.join(work, "exported_bf16")
    rc2, so2, se2 = run([PYTHON, "dev/export_hf.py", x5, hf_dir])
    back = os.path.join(work, "roundtrip_bf16.bin")
    rc3, so3, se3 = run([PYTHON, "dev/import_hf.py", hf_dir, back, "--dtype", "bfloat16"])
    same = rc == rc2 == rc3 == 0 and open(back, "rb").read() == open(x5, "rb").read()
    checks.check(same and formats.read_model_version(x5) == formats.MODEL_VERSION_BF16,
                 "import(export(x)) is bit-identical (bf16, version 5)", tail(se + se2 + se3, 2))
    log = log_path("bf16")
    rc, so, se = run(["./train_gpt2", "-e", x5, "-x", "0", "-v", "1", "-log", log] + EVAL)
    checks.check(rc == 0 and np.isfinite(val_loss(log)), "train_gpt2 loads the bf16 import", f"val loss {val_loss(log)} {tail(se, 1)}")


@suite.case
def bad_models():
    """Models and checkpoints import_hf.py and export_hf.py refuse, with one line naming the file."""
    import json
    from safetensors.torch import load_file, save_file

    def variant(name, edit_config=None, drop=None):
        d = os.path.join(work, name)
        shutil.copytree(src, d)
        if edit_config:
            path = os.path.join(d, "config.json")
            with open(path) as f:
                cfg = json.load(f)
            cfg.update(edit_config)
            with open(path, "w") as f:
                json.dump(cfg, f)
        if drop:
            tensors = load_file(os.path.join(d, "model.safetensors"))
            del tensors[drop]
            save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        return d

    src, ckpt, _ = imported()
    work = work_dir()
    out = os.path.join(work, "bad.bin")
    one_line_error("import_hf.py: ReLU activation", [PYTHON, "dev/import_hf.py", variant("relu", {"activation_function": "relu"}), out], "relu")
    one_line_error("import_hf.py: untied head", [PYTHON, "dev/import_hf.py", variant("untied", {"tie_word_embeddings": False}), out], "untied")
    one_line_error("import_hf.py: missing tensor", [PYTHON, "dev/import_hf.py", variant("missing", drop="transformer.h.1.mlp.c_fc.weight"), out],
                   "h.1.mlp.c_fc.weight")
    one_line_error("import_hf.py: not GPT-2", [PYTHON, "dev/import_hf.py", variant("llama", {"model_type": "llama"}), out], "llama")
    # Untied by its weights: an lm_head.weight that is not wte.
    d = variant("untied_weights")
    tensors = load_file(os.path.join(d, "model.safetensors"))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1.0
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    one_line_error("import_hf.py: lm_head.weight differs from wte", [PYTHON, "dev/import_hf.py", d, out], "untied_weights")
    # Checkpoints that do not fit the export.
    cut = os.path.join(work, "truncated.bin")
    with open(ckpt, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:-4])
    one_line_error("export_hf.py: truncated checkpoint", [PYTHON, "dev/export_hf.py", cut, os.path.join(work, "x1")], "truncated.bin")
    config, params = formats.read_model(ckpt)
    params = params.copy()
    params[config["vocab_size"] * config["channels"]] = 1.0
    padded = os.path.join(work, "padded_rows.bin")
    formats.write_model(padded, params, **config)
    one_line_error("export_hf.py: nonzero padded vocabulary rows", [PYTHON, "dev/export_hf.py", padded, os.path.join(work, "x2")],
                   "padded_rows.bin")
    config2 = dict(config, num_heads=3)
    odd = os.path.join(work, "odd_heads.bin")
    formats.write_model(odd, params, **config2)
    one_line_error("export_hf.py: C not a multiple of NH", [PYTHON, "dev/export_hf.py", odd, os.path.join(work, "x3")], "odd_heads.bin")


# ---------------------------------------------------------------------------------------------
# HellaSwag: a small file built here from sentences of random words, through dev/data/hellaswag.py.
WORDS = ("the a man woman dog cat runs sits on under table river quickly slowly red green house tree "
         "sings writes letter again never always cold warm bright night morning").split()


def hellaswag_jsonl(path, n, seed):
    """n HellaSwag-shaped examples; example 0 has a context longer than T, so its row is cut from the left."""
    import json
    r = np.random.default_rng(seed)
    sentence = lambda lo, hi: " ".join(r.choice(WORDS, size=int(r.integers(lo, hi))))  # noqa: E731
    with open(path, "w") as f:
        for i in range(n):
            ctx = sentence(70, 80) if i == 0 else sentence(3, 20)
            f.write(json.dumps(dict(ctx=ctx, endings=[sentence(1, 9) for _ in range(4)], label=int(r.integers(0, 4)))) + "\n")


def transformers_hellaswag_counts(model, jsonl):
    """(examples, acc, acc_norm) as transformers scores them: each ending's summed and mean loss over its
    own tokens given the context (tokenized as llm.c does: ctx, then " " + ending); rows longer than
    T+1 tokens keep their last T+1."""
    import json
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "data"))
    import sharding
    enc = sharding.gpt2_encoding()
    model = model.double().eval()
    n = acc = acc_norm = 0
    for line in open(jsonl):
        ex = json.loads(line)
        ctx = enc.encode_ordinary(ex["ctx"])
        sums, means = [], []
        for ending in ex["endings"]:
            end = enc.encode_ordinary(" " + ending)
            seq = (ctx + end)[-(T + 1):]
            scored = min(len(end), len(seq) - 1)  # ending tokens that are targets
            with torch.no_grad():
                logits = model(torch.tensor([seq[:-1]])).logits[0]
            logp = torch.log_softmax(logits, dim=-1)
            tgt = torch.tensor(seq[1:])
            losses = -logp[torch.arange(len(tgt)), tgt][-scored:]
            sums.append(losses.sum().item())
            means.append(losses.mean().item())
        n += 1
        acc += int(np.argmin(sums)) == ex["label"]
        acc_norm += int(np.argmin(means)) == ex["label"]
    return n, acc, acc_norm


def trainer_hellaswag_counts(log):
    """(examples, acc, acc_norm) from the log's last 's:<s> eval:<acc_norm> acc:<acc> n:<examples>' line
    (fractions with 6 decimals: exact counts for n < 10^5)."""
    found = [line for line in read_log(log) if "eval" in line]
    if not found:
        return None
    n = int(found[-1]["n"])
    return n, round(found[-1]["acc"] * n), round(found[-1]["eval"] * n)


@fixture
def hellaswag_file():
    """(the JSONL of 24 examples, the eval file dev/data/hellaswag.py made of it)."""
    work = work_dir()
    jsonl = os.path.join(work, "hs.jsonl")
    hellaswag_jsonl(jsonl, 24, seed=5)
    hs = os.path.join(work, "hs.bin")
    rc, so, se = run([PYTHON, "dev/data/hellaswag.py", "--input", jsonl, "--out", hs])
    if rc != 0:
        raise RuntimeError(f"dev/data/hellaswag.py failed: {tail(so + se, 1)}")
    return jsonl, hs


@suite.case
def hellaswag():
    """HellaSwag counts at P = 1, 2, 4 and two B = what transformers scores."""
    _, ckpt, _ = imported()
    work, val_bin = work_dir(), val_rows()[0]
    jsonl, hs = hellaswag_file()
    checks.check(True, "dev/data/hellaswag.py writes the eval file", hs)
    model = GPT2LMHeadModel.from_pretrained(os.path.join(work, "hf_random"))
    ref = transformers_hellaswag_counts(model, jsonl)
    common = ["-e", ckpt, "-i", val_bin, "-j", "", "-t", str(T), "-x", "0", "-s", "0", "-h", "1", "-h_file", hs]
    runs = [(1, "3"), (1, "4")]
    if shutil.which("mpirun"):
        runs += [(2, "4"), (4, "4")]
    else:
        checks.skip("HellaSwag under mpirun", "mpirun not found")
    for P, B in runs:
        log = log_path(f"hellaswag_P{P}_B{B}")
        cmd = ["./train_gpt2"] + common + ["-b", B, "-log", log]
        if P > 1:
            rc, so, se = run(["mpirun", "-np", str(P), "--oversubscribe"] + cmd, env=dict(MPI_ENV, OMP_NUM_THREADS="1"))
        else:
            rc, so, se = run(cmd)
        got = trainer_hellaswag_counts(log)
        checks.check(rc == 0 and got == ref, f"HellaSwag counts at P={P} B={B} = transformers'",
                     f"(examples, acc, acc_norm) train_gpt2 {got}, transformers {ref} {tail(se, 1) if rc else ''}")


@suite.case
def hellaswag_bad_files():
    """-h 1 with a broken eval file: one line naming it."""
    _, ckpt, _ = imported()
    work, val_bin = work_dir(), val_rows()[0]
    hs = hellaswag_file()[1]
    with open(hs, "rb") as f:
        data = bytearray(f.read())
    def bad(name, blob, word):
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(bytes(blob))
        one_line_error(f"-h 1 with {word}", ["./train_gpt2", "-e", ckpt, "-i", val_bin, "-t", str(T), "-x", "0", "-s", "0",
                                             "-h", "1", "-h_file", path], name)
    wrong = bytearray(data)
    wrong[0:4] = np.int32(20240520).tobytes()
    bad("hs_magic.bin", wrong, "a wrong header magic")
    # The first example: [65535, bytes, index, label, endings, ctx_len, ...]; label 7 names no ending.
    no_label = bytearray(data)
    no_label[1024 + 6:1024 + 8] = np.uint16(7).tobytes()
    bad("hs_label.bin", no_label, "a label naming no ending")
    # An example whose first ending has no tokens (written by the project's writer, which allows it).
    empty = os.path.join(work, "hs_empty.bin")
    formats.write_eval_file(empty, [dict(label=0, ctx_tokens=[1, 2, 3], ending_tokens=[[], [5], [6], [7]])])
    with open(empty, "rb") as f:
        bad("hs_empty.bin", f.read(), "an ending with no tokens")


@suite.case
def help_and_h_flag():
    """-h alone and --help print the help; -h 2 is refused."""
    rc, so, se = run(["./train_gpt2", "-h"])
    rc2, so2, se2 = run(["./train_gpt2", "--help"])
    checks.check(rc == 0 and rc2 == 0 and "usage:" in so and "usage:" in so2 and "-h_file" in so,
                 "-h alone and --help print the help", f"rc {rc}, {rc2}")
    one_line_error("-h 2 is refused", ["./train_gpt2", "-h", "2"], "-h")


# ---------------------------------------------------------------------------------------------
# main.log, the loss plot and the defaults.
def log_fields(path):
    """[(kind, step, {key: value})] of a main.log, parsed here independently of dev/plot_log.py."""
    out = []
    for line in open(path):
        f = dict(x.split(":", 1) for x in line.split())
        kind = next(k for k in ("trl", "tel", "eval") if k in f)
        out.append((kind, int(f["s"]), {k: float(v) for k, v in f.items() if k != "s"}))
    return out


@suite.case
def log_and_plot():
    """main.log's keys and times; dev/plot_log.py draws two runs, refuses an empty log."""
    _, ckpt, _ = imported()
    work, EVAL = work_dir(), val_rows()[3]
    hs = hellaswag_file()[1]
    if not os.path.exists(os.path.join(work, "run", "main.log")):
        export()   # the second run to overlay: the export case's (run again when this case runs alone)
    # A run with HellaSwag and validation every 2 steps, B=4 rows of T=64: 256 tokens per step.
    run_dir = os.path.join(work, "plot_run")
    rc, so, se = run(["./train_gpt2", "-e", ckpt, "-x", "4", "-v", "2", "-l", "1e-3", "-o", run_dir, "-h", "1", "-h_file", hs] + EVAL)
    if not checks.check(rc == 0, "a run with -h 1 and -o", tail(se, 2)):
        return
    entries = log_fields(os.path.join(run_dir, "main.log"))
    trl = [(s, f) for k, s, f in entries if k == "trl"]
    tok_ok = [f["tok"] for _, f in trl] == [256.0 * (s + 1) for s, _ in trl] and len(trl) == 4
    keys_ok = all({"lr", "norm", "ms"} <= set(f) for _, f in trl)
    evals = [(s, f["tok"]) for k, s, f in entries if k in ("tel", "eval")]
    checks.check(tok_ok and keys_ok and evals == [(0, 0.0), (0, 0.0), (2, 512.0), (2, 512.0), (4, 1024.0), (4, 1024.0)],
                 "main.log: tokens seen, lr, grad norm, step time; val and HellaSwag every -v steps and at the end",
                 f"trl tok {[f['tok'] for _, f in trl]}, eval/val (step, tok) {evals}")
    etas = [line for line in so.splitlines() if line.startswith("step ") and "| ETA " in line]
    checks.check(len(etas) >= 3, "the step line shows the time left (ETA)", etas[-1] if etas else "no ETA")
    png = os.path.join(work, "curves.png")
    rc, so2, se2 = run([PYTHON, "dev/plot_log.py", run_dir, os.path.join(work, "run"), "-o", png])
    is_png = rc == 0 and os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    checks.check(is_png, "dev/plot_log.py overlays two runs into a PNG", tail(so2 + se2, 1))
    empty = os.path.join(work, "empty_run")
    os.makedirs(empty)
    open(os.path.join(empty, "main.log"), "w").close()
    one_line_error("plot_log.py: a log with no data", [PYTHON, "dev/plot_log.py", empty, "-o", png], "empty_run")
    one_line_error("plot_log.py: a directory without main.log", [PYTHON, "dev/plot_log.py", work, "-o", png], "main.log")


@suite.case
def default_validation():
    """Own training data, no -j: no validation (the default pattern is tinyshakespeare's), said at start-up."""
    _, ckpt, _ = imported()
    val_bin = val_rows()[0]
    rc, so, se = run(["./train_gpt2", "-e", ckpt, "-i", val_bin, "-b", "4", "-t", str(T), "-x", "1", "-s", "0"])
    checks.check(rc == 0 and "validation: off" in so and "val loss" not in so,
                 "own data without -j trains with validation off and says so", tail(se or so, 1))


if __name__ == "__main__":
    suite.main()
