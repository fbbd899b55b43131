#!/usr/bin/env bash
# GPT-2 1558M (48 layers, 1600 channels): total batch 1M tokens, lr 2e-4, B=4 rows of 1024 per GPU (about 46 GiB on 1 GPU: an 80 GB GPU; 31 GiB each on 8).
# Data: FineWeb-edu shards, e.g. python3 dev/data/fineweb.py --sample 10BT (dev/data/fineweb_edu_10BT/).
#   bash scripts/run_gpt2_1558M.sh               # 1 GPU
#   NGPU=8 bash scripts/run_gpt2_1558M.sh        # 8 GPUs of this node (mpirun -np 8), K divided by 8
#   B=... TOTAL=... STEPS=... LR=... DATA=... OUT=... bash scripts/run_gpt2_1558M.sh   (see scripts/README.md)
# Runs one epoch of the shards (STEPS=-1) with warmup and a cosine decay to 0, validation every 250
# steps, a checkpoint every 2000 in OUT (log_gpt2_1558M/); run it again to resume from the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=1558M
source scripts/run_common.sh
launch_local
