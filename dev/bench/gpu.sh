#!/usr/bin/env bash
# GPU speed: train_gpt2cu against train_gpt2.py (PyTorch: bf16 autocast, torch.compile, flash attention)
# on GPT-2 124M (-e d12 / --model d12) at T=1024, the same B, K=1, the same data, one after the other.
#
#   dev/bench/gpu.sh                       # builds train_gpt2cu for this GPU if needed
#   B=32 STEPS=50 dev/bench/gpu.sh
#
# For each side it prints the median step time over the steps after the first WARMUP (the first ones
# include cuBLASLt's heuristics and torch.compile), tokens/s, MFU and peak GPU memory, then the ratio
# C/PyTorch, and a row for dev/bench/RESULTS.md. MFU for both sides uses the same formula as
# train_gpt2cu (llm.c's formula: 6 flops per parameter per token + 6*L*C*T for attention) over the bf16
# peak train_gpt2cu prints for this GPU ("unknown" when it does not know the GPU). Peak memory: what
# each program allocated (train_gpt2cu: its cudaMallocs; PyTorch: torch.cuda.max_memory_allocated),
# neither counting the CUDA context.
# Data: tinyshakespeare (dev/data/tinyshakespeare.py, offline from ../shared when there, else
# downloaded); if that fails, a synthetic shard of Zipf-distributed token ids (speed does not depend on
# the text, but the token statistics matter a little to the embedding backward).
# Knobs (defaults in brackets): B [16]  STEPS [40]  WARMUP [10]  LR [6e-4]  C_BIN [./train_gpt2cu]
set -u
cd "$(dirname "$0")/../.." || exit 1
B=${B:-16}
T=1024
STEPS=${STEPS:-40}
WARMUP=${WARMUP:-10}
LR=${LR:-6e-4}
C_BIN=${C_BIN:-./train_gpt2cu}
LOG=build/bench
mkdir -p "$LOG"
fail() { echo "gpu.sh: error: $*"; exit 1; }

{ command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; } || fail "no NVIDIA GPU (nvidia-smi -L fails)"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.' | tr -d ' ')
PY=python3
if /usr/bin/python3 -c 'import torch, numpy; assert torch.cuda.is_available()' 2>/dev/null; then PY=/usr/bin/python3; fi
$PY -c 'import torch, numpy; assert torch.cuda.is_available()' 2>/dev/null || fail "no python3 with numpy and a CUDA-enabled torch"
echo "== GPU: $GPU_NAME (compute capability ${CC:-?}); $($PY -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"

# ---- build train_gpt2cu for this GPU if it is missing
if [ ! -x "$C_BIN" ]; then
    ARCH=${CC:-"80 90"}
    echo "== building train_gpt2cu for GPU_ARCH=$ARCH"
    make train_gpt2cu GPU_ARCH="$ARCH" || fail "make train_gpt2cu failed"
fi

# ---- data
DATA=dev/data/tinyshakespeare
TRAIN_BIN=$DATA/tiny_shakespeare_train.bin
if [ ! -f "$TRAIN_BIN" ]; then
    INPUT=()
    [ -f ../shared/data/tinyshakespeare/input.txt ] && INPUT=(--input ../shared/data/tinyshakespeare/input.txt)
    $PY dev/data/tinyshakespeare.py "${INPUT[@]}" --out_dir "$DATA" >"$LOG/data.log" 2>&1 || echo "tinyshakespeare failed (see $LOG/data.log)"
fi
if [ -f "$TRAIN_BIN" ]; then
    echo "== data: $TRAIN_BIN"
else
    TRAIN_BIN=$LOG/synthetic_zipf.bin
    $PY - "$TRAIN_BIN" <<'EOF' || fail "could not write the synthetic shard"
import sys
sys.path.insert(0, "dev/data")
import numpy as np
import formats
rng = np.random.default_rng(1337)
ranks = rng.zipf(1.2, size=4_000_000)            # token frequency falls with rank, like text
perm = rng.permutation(50257)                    # which id has which rank
tokens = perm[(ranks - 1) % 50257].astype(np.uint16)
tokens[::1000] = 50256                           # an end-of-text now and then
formats.write_shard(sys.argv[1], tokens)
EOF
    echo "== data: synthetic Zipf-distributed tokens, $TRAIN_BIN"
fi

# step_ms FILE: the step time (ms) of every step line after the first WARMUP, one per line
step_ms() {
    grep -E '^step +[0-9]+/' "$1" | tail -n +$((WARMUP + 1)) | awk -F'|' '{for (i = 2; i <= NF; i++) if ($i ~ /^ *[0-9.]+ ms/) {split($i, w, " "); print w[1]; break}}'
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

[ "$STEPS" -gt "$WARMUP" ] || fail "STEPS ($STEPS) must exceed WARMUP ($WARMUP)"
# both attention paths of train_gpt2cu: flash (llmc/cuda_flash_attention.cuh) and the materialized one
C_CMD=("$C_BIN" -e d12 -b "$B" -t "$T" -k 1 -x "$STEPS" -l "$LR" -v 0 -s 0 -j "" -i "$TRAIN_BIN" -attn flash)
R_CMD=("$C_BIN" -e d12 -b "$B" -t "$T" -k 1 -x "$STEPS" -l "$LR" -v 0 -s 0 -j "" -i "$TRAIN_BIN" -attn ref)
PY_CMD=("$PY" train_gpt2.py --model d12 --device cuda --dtype bfloat16 --compile 1 --flash 1 --T "$T" --B "$B" --K 1
        --num_iterations "$STEPS" --learning_rate "$LR" --input_bin "$TRAIN_BIN")
echo "== C:  ${C_CMD[*]}"
"${C_CMD[@]}" >"$LOG/gpu_c.log" 2>&1 || { tail -5 "$LOG/gpu_c.log"; fail "train_gpt2cu failed: $LOG/gpu_c.log"; }
echo "== C:  ${R_CMD[*]}"
"${R_CMD[@]}" >"$LOG/gpu_c_ref.log" 2>&1 || { tail -5 "$LOG/gpu_c_ref.log"; fail "train_gpt2cu -attn ref failed: $LOG/gpu_c_ref.log"; }
echo "== Py: ${PY_CMD[*]}"
"${PY_CMD[@]}" >"$LOG/gpu_py.log" 2>&1 || { tail -5 "$LOG/gpu_py.log"; fail "train_gpt2.py failed: $LOG/gpu_py.log"; }

# ---- numbers
NPARAMS=$(grep -oE '[0-9]+ parameters' "$LOG/gpu_c.log" | head -1 | cut -d' ' -f1)
PEAK=$(grep -oE 'bf16 dense peak [0-9.]+ TFLOPS' "$LOG/gpu_c.log" | head -1 | awk '{print $4}')
C_MS=$(step_ms "$LOG/gpu_c.log" | median)
PY_MS=$(step_ms "$LOG/gpu_py.log" | median)
R_MS=$(step_ms "$LOG/gpu_c_ref.log" | median)
C_MEM=$(grep -oE 'peak [0-9]+ MiB allocated' "$LOG/gpu_c.log" | awk '{print $2}')
R_MEM=$(grep -oE 'peak [0-9]+ MiB allocated' "$LOG/gpu_c_ref.log" | awk '{print $2}')
PY_MEM=$(grep -oE 'peak_mem_mb=[0-9.]+' "$LOG/gpu_py.log" | cut -d= -f2)
stats() {  # stats MS -> "tok_per_s mfu"
    awk -v ms="$1" -v bt=$((B * T)) -v n="${NPARAMS:-0}" -v L=12 -v C=768 -v T=$T -v peak="${PEAK:-}" 'BEGIN {
        tok = bt * 1000 / ms
        if (peak == "" || n == 0) mfu = "unknown"; else mfu = sprintf("%.1f%%", 100 * (6 * n + 6 * L * C * T) * tok / (peak * 1e12))
        printf "%.0f %s", tok, mfu }'
}
read -r C_TOK C_MFU <<<"$(stats "$C_MS")"
read -r PY_TOK PY_MFU <<<"$(stats "$PY_MS")"
read -r R_TOK R_MFU <<<"$(stats "$R_MS")"
printf "\n%-22s %10s %10s %8s %14s\n" side median_ms tok_per_s MFU peak_mem_MiB
printf "%-22s %10.1f %10s %8s %14s\n" "train_gpt2cu flash" "$C_MS" "$C_TOK" "$C_MFU" "${C_MEM:-?}"
printf "%-22s %10.1f %10s %8s %14s\n" "train_gpt2cu ref attn" "$R_MS" "$R_TOK" "$R_MFU" "${R_MEM:-?}"
printf "%-22s %10.1f %10s %8s %14s\n" "train_gpt2.py (torch)" "$PY_MS" "$PY_TOK" "$PY_MFU" "${PY_MEM:-?}"
awk -v a="$C_TOK" -v b="$PY_TOK" -v ma="${C_MEM:-0}" -v mb="${PY_MEM:-0}" 'BEGIN {
    printf "ratio C/PyTorch: tokens/s %.2fx", a / b; if (ma > 0 && mb > 0) printf ", peak memory %.2fx", ma / mb; printf "\n" }'
echo "(B=$B T=$T K=1, median over steps $((WARMUP + 1))..$STEPS; MFU over ${PEAK:-an unknown} TFLOPS; logs in $LOG/gpu_c.log, $LOG/gpu_py.log)"
echo
echo "rows for dev/bench/RESULTS.md:"
echo "| $(date +%F) | $GPU_NAME | \`${C_CMD[*]}\` | $C_TOK | $C_MFU | ${C_MEM:-?} MiB |"
echo "| $(date +%F) | $GPU_NAME | \`${R_CMD[*]}\` | $R_TOK | $R_MFU | ${R_MEM:-?} MiB |"
echo "| $(date +%F) | $GPU_NAME | \`${PY_CMD[*]}\` | $PY_TOK | $PY_MFU | ${PY_MEM:-?} MiB |"
