#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks for building and testing (CPU side):
# a C compiler with OpenMP, OpenMPI, and Python with numpy, PyTorch (CPU), tiktoken, matplotlib,
# transformers and safetensors.
# The CUDA toolkit (nvcc, cuBLAS, NCCL) is not installed here: the CUDA targets need it already.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
command -v mpirun >/dev/null || need_apt+=(openmpi-bin libopenmpi-dev)
[ -f /usr/include/x86_64-linux-gnu/mpi.h ] || [ -f /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] || need_apt+=(libopenmpi-dev)
/usr/bin/python3 -c "import numpy" 2>/dev/null || need_apt+=(python3-numpy)
/usr/bin/python3 -c "import torch" 2>/dev/null || need_apt+=(python3-torch)
/usr/bin/python3 -c "import matplotlib" 2>/dev/null || need_apt+=(python3-matplotlib)
/usr/bin/python3 -c "import tqdm" 2>/dev/null || need_apt+=(python3-tqdm)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# Debian's torch falls back to the reference BLAS unless an optimized one is installed.
dpkg -s libopenblas0-pthread >/dev/null 2>&1 || need_apt+=(libopenblas0-pthread)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install_deps: apt installing ${need_apt[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
if ! /usr/bin/python3 -c "import tiktoken" 2>/dev/null; then
  echo "install_deps: pip installing tiktoken"
  $SUDO /usr/bin/python3 -m pip install -q --break-system-packages tiktoken 2>/dev/null \
    || $SUDO /usr/bin/python3 -m pip install -q tiktoken
fi
# Hugging Face import/export and its tests: transformers 4.40 is the last line that works with
# Debian's torch 1.13.
if ! /usr/bin/python3 -c "import transformers, safetensors" 2>/dev/null; then
  echo "install_deps: pip installing transformers 4.40 and safetensors"
  $SUDO /usr/bin/python3 -m pip install -q --break-system-packages 'transformers==4.40.*' safetensors 2>/dev/null \
    || $SUDO /usr/bin/python3 -m pip install -q 'transformers==4.40.*' safetensors
fi
echo "install_deps: ok ($(/usr/bin/python3 -c 'import torch, numpy, tiktoken, transformers; print("torch", torch.__version__, "numpy", numpy.__version__, "tiktoken", tiktoken.__version__, "transformers", transformers.__version__)'))"
