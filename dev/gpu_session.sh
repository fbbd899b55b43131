#!/usr/bin/env bash
# Everything that needs a GPU, in two stages that each fit one 10-minute command on a lent machine
# (one GPU, no MPI, no internet). Run from the repository root:
#
#   bash dev/gpu_session.sh test     # build for this GPU without MPI; test_gpt2cu (PyTorch debug state,
#                                    # kernels, determinism, the NCCL world-size-1 window), a training
#                                    # run (dev/test/test_cuda.py), then every dev/cuda kernel check
#   bash dev/gpu_session.sh bench    # dev/bench/gpu.sh: train_gpt2cu vs train_gpt2.py on GPT-2 124M
#   bash dev/gpu_session.sh standin  # the trainer's cuBLASLt calls (dev/cuda/cublaslt_standin.cu) through the
#                                    # real cuBLASLt (nvcc build) and through the CPU emulation's stand-in
#                                    # (dev/cpucuda/cublaslt.cpp, g++ build): each within its bound of the
#                                    # exact values, and the two within twice that bound of each other
#
# Data: the machine cannot download, so the tinyshakespeare shards must travel with the tree. Make
# them here first (`make test` leaves them in build/test/ts, or `/usr/bin/python3 dev/test/test_cli.py`)
# and carry that folder: with the device tool, carry ["build/test/ts"].
# The log goes to $OUT/gpu_session_<stage>.log when OUT is set (the device tool), else build/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
STAGE=${1:-}
LOG_DIR=${OUT:-build}
mkdir -p "$LOG_DIR" build
LOG="$LOG_DIR/gpu_session_${STAGE:-none}.log"
exec > >(tee "$LOG") 2>&1
fail() { echo "gpu_session.sh: error: $*"; exit 1; }

case "$STAGE" in test|bench|standin) ;; *) fail "expected a stage, 'test', 'bench' or 'standin' (got '${STAGE}')";; esac
nvidia-smi -L >/dev/null 2>&1 || fail "no NVIDIA GPU here (nvidia-smi -L fails)"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
echo "== $(date -u +%FT%TZ) $GPU_NAME (sm_$ARCH), $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'nvcc?')"
if [ "$STAGE" = standin ]; then
    # Minutes, not ten: one harness with nvcc for this GPU, the same source with g++ (no MPI, no GPU).
    echo "== make -C dev/cuda GPU_ARCH=$ARCH cublaslt_standin; make NO_MPI=1 build/cpucuda/dev/cuda/cublaslt_standin"
    make -C dev/cuda -B GPU_ARCH="$ARCH" cublaslt_standin || fail "building the nvcc cublaslt_standin failed"
    make -B NO_MPI=1 build/cpucuda/dev/cuda/cublaslt_standin || fail "building the emulated cublaslt_standin failed"
    echo "== real cuBLASLt: dev/cuda/build_bin/cublaslt_standin write build/cublaslt_real.bin"
    ./dev/cuda/build_bin/cublaslt_standin write build/cublaslt_real.bin || fail "real cuBLASLt against exact values failed"
    echo "== stand-in: build/cpucuda/dev/cuda/cublaslt_standin compare build/cublaslt_real.bin"
    ./build/cpucuda/dev/cuda/cublaslt_standin compare build/cublaslt_real.bin || fail "the stand-in differs from the real cuBLASLt"
    echo "== the stand-in matches the real cuBLASLt on every case"
    exit 0
fi
[ -f build/test/ts/tiny_shakespeare_train.bin ] || fail "build/test/ts/tiny_shakespeare_train.bin is missing: make it where the data is (make test) and carry build/test/ts"

# One architecture builds in a third of the time; no MPI on a single-GPU machine (NCCL runs at world
# size 1). -B: binaries built elsewhere, for other flags, must not be reused.
echo "== make NO_MPI=1 GPU_ARCH=$ARCH train_gpt2cu test_gpt2cu"
make -B -j4 NO_MPI=1 GPU_ARCH="$ARCH" train_gpt2cu test_gpt2cu || fail "building the CUDA trainer failed"

if [ "$STAGE" = test ]; then
    echo "== dev/test/test_cuda.py"
    GPU_ARCH="$ARCH" PYTHONUNBUFFERED=1 python3 dev/test/test_cuda.py
    rc_tests=$?
    echo "== make -C dev/cuda run GPU_ARCH=$ARCH"
    make -C dev/cuda -j4 GPU_ARCH="$ARCH" run
    rc_kernels=$?
    echo "== test_cuda.py exit $rc_tests, dev/cuda kernel checks exit $rc_kernels"
    fails=$(grep -c '^FAIL' "$LOG" || true)
    echo "== FAIL lines in the log: $fails"
    [ $rc_tests -eq 0 ] && [ $rc_kernels -eq 0 ] && [ "$fails" -eq 0 ] || exit 1
else
    mkdir -p dev/data/tinyshakespeare
    [ -f dev/data/tinyshakespeare/tiny_shakespeare_train.bin ] || cp build/test/ts/*.bin dev/data/tinyshakespeare/
    B=${B:-16} STEPS=${STEPS:-40} bash dev/bench/gpu.sh
fi
