#!/usr/bin/env bash
# From a fresh clone to a trained tiny GPT-2 on tinyshakespeare, on the CPU:
#   bash scripts/quickstart.sh                    # downloads tinyshakespeare
#   bash scripts/quickstart.sh path/to/input.txt  # offline, from a local copy
# Installs missing packages, builds train_gpt2, tokenizes the text, trains for 300 steps, printing
# the loss, validation loss and samples.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
make train_gpt2
if [ $# -ge 1 ]; then
  make tinyshakespeare INPUT="$1"
else
  make tinyshakespeare
fi
exec ./train_gpt2 -e tiny -b 8 -t 64 -x 300 -l 2e-3 -u 20 -q 0.1 -c 0.1 -v 50 -m 80 -s 100 -g 48
