# shellcheck shell=bash
# scripts/run_common.sh: what the GPT-2 recipes share; sourced by run_gpt2_*.sh, run_multinode_hostfile.sh
# and run_slurm.sbatch after they set MODEL (124M, 350M, 774M or 1558M). Every setting below is an
# environment variable with a default; scripts/README.md explains them.

case "${MODEL:?MODEL must be 124M, 350M, 774M or 1558M}" in
    124M)  PRESET=d12; DEF_B=32; DEF_TOTAL=524288;  DEF_LR=6e-4 ;;
    350M)  PRESET=d24; DEF_B=16; DEF_TOTAL=524288;  DEF_LR=3e-4 ;;
    774M)  PRESET=d36; DEF_B=8;  DEF_TOTAL=1048576; DEF_LR=2.5e-4 ;;
    1558M) PRESET=d48; DEF_B=4;  DEF_TOTAL=1048576; DEF_LR=2e-4 ;;
    *) echo "error: MODEL=$MODEL: expected 124M, 350M, 774M or 1558M"; exit 1 ;;
esac
NGPU=${NGPU:-1}                          # ranks = GPUs (one process per GPU)
B=${B:-$DEF_B}                           # micro-batch rows per GPU
T=${T:-1024}                             # sequence length
TOTAL=${TOTAL:-$DEF_TOTAL}               # tokens per optimizer step over all GPUs: K = TOTAL / (B*T*NGPU)
STEPS=${STEPS:--1}                       # optimizer steps; -1 = one epoch of the training shards
LR=${LR:-$DEF_LR}                        # peak learning rate (cosine to FINAL_FRAC * LR after WARMUP)
WARMUP=${WARMUP:-700}
FINAL_FRAC=${FINAL_FRAC:-0.0}
WD=${WD:-0.1}
DATA=${DATA:-dev/data/fineweb_edu_10BT}  # shards from dev/data/fineweb.py
OUT=${OUT:-log_gpt2_$MODEL}              # checkpoints and main.log; an existing checkpoint is resumed
CKPT_EVERY=${CKPT_EVERY:-2000}
VAL_EVERY=${VAL_EVERY:-250}
SAMPLE_EVERY=${SAMPLE_EVERY:-2000}
GRAD_BF16=${GRAD_BF16:-0}                # 1: bf16 gradient buffer (half the gradient memory)
SHUFFLE=${SHUFFLE:-1}                    # 1: rows in a new random order each epoch (-shuffle)
BIN=${BIN:-./train_gpt2cu}
EXTRA=${EXTRA:-}                         # more train_gpt2cu flags, e.g. EXTRA="-sync_each_microstep 1"

die() { echo "error: $*"; exit 1; }

ls "$DATA"/*_train_*.bin >/dev/null 2>&1 || die "no training shards $DATA/*_train_*.bin: run python3 dev/data/fineweb.py --sample 10BT (or set DATA=...)"
ls "$DATA"/*_val_*.bin >/dev/null 2>&1 || die "no validation shard $DATA/*_val_*.bin (dev/data/fineweb.py writes it first)"
PER_STEP=$((B * T * NGPU))
[ $((TOTAL % PER_STEP)) -eq 0 ] || die "TOTAL=$TOTAL tokens is not a multiple of B*T*NGPU = $B*$T*$NGPU = $PER_STEP: change B, NGPU or TOTAL"
if [ ! -x "$BIN" ]; then
    echo "building $BIN"
    make train_gpt2cu || die "make train_gpt2cu failed"
fi
RESUME=0
ls "$OUT"/DONE_* >/dev/null 2>&1 && RESUME=1

ARGS=(-e "$PRESET" -i "$DATA/*_train_*.bin" -j "$DATA/*_val_*.bin" -b "$B" -t "$T" -d "$TOTAL" -x "$STEPS"
      -l "$LR" -u "$WARMUP" -q "$FINAL_FRAC" -c "$WD" -v "$VAL_EVERY" -m $((20 * B * NGPU)) -s "$SAMPLE_EVERY" -g 144
      -o "$OUT" -n "$CKPT_EVERY" -y "$RESUME" -grad_bf16 "$GRAD_BF16" -shuffle "$SHUFFLE")
# shellcheck disable=SC2206
ARGS+=($EXTRA)
echo "GPT-2 $MODEL ($PRESET): NGPU=$NGPU B=$B T=$T total batch $TOTAL tokens -> K=$((TOTAL / PER_STEP)) micro-steps; lr $LR; out $OUT$([ $RESUME = 1 ] && echo ' (resuming)')"

# One node: NGPU processes under mpirun (one per GPU), or the plain program for one GPU.
launch_local() {
    if [ "$NGPU" -gt 1 ]; then
        command -v mpirun >/dev/null || die "NGPU=$NGPU needs mpirun (OpenMPI), and train_gpt2cu built with MPI (make finds mpicc)"
        # shellcheck disable=SC2086
        exec mpirun -np "$NGPU" --bind-to none ${MPIRUN_ARGS:-} "$BIN" "${ARGS[@]}"
    fi
    exec "$BIN" "${ARGS[@]}"
}
