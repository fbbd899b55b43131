# Builds the CPU trainer (OpenMP, and MPI when an MPI compiler is found), the CUDA trainer
# (nvcc, cuBLASLt, NCCL; MPI optional), and runs the tests. Every detection says what it found.
#   make train_gpt2 test_gpt2        CPU
#   make train_gpt2cu test_gpt2cu    GPU (compiles without a GPU; needs nvcc)
#   make test                        everything, ending with "N passed, N failed, N skipped"

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -Wall -Wextra -Wno-unused-function -Wno-unused-parameter
LDLIBS = -lm
PYTHON ?= $(shell if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy, torch' 2>/dev/null; then echo /usr/bin/python3; else echo python3; fi)

# OpenMP: used if the compiler accepts -fopenmp (NO_OMP=1 to build without).
ifeq ($(NO_OMP),1)
  $(info OpenMP: off (NO_OMP=1))
else ifeq ($(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes),yes)
  CFLAGS += -fopenmp -DOMP
  $(info OpenMP: found, building with -fopenmp)
else
  $(info OpenMP: not found, the CPU trainer runs single-threaded (Debian: apt install libgomp1))
endif

# MPI: mpicc wraps CC with MPI's include and library flags (NO_MPI=1 to build without).
MPICC := $(shell command -v mpicc 2>/dev/null)
ifeq ($(NO_MPI),1)
  MPICC :=
  $(info MPI: off (NO_MPI=1))
else ifneq ($(MPICC),)
  $(info MPI: found $(MPICC): train_gpt2 runs under mpirun)
else
  $(info MPI: not found: train_gpt2 runs as one process (Debian: apt install openmpi-bin libopenmpi-dev))
endif
ifneq ($(MPICC),)
  CPU_CC = OMPI_CC=$(CC) $(MPICC) -DUSE_MPI
else
  CPU_CC = $(CC)
endif

HEADERS = $(wildcard llmc/*.h)

train_gpt2: train_gpt2.c $(HEADERS)
	$(CPU_CC) $(CFLAGS) -o $@ $< $(LDLIBS)

test_gpt2: test_gpt2.c train_gpt2.c $(HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# ---------------------------------------------------------------------------------------------
# CUDA. nvcc from PATH or /usr/local/cuda; GPU_ARCH picks the targets (default sm_80 and sm_90).
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
GPU_ARCH ?= 80 90
NVCC_GENCODE = $(foreach a,$(GPU_ARCH),-gencode arch=compute_$(a),code=sm_$(a))
NVCC_FLAGS = -O3 -std=c++17 --use_fast_math -lineinfo $(NVCC_GENCODE) -Xcompiler -Wno-unused-function
NVCC_LIBS = -lcublas -lcublasLt -lnccl
# NCCL: from the CUDA toolkit, or pip's nvidia-nccl-cu12 package (NCCL_HOME=.../nvidia/nccl).
ifneq ($(NCCL_HOME),)
  NVCC_FLAGS += -I$(NCCL_HOME)/include
  NVCC_LIBS := -L$(NCCL_HOME)/lib -Xlinker -rpath=$(NCCL_HOME)/lib $(NVCC_LIBS)
endif
CUDA_HEADERS = $(wildcard llmc/*.cuh) $(HEADERS)
ifneq ($(NO_MPI),1)
ifneq ($(MPICC),)
  MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null)
  MPI_LIBS := $(shell $(MPICC) --showme:link 2>/dev/null)
  NVCC_MPI = -DUSE_MPI $(MPI_CFLAGS) $(MPI_LIBS)
endif
endif

check_nvcc:
	@if [ -z "$(NVCC)" ]; then echo "error: nvcc not found (install the CUDA toolkit or put nvcc on PATH)"; exit 1; fi
	@echo "CUDA: $(NVCC), GPU_ARCH=$(GPU_ARCH), MPI: $(if $(NVCC_MPI),yes,no (single process, NCCL world size 1))"

train_gpt2cu: train_gpt2.cu $(CUDA_HEADERS) | check_nvcc
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(NVCC_LIBS) $(NVCC_MPI)

test_gpt2cu: test_gpt2.cu train_gpt2.cu $(CUDA_HEADERS) | check_nvcc
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(NVCC_LIBS) $(NVCC_MPI)

# ---------------------------------------------------------------------------------------------
# Data for the quick start: tinyshakespeare, downloaded, or from a local copy (INPUT=path).
tinyshakespeare:
	$(PYTHON) dev/data/tinyshakespeare.py $(if $(INPUT),--input $(INPUT))

test: train_gpt2 test_gpt2 train_gpt2cu test_gpt2cu
	$(PYTHON) dev/test/run_tests.py

clean:
	rm -f train_gpt2 test_gpt2 train_gpt2cu test_gpt2cu
	rm -rf build/test

.PHONY: test clean check_nvcc tinyshakespeare
