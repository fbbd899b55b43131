"""The one mapping between llm.c's GPT-2 tensors and Hugging Face's GPT2LMHeadModel, for
dev/import_hf.py and dev/export_hf.py.

Hugging Face's GPT-2 uses Conv1D layers, which store a weight as (in, out) and compute x @ W + b;
llm.c stores it as nn.Linear does, (out, in). So every matrix inside a block is transposed on the
way in and out; the embeddings and the LayerNorm vectors are copied as they are. Per-layer tensors
are stacked: llm.c's qkvw (L, 3C, C) is h.0.attn.c_attn.weight.T, h.1.attn.c_attn.weight.T, ...
The LM head is tied to wte in both (llm.c has no separate head).
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
import formats  # noqa: E402

# llm.c tensor name -> (Hugging Face key under the model's "transformer." prefix, transposed?).
# "{l}" marks a per-layer tensor. The order of the checkpoint comes from formats.parameter_tensors.
HF_NAME = {
    "wte": ("wte.weight", False),
    "wpe": ("wpe.weight", False),
    "ln1w": ("h.{l}.ln_1.weight", False),
    "ln1b": ("h.{l}.ln_1.bias", False),
    "qkvw": ("h.{l}.attn.c_attn.weight", True),
    "qkvb": ("h.{l}.attn.c_attn.bias", False),
    "attprojw": ("h.{l}.attn.c_proj.weight", True),
    "attprojb": ("h.{l}.attn.c_proj.bias", False),
    "ln2w": ("h.{l}.ln_2.weight", False),
    "ln2b": ("h.{l}.ln_2.bias", False),
    "fcw": ("h.{l}.mlp.c_fc.weight", True),
    "fcb": ("h.{l}.mlp.c_fc.bias", False),
    "fcprojw": ("h.{l}.mlp.c_proj.weight", True),
    "fcprojb": ("h.{l}.mlp.c_proj.bias", False),
    "lnfw": ("ln_f.weight", False),
    "lnfb": ("ln_f.bias", False),
}

# The trainers' GELU is the tanh approximation; Hugging Face names it either way.
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
LAYERNORM_EPS = 1e-5


class BadInput(Exception):
    """A file that cannot be converted; the message names the file and what is wrong."""


def fail_on_bad_input(main):
    """Runs main(); a BadInput becomes one line on stderr and exit code 1."""
    try:
        main()
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def llmc_shapes(config):
    """Each llm.c tensor's shape (without the layer axis for per-layer tensors) and whether it is per layer."""
    C, maxT, V = config["channels"], config["max_seq_len"], config["vocab_size"]
    matrix = {"qkvw": (3 * C, C), "attprojw": (C, C), "fcw": (4 * C, C), "fcprojw": (C, 4 * C)}
    vector = {"qkvb": 3 * C, "fcb": 4 * C}
    out = {"wte": ((V, C), False), "wpe": ((maxT, C), False), "lnfw": ((C,), False), "lnfb": ((C,), False)}
    for name, (key, _) in HF_NAME.items():
        if "{l}" in key:
            out[name] = (matrix[name], True) if name in matrix else ((vector.get(name, C),), True)
    return out


def config_from_hf(hf, path):
    """llm.c's config from a Hugging Face config.json dict; BadInput if the model is not GPT-2-shaped."""
    def need(ok, what):
        if not ok:
            raise BadInput(f"{path}: {what}")
    need(hf.get("model_type") == "gpt2", f"model_type is '{hf.get('model_type')}', expected 'gpt2'")
    act = hf.get("activation_function", "gelu_new")
    need(act in TANH_GELU, f"activation_function is '{act}', the trainers implement GPT-2's tanh GELU ({TANH_GELU[0]})")
    need(hf.get("tie_word_embeddings", True), "tie_word_embeddings is false: the trainers tie the LM head to wte")
    C, NH = hf.get("n_embd"), hf.get("n_head")
    need(isinstance(C, int) and isinstance(NH, int) and NH > 0 and C % NH == 0, f"n_embd {C} is not a multiple of n_head {NH}")
    need(hf.get("n_inner") in (None, 4 * C), f"n_inner is {hf.get('n_inner')}, the trainers' MLP is 4*n_embd = {4 * C}")
    need(abs(hf.get("layer_norm_epsilon", LAYERNORM_EPS) - LAYERNORM_EPS) < 1e-12,
         f"layer_norm_epsilon is {hf.get('layer_norm_epsilon')}, the trainers use {LAYERNORM_EPS}")
    need(hf.get("scale_attn_weights", True) and not hf.get("scale_attn_by_inverse_layer_idx", False),
         "attention scaling differs from GPT-2's 1/sqrt(head size)")
    V = hf.get("vocab_size")
    return dict(max_seq_len=hf["n_positions"], vocab_size=V, num_layers=hf["n_layer"], num_heads=NH, channels=C,
                padded_vocab_size=(V + 127) // 128 * 128)


def hf_config_dict(config, dtype_name):
    """What config.json must say for GPT2LMHeadModel to rebuild the llm.c model."""
    return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=config["vocab_size"],
                n_positions=config["max_seq_len"], n_embd=config["channels"], n_layer=config["num_layers"],
                n_head=config["num_heads"], n_inner=None, activation_function="gelu_new",
                layer_norm_epsilon=LAYERNORM_EPS, tie_word_embeddings=True, bos_token_id=formats.EOT_TOKEN,
                eos_token_id=formats.EOT_TOKEN, torch_dtype=dtype_name)


def read_json(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: cannot read JSON ({e})")
