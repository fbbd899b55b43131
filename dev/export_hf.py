#!/usr/bin/env python3
"""llm.c checkpoint -> Hugging Face model directory that transformers.GPT2LMHeadModel loads.

    python3 dev/export_hf.py out/model_00000300.bin hf_model
    python3 dev/export_hf.py out/model_00000300.bin hf_model --tokenizer ../shared/gpt2

Writes OUT_DIR/config.json and OUT_DIR/model.safetensors (fp32 for a version-3 checkpoint, bf16 for
version 5, so dev/import_hf.py gives back the same bytes). With --tokenizer DIR (holding GPT-2's
encoder.json and vocab.bpe) it also writes vocab.json and merges.txt, the names GPT2Tokenizer reads.
A checkpoint whose shapes do not fit a GPT-2 model stops with one line and exit 1.
"""
import argparse
import os
import shutil

import numpy as np

import hf_gpt2
from hf_gpt2 import BadInput, formats


def read_checkpoint(path):
    """(config, fp32 params, version); BadInput if the file is not a checkpoint that fits its header."""
    try:
        config, params = formats.read_model(path)
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: {e}")
    version = formats.read_model_version(path)
    C, NH, V, Vp = config["channels"], config["num_heads"], config["vocab_size"], config["padded_vocab_size"]
    if min(config.values()) <= 0 or C % NH != 0 or Vp < V:
        raise BadInput(f"{path}: header does not describe a GPT-2 model ({config})")
    expected = sum(n for _, n in formats.parameter_tensors(config))
    if params.size != expected:
        raise BadInput(f"{path}: holds {params.size} parameters, its header's shapes need {expected}")
    wte_padding = params[V * C:Vp * C]
    if np.any(wte_padding != 0):
        raise BadInput(f"{path}: the padded vocabulary rows {V}..{Vp - 1} of wte are not zero; "
                       "a Hugging Face model has no place for them")
    return config, params, version


def hf_tensors(config, params, torch_dtype):
    """The Hugging Face state dict ('transformer.' keys; the tied lm_head is left out, as save_pretrained does)."""
    import torch
    shapes = hf_gpt2.llmc_shapes(config)
    out, pos = {}, 0
    for name, numel in formats.parameter_tensors(config):
        flat = params[pos:pos + numel]
        pos += numel
        key, transposed = hf_gpt2.HF_NAME[name]
        shape, per_layer = shapes[name]
        if name == "wte":
            flat = flat[:int(np.prod(shape))]  # drop the zero padded-vocabulary rows
        layers = flat.reshape((config["num_layers"],) + shape) if per_layer else [flat.reshape(shape)]
        for l, t in enumerate(layers):
            t = torch.from_numpy(np.ascontiguousarray(t))
            t = t.t() if transposed else t
            out["transformer." + key.format(l=l)] = t.contiguous().to(torch_dtype)
    return out


def copy_tokenizer(src_dir, out_dir):
    """GPT-2's BPE tables under the names GPT2Tokenizer expects (vocab.json, merges.txt)."""
    for src, dst in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
        path = os.path.join(src_dir, src)
        if not os.path.isfile(path):
            raise BadInput(f"{path}: missing (--tokenizer needs a directory holding encoder.json and vocab.bpe)")
        shutil.copyfile(path, os.path.join(out_dir, dst))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="llm.c checkpoint (version 3 or 5)")
    ap.add_argument("out_dir", help="directory to write the Hugging Face model into")
    ap.add_argument("--tokenizer", help="directory with GPT-2's encoder.json and vocab.bpe, copied as tokenizer files")
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    config, params, version = read_checkpoint(args.checkpoint)
    bf16 = version == formats.MODEL_VERSION_BF16
    os.makedirs(args.out_dir, exist_ok=True)
    tensors = hf_tensors(config, params, torch.bfloat16 if bf16 else torch.float32)
    save_file(tensors, os.path.join(args.out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        import json
        json.dump(hf_gpt2.hf_config_dict(config, "bfloat16" if bf16 else "float32"), f, indent=2)
    if args.tokenizer:
        copy_tokenizer(args.tokenizer, args.out_dir)
    print(f"wrote {args.out_dir}: config.json, model.safetensors ({'bf16' if bf16 else 'fp32'}, {len(tensors)} tensors)"
          f"{', vocab.json, merges.txt' if args.tokenizer else ''}")


if __name__ == "__main__":
    hf_gpt2.fail_on_bad_input(main)
