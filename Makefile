# Builds the CPU trainer (OpenMP, and MPI when an MPI compiler is found), the CUDA trainer
# (nvcc, cuBLASLt, NCCL; MPI optional), and runs the tests. Every detection says what it found.
#   make train_gpt2 test_gpt2        CPU
#   make train_gpt2cu test_gpt2cu    GPU (compiles without a GPU; needs nvcc)
#   make train_gpt2fp32cu test_gpt2fp32cu   GPU, fp32 build (-DENABLE_FP32: parameters and activations float)
#   make sanitize                    build/sanitize/train_gpt2: AddressSanitizer and UBSan
#   make test                        everything, ending with "N passed, N failed, N skipped"
#   make check                       the inner loop, about a minute once built (dev/test/run_tests.py --check)

CC ?= gcc
CFLAGS ?= -O3 -march=native
CFLAGS += -Wall -Wextra -Wno-unused-function -Wno-unused-parameter
LDLIBS = -lm
PYTHON ?= $(shell if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import numpy, torch' 2>/dev/null; then echo /usr/bin/python3; else echo python3; fi)

# Vector width: GCC's tuning for some AVX-512 CPUs (Ice Lake servers among them) prefers 256-bit
# vectors, and the loops left to the compiler then run at half width. The matmul states its width in
# intrinsics (train_gpt2.c, mm_tile); this asks for the full width everywhere else.
ifneq ($(shell echo | $(CC) $(CFLAGS) -dM -E - 2>/dev/null | grep -c '__AVX512F__'),0)
  CFLAGS += -mprefer-vector-width=512
  $(info CPU vectors: AVX-512, building with -mprefer-vector-width=512)
else ifneq ($(shell echo | $(CC) $(CFLAGS) -dM -E - 2>/dev/null | grep -c '__AVX2__'),0)
  $(info CPU vectors: AVX2)
else
  $(info CPU vectors: neither AVX-512 nor AVX2 for this target: the portable C matmul)
endif

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
TEST_HEADERS = $(wildcard dev/test/*.h)

# Build configuration stamps: a binary depends on the exact command that builds it, so installing MPI
# (or NCCL, or changing CFLAGS/GPU_ARCH) after a build rebuilds it instead of leaving a stale binary.
# The stamp is rewritten only when its text changes; make then sees it newer than the binary.
# '+' runs it under make -n as well: a dry run would otherwise take every stamp for rewritten and list
# every binary as out of date (it writes the stamp only if the configuration did change).
write_stamp = +@mkdir -p build; printf '%s\n' '$(subst ','\'',$(2))' > $(1).tmp; \
  if cmp -s $(1).tmp $(1); then rm -f $(1).tmp; else mv -f $(1).tmp $(1); fi

build/cpu.flags: FORCE
	$(call write_stamp,$@,$(CPU_CC) $(CFLAGS) $(LDLIBS) | $(CC))

train_gpt2: train_gpt2.c $(HEADERS) build/cpu.flags
	$(CPU_CC) $(CFLAGS) -o $@ $< $(LDLIBS)

test_gpt2: test_gpt2.c train_gpt2.c $(HEADERS) $(TEST_HEADERS) build/cpu.flags
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# train_gpt2 with AddressSanitizer and UBSan, for the hostile inputs of dev/test/test_sanitize.py. The
# same flags (vector width, OpenMP, MPI) as train_gpt2, so that the same code paths run; -O1 keeps the
# reports' stacks readable. A UBSan finding stops the program, as an ASan one does: what runs after
# undefined behaviour proves nothing.
SAN_CFLAGS = $(CFLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
build/sanitize.flags: FORCE
	$(call write_stamp,$@,$(CPU_CC) $(SAN_CFLAGS) $(LDLIBS))

build/sanitize/train_gpt2: train_gpt2.c $(HEADERS) build/sanitize.flags
	@mkdir -p $(dir $@)
	$(CPU_CC) $(SAN_CFLAGS) -o $@ $< $(LDLIBS)
sanitize: build/sanitize/train_gpt2

# ---------------------------------------------------------------------------------------------
# CUDA. nvcc from PATH or /usr/local/cuda; GPU_ARCH picks the targets (default sm_80 and sm_90).
#   make train_gpt2cu GPU_ARCH=90        one architecture (faster to build)
#   make train_gpt2cu NO_MPI=1           without MPI (single process, NCCL world size 1)
#   make train_gpt2cu NCCL_HOME=/path    NCCL from there (include/nccl.h, lib/libnccl.so*)
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
GPU_ARCH ?= 80 90
NVCC_GENCODE = $(foreach a,$(GPU_ARCH),-gencode arch=compute_$(a),code=sm_$(a))
NVCC_FLAGS = -O3 -std=c++17 --use_fast_math -lineinfo $(NVCC_GENCODE) \
             -Xcompiler -Wall,-Wextra,-Wno-unused-function,-Wno-unused-parameter
NVCC_LIBS = -lcublas -lcublasLt
# NCCL: NCCL_HOME if given; else the toolkit's or the system's (nccl.h in CUDA_HOME/include or
# /usr/include); else pip's nvidia-nccl-cu12 (the one PyTorch uses), found through $(PYTHON).
# pip's package ships lib/libnccl.so.2 without a libnccl.so link: it is linked by that file name,
# with an rpath so the binary finds it at run time.
ifeq ($(NCCL_HOME),)
  ifneq ($(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h),)
    NCCL_FOUND := system ($(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h)))
    NVCC_LIBS += -lnccl
  else
    NCCL_HOME := $(shell $(PYTHON) -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
  endif
endif
ifneq ($(NCCL_HOME),)
  ifneq ($(wildcard $(NCCL_HOME)/include/nccl.h),)
    NCCL_FOUND := $(NCCL_HOME)
    NVCC_FLAGS += -I$(NCCL_HOME)/include
    NVCC_LIBS += -L$(NCCL_HOME)/lib -Xlinker -rpath=$(NCCL_HOME)/lib \
                 $(if $(wildcard $(NCCL_HOME)/lib/libnccl.so),-lnccl,-l:libnccl.so.2)
  endif
endif
CUDA_HEADERS = $(wildcard llmc/*.cuh) $(HEADERS)
# MPI for the GPU build: OpenMPI's mpicc says its flags (--showme); the C++ bindings are left out.
NVCC_MPI :=
ifneq ($(NO_MPI),1)
ifneq ($(MPICC),)
  MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null)
  MPI_LIBS := $(shell $(MPICC) --showme:link 2>/dev/null)
  ifneq ($(MPI_LIBS),)
    NVCC_MPI = -DUSE_MPI -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX $(MPI_CFLAGS) $(MPI_LIBS)
  else
    $(info MPI: $(MPICC) does not answer --showme (not OpenMPI?): train_gpt2cu is built without MPI)
  endif
endif
endif

check_nvcc:
	@if [ -z "$(NVCC)" ]; then echo "error: nvcc not found (install the CUDA toolkit or put nvcc on PATH)"; exit 1; fi
	@if [ -z "$(NCCL_FOUND)" ]; then echo "error: NCCL not found: no nccl.h in $(CUDA_HOME)/include or /usr/include$(if $(NCCL_HOME), or $(NCCL_HOME)/include), and no pip package nvidia-nccl-cu12 for $(PYTHON) (pip install nvidia-nccl-cu12, apt install libnccl-dev, or make NCCL_HOME=/path/to/nccl)"; exit 1; fi
	@echo "CUDA: $(NVCC), GPU_ARCH=$(GPU_ARCH), NCCL: $(NCCL_FOUND), MPI: $(if $(NVCC_MPI),yes (mpirun -np N ./train_gpt2cu),no (single process, NCCL world size 1))"

build/cuda.flags: FORCE
	$(call write_stamp,$@,$(NVCC) $(NVCC_FLAGS) $(NVCC_LIBS) $(NVCC_MPI))

train_gpt2cu: train_gpt2.cu $(CUDA_HEADERS) build/cuda.flags | check_nvcc
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(NVCC_LIBS) $(NVCC_MPI)

test_gpt2cu: test_gpt2.cu train_gpt2.cu $(CUDA_HEADERS) $(TEST_HEADERS) build/cuda.flags | check_nvcc
	$(NVCC) $(NVCC_FLAGS) -o $@ $< $(NVCC_LIBS) $(NVCC_MPI)

# The fp32 build: floatX = float (llmc/cuda_common.cuh), fp32 cuBLASLt operands, no bf16 anywhere. A
# debugging aid: its gradients match train_gpt2's to fp32 precision (dev/test/test_cuda_fp32.py).
train_gpt2fp32cu: train_gpt2.cu $(CUDA_HEADERS) build/cuda.flags | check_nvcc
	$(NVCC) $(NVCC_FLAGS) -DENABLE_FP32 -o $@ $< $(NVCC_LIBS) $(NVCC_MPI)
test_gpt2fp32cu: test_gpt2.cu train_gpt2.cu $(CUDA_HEADERS) $(TEST_HEADERS) build/cuda.flags | check_nvcc
	$(NVCC) $(NVCC_FLAGS) -DENABLE_FP32 -o $@ $< $(NVCC_LIBS) $(NVCC_MPI)

# ---------------------------------------------------------------------------------------------
# The same CUDA programs compiled with g++ and run on the CPU (no GPU needed): see dev/cpucuda/README.md
include dev/cpucuda/cpucuda.mk

# ---------------------------------------------------------------------------------------------
# Data for the quick start: tinyshakespeare, downloaded, or from a local copy (INPUT=path).
tinyshakespeare:
	$(PYTHON) dev/data/tinyshakespeare.py $(if $(INPUT),--input $(INPUT))

test: train_gpt2 test_gpt2 train_gpt2cu test_gpt2cu train_gpt2fp32cu cpucuda cpucuda-fp32 cpucuda-asan cpucuda-ucontext sanitize
	$(PYTHON) dev/test/run_tests.py

# The inner loop: the subset of make test in dev/test/run_tests.py's CHECK, about a minute once built;
# it needs neither nvcc's builds nor the AddressSanitizer and fp32 emulations. make test stays the suite.
check: train_gpt2 test_gpt2 cpucuda
	$(PYTHON) dev/test/run_tests.py --check

# the C compiler's flags as this Makefile builds with them (dev/test/test_cpu_vector.py builds a variant)
print-cflags:
	@echo $(CFLAGS)

clean:
	rm -f train_gpt2 test_gpt2 train_gpt2cu test_gpt2cu train_gpt2fp32cu test_gpt2fp32cu
	rm -rf build/test build/cpu.flags build/cuda.flags build/cpucuda build/cpucuda.flags build/sanitize build/sanitize.flags

FORCE:
.PHONY: test check clean print-cflags check_nvcc tinyshakespeare sanitize FORCE
