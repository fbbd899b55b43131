// inline_ptx.cu: must NOT compile under the CPU emulation (dev/test/test_cpucuda.py checks the error
// names the problem): inline PTX cannot be emulated, and computing something else instead would be worse.
#include <cuda_runtime.h>
__global__ void uses_ptx(unsigned* out) {
    unsigned lane;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
    out[threadIdx.x] = lane;
}
int main() { return 0; }
