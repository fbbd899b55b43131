#!/usr/bin/env python3
"""Hugging Face GPT-2 -> llm.c checkpoint, loadable by train_gpt2 and train_gpt2cu (-e OUT.bin).

    python3 dev/import_hf.py gpt2 gpt2_124M.bin                    # a model already in the HF cache
    python3 dev/import_hf.py path/to/model_dir out.bin --dtype bfloat16

SOURCE is a local model directory (config.json + model.safetensors or pytorch_model.bin) or a model
name already in the Hugging Face cache (gpt2, gpt2-medium, gpt2-large, gpt2-xl); nothing is
downloaded. The output is version 3 (fp32) or version 5 (bf16, rounded to nearest even) of
doc/formats.md; the padded vocabulary rows V..Vp-1 of wte are zero. A model that is not GPT-2-shaped
(another activation, an untied head, a missing or misshapen tensor) stops with one line and exit 1.
"""
import argparse
import os

import numpy as np

import hf_gpt2
from hf_gpt2 import BadInput, formats


def resolve_source(source):
    """A directory holding the model: SOURCE itself, or its snapshot in the local Hugging Face cache."""
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise BadInput(f"{source}: expected a model directory or a model name, got a file")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(repo_id=source, local_files_only=True)
    except Exception as e:  # not cached, or not a valid name: the hub raises several kinds
        raise BadInput(f"{source}: not a directory and not in the Hugging Face cache "
                       f"(offline lookup failed: {type(e).__name__})")


def load_state_dict(model_dir):
    """The checkpoint's tensors by name (torch tensors), from safetensors (single or sharded) or pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    legacy = os.path.join(model_dir, "pytorch_model.bin")
    try:
        if os.path.exists(single):
            return load_file(single)
        if os.path.exists(index):
            tensors = {}
            for shard in sorted(set(hf_gpt2.read_json(index)["weight_map"].values())):
                tensors.update(load_file(os.path.join(model_dir, shard)))
            return tensors
        if os.path.exists(legacy):
            return torch.load(legacy, map_location="cpu")
    except (OSError, RuntimeError, ValueError) as e:
        raise BadInput(f"{model_dir}: cannot read the weights ({e})")
    raise BadInput(f"{model_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def strip_prefix(tensors):
    """GPT2LMHeadModel saves 'transformer.h.0...', GPT2Model saves 'h.0...': accept both."""
    return {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in tensors.items()}


def check_head_is_tied(tensors, model_dir):
    head = tensors.get("lm_head.weight")
    if head is not None and not bool((head == tensors["wte.weight"]).all()):
        raise BadInput(f"{model_dir}: lm_head.weight differs from wte.weight (an untied head); "
                       "the trainers tie the LM head to wte")


def gather_tensor(tensors, name, config, model_dir):
    """One llm.c tensor in fp32, (layers stacked, matrices as (out, in)), checked against its shape."""
    key, transposed = hf_gpt2.HF_NAME[name]
    shape, per_layer = hf_gpt2.llmc_shapes(config)[name]
    keys = [key.format(l=l) for l in range(config["num_layers"])] if per_layer else [key]
    parts = []
    for k in keys:
        if k not in tensors:
            raise BadInput(f"{model_dir}: missing tensor '{k}' (a GPT-2 model has it)")
        t = tensors[k].float()
        t = t.t() if transposed else t
        if tuple(t.shape) != shape:
            raise BadInput(f"{model_dir}: tensor '{k}' has shape {tuple(tensors[k].shape)}, expected "
                           f"{shape[::-1] if transposed else shape} for this config")
        parts.append(t.contiguous().numpy().reshape(-1))
    return np.concatenate(parts)


def flat_parameters(tensors, config, model_dir):
    """The fp32 parameter buffer in checkpoint order; wte gains the zero padded-vocabulary rows."""
    out = []
    for name, numel in formats.parameter_tensors(config):
        t = gather_tensor(tensors, name, config, model_dir)
        if name == "wte":
            t = np.concatenate([t, np.zeros(numel - t.size, dtype=np.float32)])
        out.append(t)
    return np.concatenate(out)


def to_bf16_bits(params):
    """fp32 -> bf16 bit patterns, rounded to nearest even (torch's conversion)."""
    import torch
    return torch.from_numpy(params).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="model directory, or a model name in the Hugging Face cache (gpt2, gpt2-medium, ...)")
    ap.add_argument("out", help="llm.c checkpoint to write")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="float32 writes version 3, bfloat16 version 5 (default: %(default)s)")
    args = ap.parse_args()

    model_dir = resolve_source(args.source)
    config = hf_gpt2.config_from_hf(hf_gpt2.read_json(os.path.join(model_dir, "config.json")),
                                    os.path.join(model_dir, "config.json"))
    tensors = strip_prefix(load_state_dict(model_dir))
    if "wte.weight" not in tensors:
        raise BadInput(f"{model_dir}: missing tensor 'wte.weight' (a GPT-2 model has it)")
    check_head_is_tied(tensors, model_dir)
    params = flat_parameters(tensors, config, model_dir)
    if args.dtype == "float32":
        formats.write_model(args.out, params, **config)
    else:
        formats.write_model(args.out, to_bf16_bits(params), **config, version=formats.MODEL_VERSION_BF16)
    print(f"wrote {args.out}: version {3 if args.dtype == 'float32' else 5}, L={config['num_layers']} "
          f"NH={config['num_heads']} C={config['channels']} maxT={config['max_seq_len']} V={config['vocab_size']}, "
          f"{params.size} parameters")


if __name__ == "__main__":
    hf_gpt2.fail_on_bad_input(main)
