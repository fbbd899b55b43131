# dev/cpucuda/cpucuda.mk: the CUDA programs built with g++ for the CPU emulation (included by ../../Makefile).
#   make cpucuda      build/cpucuda/{train_gpt2cu,test_gpt2cu} (with MPI when found, like train_gpt2)
#                     and every dev/cuda harness as build/cpucuda/dev/cuda/<name>
#   make cpucuda-asan the same harnesses and train_gpt2cu with AddressSanitizer, under build/cpucuda/asan/
#   make cpucuda-fp32 build/cpucuda/fp32/{train_gpt2cu,test_gpt2cu}: the fp32 build (-DENABLE_FP32, floatX = float)
# The sources are first copied to build/cpucuda/src/ through cu2cpp.pl (the launch syntax g++ cannot
# parse); then g++ compiles them with cpucuda.h force-included. No GPU, libcudart, cuBLASLt or NCCL is
# used: only the toolkit's headers, for the types.
CXX ?= g++
CPUCUDA_OUT = build/cpucuda
CPUCUDA_DIR = dev/cpucuda
CPUCUDA_HARNESSES = $(basename $(notdir $(wildcard dev/cuda/*.cu)))
CPUCUDA_SRCS = $(addprefix $(CPUCUDA_OUT)/src/,$(wildcard llmc/*.h llmc/*.cuh dev/cuda/*.h dev/cuda/*.cu dev/test/*.h) train_gpt2.cu test_gpt2.cu)
CPUCUDA_INC = -I$(CUDA_HOME)/include $(if $(NCCL_HOME),-I$(NCCL_HOME)/include)
# no -march=native: FMA contraction would then depend on the machine, and results with it
CPUCUDA_BASE = -std=c++17 -fopenmp -Wall -Wno-unused-function -Wno-unused-parameter -Wno-unused-variable \
               -Wno-unused-but-set-variable -Wno-unknown-pragmas -Wno-sign-compare -Wno-class-memaccess \
               $(CPUCUDA_INC) -include $(CPUCUDA_DIR)/cpucuda.h
CPUCUDA_OPT = -O2
CPUCUDA_ASAN = -O2 -g -fsanitize=address -fno-omit-frame-pointer
CPUCUDA_MPI = $(if $(NVCC_MPI),-DUSE_MPI -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX $(MPI_CFLAGS))
CPUCUDA_MPI_LIBS = $(if $(NVCC_MPI),$(MPI_LIBS))
CPUCUDA_RT_SRCS = $(CPUCUDA_DIR)/runtime.cpp $(CPUCUDA_DIR)/cublaslt.cpp $(CPUCUDA_DIR)/nccl.cpp
CPUCUDA_RT_DEPS = $(CPUCUDA_DIR)/cpucuda.h $(CPUCUDA_DIR)/cpucuda_wmma.h $(CPUCUDA_OUT).flags
# A program depends on the headers it includes, as g++ lists them (-MMD) in build/cpucuda/deps/<program>.d,
# not on every header: each program is one g++ compile of all it includes, and a header is in a few. The list names
# the rewritten copies under build/cpucuda/src/, which their own rule keeps up to date from the originals.
# Every copy is an order-only prerequisite: the first build, before any list exists, needs them all in place.
cpucuda_dep = $(patsubst $(CPUCUDA_OUT)/%,$(CPUCUDA_OUT)/deps/%.d,$(1))
CPUCUDA_DEPFLAGS = -MMD -MP -MT $@ -MF $(call cpucuda_dep,$@)
# g++ writes an include as it was spelled: build/cpucuda/src/dev/cuda/../../llmc/utils.h. make does not
# fold the "..", so it would take that for another file than the copy's target, one without a rule:
# checked before its copy is remade, a touched header would rebuild nothing until the next make. Only
# the copies' paths are folded (no links under build/cpucuda/src, so folding keeps them the same file).
CPUCUDA_DEPFIX = sed -i -E -e ':a' -e 's|($(CPUCUDA_OUT)/src/([^ ]*/)?)[^/. ][^/ ]*/\.\./|\1|' -e 'ta' $(call cpucuda_dep,$@)

$(CPUCUDA_OUT).flags: FORCE
	$(call write_stamp,$@,$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) $(CPUCUDA_ASAN) $(CPUCUDA_MPI) $(CPUCUDA_MPI_LIBS))

# the rewritten copy of a source file; a static pattern rule, so that make counts the copies as targets,
# never as intermediate files to delete after the build (the dependency lists name them)
$(CPUCUDA_SRCS): $(CPUCUDA_OUT)/src/%: % $(CPUCUDA_DIR)/cu2cpp.pl
	@mkdir -p $(dir $@)
	perl $(CPUCUDA_DIR)/cu2cpp.pl $< > $@

# the runtime, one object set per flavour: plain, AddressSanitizer, ucontext fibers. Static pattern
# rules, as for the copies: make would otherwise delete the objects only the asan and ucontext programs
# name, and rebuild them whenever one of those programs is out of date.
CPUCUDA_OBJS = $(patsubst $(CPUCUDA_DIR)/%.cpp,$(CPUCUDA_OUT)/obj/%.o,$(CPUCUDA_RT_SRCS))
CPUCUDA_ASAN_OBJS = $(patsubst $(CPUCUDA_DIR)/%.cpp,$(CPUCUDA_OUT)/asan/obj/%.o,$(CPUCUDA_RT_SRCS))
CPUCUDA_UCTX_OBJS = $(patsubst $(CPUCUDA_DIR)/%.cpp,$(CPUCUDA_OUT)/ucontext/obj/%.o,$(CPUCUDA_RT_SRCS))
$(CPUCUDA_OBJS): $(CPUCUDA_OUT)/obj/%.o: $(CPUCUDA_DIR)/%.cpp $(CPUCUDA_RT_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) $(CPUCUDA_MPI) -c $< -o $@
$(CPUCUDA_ASAN_OBJS): $(CPUCUDA_OUT)/asan/obj/%.o: $(CPUCUDA_DIR)/%.cpp $(CPUCUDA_RT_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_ASAN) $(CPUCUDA_MPI) -c $< -o $@
$(CPUCUDA_UCTX_OBJS): $(CPUCUDA_OUT)/ucontext/obj/%.o: $(CPUCUDA_DIR)/%.cpp $(CPUCUDA_RT_DEPS)
	@mkdir -p $(dir $@)
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) -DCPUCUDA_UCONTEXT $(CPUCUDA_MPI) -c $< -o $@

# the trainer and its test: with MPI when found; the fp32 build (-DENABLE_FP32) beside them. Two rules,
# not one with two targets: a pattern rule's targets are all made by one run of its recipe.
$(CPUCUDA_OUT)/%gpt2cu: $(CPUCUDA_OUT)/src/%gpt2.cu $(CPUCUDA_OBJS) | $(CPUCUDA_SRCS)
	@mkdir -p $(dir $@) $(dir $(call cpucuda_dep,$@))
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) $(CPUCUDA_MPI) $(CPUCUDA_DEPFLAGS) -x c++ $< -x none $(CPUCUDA_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
	@$(CPUCUDA_DEPFIX)
$(CPUCUDA_OUT)/fp32/%gpt2cu: $(CPUCUDA_OUT)/src/%gpt2.cu $(CPUCUDA_OBJS) | $(CPUCUDA_SRCS)
	@mkdir -p $(dir $@) $(dir $(call cpucuda_dep,$@))
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) -DENABLE_FP32 $(CPUCUDA_MPI) $(CPUCUDA_DEPFLAGS) -x c++ $< -x none $(CPUCUDA_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
	@$(CPUCUDA_DEPFIX)
$(CPUCUDA_OUT)/asan/%gpt2cu: $(CPUCUDA_OUT)/src/%gpt2.cu $(CPUCUDA_ASAN_OBJS) | $(CPUCUDA_SRCS)
	@mkdir -p $(dir $@) $(dir $(call cpucuda_dep,$@))
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_ASAN) $(CPUCUDA_MPI) $(CPUCUDA_DEPFLAGS) -x c++ $< -x none $(CPUCUDA_ASAN_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
	@$(CPUCUDA_DEPFIX)

# the kernel harnesses (no MPI)
$(CPUCUDA_OUT)/dev/cuda/%: $(CPUCUDA_OUT)/src/dev/cuda/%.cu $(CPUCUDA_OBJS) | $(CPUCUDA_SRCS)
	@mkdir -p $(dir $@) $(dir $(call cpucuda_dep,$@))
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) $(CPUCUDA_DEPFLAGS) -x c++ $< -x none $(CPUCUDA_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
	@$(CPUCUDA_DEPFIX)
$(CPUCUDA_OUT)/asan/dev/cuda/%: $(CPUCUDA_OUT)/src/dev/cuda/%.cu $(CPUCUDA_ASAN_OBJS) | $(CPUCUDA_SRCS)
	@mkdir -p $(dir $@) $(dir $(call cpucuda_dep,$@))
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_ASAN) $(CPUCUDA_DEPFLAGS) -x c++ $< -x none $(CPUCUDA_ASAN_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
	@$(CPUCUDA_DEPFIX)
$(CPUCUDA_OUT)/ucontext/dev/cuda/%: $(CPUCUDA_OUT)/src/dev/cuda/%.cu $(CPUCUDA_UCTX_OBJS) | $(CPUCUDA_SRCS)
	@mkdir -p $(dir $@) $(dir $(call cpucuda_dep,$@))
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) $(CPUCUDA_DEPFLAGS) -x c++ $< -x none $(CPUCUDA_UCTX_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
	@$(CPUCUDA_DEPFIX)

CPUCUDA_PROGRAMS = $(CPUCUDA_OUT)/train_gpt2cu $(CPUCUDA_OUT)/test_gpt2cu $(addprefix $(CPUCUDA_OUT)/dev/cuda/,$(CPUCUDA_HARNESSES))
CPUCUDA_ASAN_PROGRAMS = $(CPUCUDA_OUT)/asan/train_gpt2cu $(addprefix $(CPUCUDA_OUT)/asan/dev/cuda/,$(CPUCUDA_HARNESSES))

cpucuda: $(CPUCUDA_PROGRAMS)
cpucuda-asan: $(CPUCUDA_ASAN_PROGRAMS)
cpucuda-fp32: $(CPUCUDA_OUT)/fp32/train_gpt2cu $(CPUCUDA_OUT)/fp32/test_gpt2cu
cpucuda-ucontext: $(CPUCUDA_OUT)/ucontext/dev/cuda/layernorm_forward
.PHONY: cpucuda cpucuda-asan cpucuda-fp32 cpucuda-ucontext
-include $(wildcard $(call cpucuda_dep,$(CPUCUDA_PROGRAMS) $(CPUCUDA_ASAN_PROGRAMS) $(CPUCUDA_OUT)/fp32/train_gpt2cu \
                                      $(CPUCUDA_OUT)/fp32/test_gpt2cu $(CPUCUDA_OUT)/ucontext/dev/cuda/layernorm_forward))

# the emulation's own probes (dev/cpucuda/probes/probes.cu)
$(CPUCUDA_OUT)/probes: $(CPUCUDA_DIR)/probes/probes.cu $(CPUCUDA_OBJS) $(CPUCUDA_DIR)/cu2cpp.pl
	perl $(CPUCUDA_DIR)/cu2cpp.pl $< > $(CPUCUDA_OUT)/src/probes.cu
	$(CXX) $(CPUCUDA_BASE) $(CPUCUDA_OPT) -x c++ $(CPUCUDA_OUT)/src/probes.cu -x none $(CPUCUDA_OBJS) $(CPUCUDA_MPI_LIBS) -lpthread -o $@
cpucuda: $(CPUCUDA_OUT)/probes
