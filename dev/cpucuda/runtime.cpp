// runtime.cpp: the runtime behind cpucuda.h: fibers and the block scheduler, warp and block barriers,
// and the subset of the CUDA runtime API the project calls ("device" memory is host memory, every
// stream is synchronous).
#include "cpucuda.h"
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#undef asm   // the context switch below is ours, not a kernel's inline PTX

// x86-64 has a hand-written context switch (six callee-saved registers: fast); elsewhere, or with
// -DCPUCUDA_UCONTEXT, POSIX ucontext does the same job portably (slower: it saves the signal mask).
#if !defined(__x86_64__) && !defined(CPUCUDA_UCONTEXT)
#define CPUCUDA_UCONTEXT 1
#endif
#ifdef CPUCUDA_UCONTEXT
#include <ucontext.h>
#endif

namespace cpucuda {

thread_local ThreadState* tls_thread = nullptr;
thread_local BlockState* tls_block = nullptr;

[[noreturn]] void fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "[cpucuda] ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

static int env_int(const char* name, int dflt) {
    const char* s = getenv(name);
    return (s && *s) ? atoi(s) : dflt;
}

// ----------------------------------------------------------------------------------------------
// context switch

#ifndef CPUCUDA_UCONTEXT
// switch(save, to): pushes the callee-saved registers, saves rsp in *save, loads `to` as rsp, pops.
// (The FP control state is shared by the fibers of an OS thread; kernels do not change it.)
extern "C" void cpucuda_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.globl cpucuda_switch
.type cpucuda_switch,@function
cpucuda_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cpucuda_switch,.-cpucuda_switch
.section .note.GNU-stack,"",@progbits
.text
)");
struct Context { void* sp = nullptr; };
static void context_switch(Context* from, Context* to) { cpucuda_switch(&from->sp, to->sp); }
// a fresh context that starts in entry() on the stack below `top` (16-byte aligned)
static void context_make(Context* c, char* top, void (*entry)()) {
    uint64_t* sp = reinterpret_cast<uint64_t*>(top) - 8;   // after 6 pops and ret, rsp % 16 == 8 as after a call
    for (int r = 0; r < 6; r++) sp[r] = 0;
    sp[6] = (uint64_t)(void*)entry;
    sp[7] = 0;
    c->sp = sp;
}
#else
struct Context { ucontext_t uc; };
static void context_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
static void context_make(Context* c, char* top, void (*entry)(), size_t stack_bytes) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = top - stack_bytes;
    c->uc.uc_stack.ss_size = stack_bytes;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}
#endif

// ----------------------------------------------------------------------------------------------
// one block's fibers and barriers

enum FiberState { F_READY, F_WAIT_WARP, F_WAIT_BLOCK, F_EXITED };

struct Fiber {
    Context ctx;
    char* stack_top = nullptr;
    ThreadState ts;
    int state = F_READY;
};

struct Warp {
    unsigned live = 0, arrived = 0, mask = 0;
    int op = 0;
    unsigned gen = 0;
    uint64_t slot[2][32];   // double-buffered by generation: a lane may enter the next exchange early
};

static const char* warp_op_name(int op) {
    switch (op) {
        case W_SHFL: return "__shfl_sync";
        case W_SHFL_XOR: return "__shfl_xor_sync";
        case W_SHFL_UP: return "__shfl_up_sync";
        case W_SHFL_DOWN: return "__shfl_down_sync";
        case W_BALLOT: return "__ballot/__any/__all_sync";
        case W_SYNCWARP: return "__syncwarp";
        case W_MATRIX: return "a wmma:: call";
        default: return "?";
    }
}
static const char* block_op_name(int op) {
    switch (op) {
        case B_SYNC: return "__syncthreads";
        case B_OR: return "__syncthreads_or";
        case B_AND: return "__syncthreads_and";
        case B_COUNT: return "__syncthreads_count";
        default: return "?";
    }
}

#define MAX_BLOCK_THREADS 1024

struct Worker {
    std::vector<Fiber> fibers;
    size_t stack_bytes = 0;
    Context main_ctx;
    int cur = -1;
    int n = 0, alive = 0;
    std::vector<int> queue;   // ready fibers, circular
    size_t qhead = 0, qsize = 0;
    uint64_t rng = 0;
    bool random_sched = false;
    int live = 0, arrived = 0, op = 0, acc = 0;   // the block barrier
    unsigned gen = 0;
    int result[2] = {0, 0};
    Warp warps[MAX_BLOCK_THREADS / 32];
    BlockState bs;
    Thunk thunk = nullptr;
    void* closure = nullptr;
    char* stacks = nullptr;
    size_t stacks_bytes = 0;
    ~Worker() {
        if (stacks) munmap(stacks, stacks_bytes);
        free(bs.warp_scratch);
    }
};
static thread_local Worker* W = nullptr;

static void push_ready(int i) {
    Worker& w = *W;
    w.queue[(w.qhead + w.qsize) % w.queue.size()] = i;
    w.qsize++;
}
// the next fiber to run: first in first out, or a random one with CPUCUDA_SCHED_SEED
static int pop_ready() {
    Worker& w = *W;
    if (w.qsize == 0) return -1;
    if (w.random_sched && w.qsize > 1) {
        w.rng ^= w.rng << 13; w.rng ^= w.rng >> 7; w.rng ^= w.rng << 17;
        size_t k = w.rng % w.qsize;
        std::swap(w.queue[w.qhead % w.queue.size()], w.queue[(w.qhead + k) % w.queue.size()]);
    }
    int i = w.queue[w.qhead % w.queue.size()];
    w.qhead = (w.qhead + 1) % w.queue.size();
    w.qsize--;
    return i;
}

// "kernel K, block (x,y,z) of grid (..), blockDim (..)"
static const char* where_in_grid() {
    static thread_local char buf[320];
    const BlockState& b = W->bs;
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), blockDim (%u,%u,%u)", b.kernel, b.bid.x, b.bid.y,
             b.bid.z, b.gdim.x, b.gdim.y, b.gdim.z, b.bdim.x, b.bdim.y, b.bdim.z);
    return buf;
}
static const char* thread_name(const ThreadState& t) {
    static thread_local char buf[64];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t.tid.x, t.tid.y, t.tid.z);
    return buf;
}

// The current fiber blocks or exits: run the next ready fiber of the block, or return to the
// scheduler when none is ready (the block is done, or deadlocked).
static void switch_away(Context* save) {
    int i = pop_ready();
    if (i < 0) { context_switch(save, &W->main_ctx); return; }
    W->cur = i;
    tls_thread = &W->fibers[i].ts;
    context_switch(save, &W->fibers[i].ctx);
}
static void block_current_fiber(int state) {
    W->fibers[W->cur].state = state;
    switch_away(&W->fibers[W->cur].ctx);
}

static void complete_block_barrier() {
    Worker& w = *W;
    w.result[w.gen & 1] = w.acc;
    w.gen++;
    w.arrived = 0;
    for (int i = 0; i < w.n; i++)
        if (w.fibers[i].state == F_WAIT_BLOCK) { w.fibers[i].state = F_READY; push_ready(i); }
}

// A thread that returns no longer takes part in barriers. A warp partner waiting for it is an error
// (it would hang a GPU); threads waiting in __syncthreads are released when the rest have arrived
// (what current GPUs do), unless CPUCUDA_STRICT=1 makes that an error too.
static void fiber_exit() {
    Worker& w = *W;
    Fiber& f = w.fibers[w.cur];
    f.state = F_EXITED;
    w.alive--;
    w.live--;
    const unsigned lane = f.ts.lin % 32;
    Warp& wp = w.warps[f.ts.lin / 32];
    wp.live &= ~(1u << lane);
    if (wp.arrived != 0 && (wp.mask & (1u << lane)))
        fatal("%s (lane %u) returned while lanes 0x%08x of its warp wait for it in %s (mask 0x%08x); %s", thread_name(f.ts), lane,
              wp.arrived, warp_op_name(wp.op), wp.mask, where_in_grid());
    if (w.arrived > 0) {
        static const int strict = env_int("CPUCUDA_STRICT", 0);
        if (strict)
            fatal("%s returned while %d threads wait in %s (CPUCUDA_STRICT=1); %s", thread_name(f.ts), w.arrived,
                  block_op_name(w.op), where_in_grid());
        if (w.arrived == w.live) complete_block_barrier();
    }
}

static void fiber_entry() {
    W->thunk(W->closure);
    fiber_exit();
    Context dead;
    switch_away(&dead);
    fatal("an exited fiber was resumed");
}

[[noreturn]] static void report_deadlock() {
    Worker& w = *W;
    fflush(stdout);
    fprintf(stderr, "[cpucuda] deadlock in %s: %d threads alive, none can run\n", where_in_grid(), w.alive);
    if (w.arrived > 0) {
        fprintf(stderr, "  %d of %d live threads wait in %s; not there:", w.arrived, w.live, block_op_name(w.op));
        int shown = 0;
        for (int i = 0; i < w.n && shown < 8; i++)
            if (w.fibers[i].state != F_EXITED && w.fibers[i].state != F_WAIT_BLOCK) { fprintf(stderr, " %s", thread_name(w.fibers[i].ts)); shown++; }
        fprintf(stderr, "\n");
    }
    for (int k = 0; k < (w.n + 31) / 32; k++) {
        const Warp& wp = w.warps[k];
        if (wp.arrived)
            fprintf(stderr, "  warp %d: lanes 0x%08x wait in %s (mask 0x%08x) for lanes 0x%08x\n", k, wp.arrived,
                    warp_op_name(wp.op), wp.mask, wp.mask & ~wp.arrived);
    }
    fatal("deadlock: a barrier that not every thread reaches (a __syncthreads or warp intrinsic under a divergent branch)");
}

static void run_block(unsigned long long b) {
    Worker& w = *W;
    BlockState& bs = w.bs;
    bs.bid.x = (unsigned)(b % bs.gdim.x);
    bs.bid.y = (unsigned)((b / bs.gdim.x) % bs.gdim.y);
    bs.bid.z = (unsigned)(b / ((unsigned long long)bs.gdim.x * bs.gdim.y));
    if (bs.dyn_smem_bytes) memset(bs.dyn_smem, 0xff, bs.dyn_smem_bytes);   // NaN bytes: a read before any write shows
    const int n = w.n;
    w.alive = n; w.live = n; w.arrived = 0; w.op = 0; w.gen = 0; w.acc = 0;
    for (int k = 0; k < (n + 31) / 32; k++) {
        Warp& wp = w.warps[k];
        int lanes = std::min(32, n - 32 * k);
        wp.live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
        wp.arrived = 0; wp.mask = 0; wp.op = 0; wp.gen = 0;
    }
    w.qhead = 0; w.qsize = 0;
    const unsigned bx = bs.bdim.x, by = bs.bdim.y;
    for (int t = 0; t < n; t++) {
        Fiber& f = w.fibers[t];
        f.ts.lin = (unsigned)t;
        f.ts.tid.x = t % bx; f.ts.tid.y = (t / bx) % by; f.ts.tid.z = t / (bx * by);
        f.state = F_READY;
#if defined(__SANITIZE_ADDRESS__)
        // frames that an exited fiber left behind never returned: clear their redzones in ASan's shadow
        __asan_unpoison_memory_region(f.stack_top - w.stack_bytes, w.stack_bytes);
#endif
#ifdef CPUCUDA_UCONTEXT
        context_make(&f.ctx, f.stack_top, fiber_entry, w.stack_bytes);
#else
        context_make(&f.ctx, f.stack_top, fiber_entry);
#endif
        push_ready(t);
    }
    int i = pop_ready();
    w.cur = i;
    tls_thread = &w.fibers[i].ts;
    context_switch(&w.main_ctx, &w.fibers[i].ctx);   // back here when no fiber of the block can run
    if (w.alive > 0) report_deadlock();
    tls_thread = nullptr;
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int src, WarpOp op) {
    Worker& w = *W;
    Fiber& f = w.fibers[w.cur];
    const unsigned lane = f.ts.lin % 32;
    Warp& wp = w.warps[f.ts.lin / 32];
    if (!(mask & (1u << lane)))
        fatal("%s by %s: its own lane %u is not in mask 0x%08x; %s", warp_op_name(op), thread_name(f.ts), lane, mask, where_in_grid());
    if (mask & ~wp.live)
        fatal("%s by %s: mask 0x%08x names lanes that returned or do not exist (live 0x%08x); %s", warp_op_name(op),
              thread_name(f.ts), mask, wp.live, where_in_grid());
    if (wp.arrived == 0) { wp.mask = mask; wp.op = op; }
    else if (wp.mask != mask || wp.op != op)
        fatal("divergent warp: %s calls %s (mask 0x%08x) while lanes 0x%08x wait in %s (mask 0x%08x); %s", thread_name(f.ts),
              warp_op_name(op), mask, wp.arrived, warp_op_name(wp.op), wp.mask, where_in_grid());
    const unsigned par = wp.gen & 1;
    wp.slot[par][lane] = value;
    wp.arrived |= 1u << lane;
    if ((wp.arrived & mask) == mask) {   // the last lane in: release the others
        wp.gen++;
        wp.arrived = 0;
        const int base = (int)(f.ts.lin / 32) * 32;
        for (int l = 0; l < 32; l++) {
            if ((mask & (1u << l)) && l != (int)lane) {
                Fiber& g = w.fibers[base + l];
                if (g.state == F_WAIT_WARP) { g.state = F_READY; push_ready(base + l); }
            }
        }
    } else {
        block_current_fiber(F_WAIT_WARP);
    }
    if (op == W_BALLOT) {
        uint64_t r = 0;
        for (int l = 0; l < 32; l++) if ((mask & (1u << l)) && wp.slot[par][l]) r |= 1ull << l;
        return r;
    }
    if (op == W_SYNCWARP || op == W_MATRIX) return 0;
    if (src < 0 || src > 31 || !(mask & (1u << src)))
        fatal("%s by %s reads lane %d, which is not in mask 0x%08x (undefined on a GPU); %s", warp_op_name(op), thread_name(f.ts),
              src, mask, where_in_grid());
    return wp.slot[par][src];
}

unsigned warp_ballot(unsigned mask, int pred) { return (unsigned)warp_exchange(mask, pred != 0, 0, W_BALLOT); }
void warp_sync(unsigned mask, WarpOp op) { (void)warp_exchange(mask, 0, 0, op); }

int block_barrier(BlockOp op, int pred) {
    Worker& w = *W;
    Fiber& f = w.fibers[w.cur];
    if (w.arrived == 0) { w.op = op; w.acc = (op == B_AND) ? 1 : 0; }
    else if (w.op != op)
        fatal("%s calls %s while %d threads wait in %s; %s", thread_name(f.ts), block_op_name(op), w.arrived, block_op_name(w.op),
              where_in_grid());
    const int p = pred != 0;
    if (op == B_OR) w.acc |= p; else if (op == B_AND) w.acc &= p; else if (op == B_COUNT) w.acc += p;
    const unsigned par = w.gen & 1;
    w.arrived++;
    if (w.arrived == w.live) complete_block_barrier();
    else block_current_fiber(F_WAIT_BLOCK);
    return w.result[par];
}

// ----------------------------------------------------------------------------------------------
// workers: a pool of OS threads; the blocks of a launch are handed out by an atomic counter

static void worker_init(Worker& w) {
    w.stack_bytes = (size_t)env_int("CPUCUDA_STACK_KB", 64) * 1024;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    w.stack_bytes = (w.stack_bytes + page - 1) / page * page;
    const size_t per = w.stack_bytes + page;   // + a guard page below each stack: an overflow faults
    w.stacks_bytes = per * MAX_BLOCK_THREADS;
    char* stacks = (char*)mmap(nullptr, w.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stacks == MAP_FAILED) fatal("mmap of %zu bytes of fiber stacks failed", w.stacks_bytes);
    w.stacks = stacks;
    w.fibers.resize(MAX_BLOCK_THREADS);
    for (int i = 0; i < MAX_BLOCK_THREADS; i++) {
        char* base = stacks + per * i;
        if (mprotect(base, page, PROT_NONE) != 0) fatal("mprotect of a fiber stack guard page failed");
        w.fibers[i].stack_top = base + per;
    }
    w.queue.resize(MAX_BLOCK_THREADS);
    w.bs.warp_scratch = calloc(MAX_BLOCK_THREADS / 32, CPUCUDA_WARP_SCRATCH);
    if (!w.bs.warp_scratch) fatal("out of memory for the warp scratch");
    const char* seed = getenv("CPUCUDA_SCHED_SEED");
    w.random_sched = seed && *seed;
    w.rng = w.random_sched ? (strtoull(seed, nullptr, 10) * 0x9E3779B97F4A7C15ull) | 1 : 1;
}

struct Job {
    const char* kernel;
    dim3 grid, block;
    size_t smem;
    Thunk thunk;
    void* closure;
    unsigned long long nblocks;
    std::atomic<unsigned long long> next{0};
};

static void run_job(Job& job, Worker& w) {
    W = &w;
    w.bs.kernel = job.kernel;
    w.bs.gdim = job.grid; w.bs.bdim = job.block;
    w.n = (int)(job.block.x * job.block.y * job.block.z);
    w.thunk = job.thunk; w.closure = job.closure;
    // exactly the bytes the launch asked for, fresh each launch, so AddressSanitizer sees an overrun
    w.bs.dyn_smem_bytes = job.smem;
    w.bs.dyn_smem = job.smem ? malloc(job.smem) : nullptr;
    if (job.smem && !w.bs.dyn_smem) fatal("out of memory for %zu bytes of dynamic shared memory", job.smem);
    tls_block = &w.bs;
    if (w.random_sched) w.rng ^= job.nblocks * 0x2545F4914F6CDD1Dull;
    for (;;) {
        unsigned long long b = job.next.fetch_add(1);
        if (b >= job.nblocks) break;
        run_block(b);
    }
    free(w.bs.dyn_smem);
    w.bs.dyn_smem = nullptr;
    tls_block = nullptr;
}

struct Pool {
    std::vector<std::thread> threads;
    std::vector<std::unique_ptr<Worker>> workers;
    std::mutex mu;
    std::condition_variable cv, done_cv;
    Job* job = nullptr;
    unsigned long long gen = 0;
    int running = 0;
    bool stop = false;
    Worker main_worker;

    Pool() {
        worker_init(main_worker);
        int nt = env_int("CPUCUDA_THREADS", (int)std::thread::hardware_concurrency());
        if (nt < 1) nt = 1;
        for (int i = 1; i < nt; i++) {
            workers.emplace_back(new Worker());
            Worker* w = workers.back().get();
            worker_init(*w);
            threads.emplace_back([this, w]() {
                unsigned long long seen = 0;
                for (;;) {
                    Job* j;
                    {
                        std::unique_lock<std::mutex> lk(mu);
                        cv.wait(lk, [&] { return stop || gen != seen; });
                        if (stop) return;
                        seen = gen;
                        j = job;
                    }
                    run_job(*j, *w);
                    std::lock_guard<std::mutex> lk(mu);
                    if (--running == 0) done_cv.notify_all();
                }
            });
        }
    }
    ~Pool() {
        { std::lock_guard<std::mutex> lk(mu); stop = true; }
        cv.notify_all();
        for (auto& t : threads) t.join();
    }
    void run(Job& j) {
        if (threads.empty() || j.nblocks == 1) { run_job(j, main_worker); return; }
        {
            std::lock_guard<std::mutex> lk(mu);
            job = &j; running = (int)threads.size(); gen++;
        }
        cv.notify_all();
        run_job(j, main_worker);
        std::unique_lock<std::mutex> lk(mu);
        done_cv.wait(lk, [&] { return running == 0; });
    }
};
static Pool& pool() { static Pool p; return p; }

static thread_local cudaError_t last_error = cudaSuccess;
static void set_error(cudaError_t e) { if (last_error == cudaSuccess) last_error = e; }
static size_t max_dynamic_smem = 48 * 1024;   // raised by cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
#define DEVICE_MAX_SMEM (227 * 1024)          // an H100's opt-in limit per block

void launch_grid(const char* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t, Thunk thunk, void* closure) {
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0 || nthreads > MAX_BLOCK_THREADS ||
        block.z > 64 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
        set_error(cudaErrorInvalidConfiguration);
        return;
    }
    if (smem > max_dynamic_smem) { set_error(cudaErrorInvalidValue); return; }
    Job j;
    j.kernel = kernel;
    j.grid = grid; j.block = block; j.smem = smem; j.thunk = thunk; j.closure = closure;
    j.nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    pool().run(j);
}

// ----------------------------------------------------------------------------------------------
// device memory: host memory with cudaMalloc's guarantees (256-byte alignment, contents not zero)

static std::mutex alloc_mu;
// Never destroyed: device memory a program does not free is released with its context, not leaked,
// so it must stay reachable for LeakSanitizer's check at exit (which runs after static destructors).
static std::map<uintptr_t, size_t>& allocations = *new std::map<uintptr_t, size_t>();

static void* tracked_alloc(size_t n) {
    void* p = nullptr;
    // the exact size, so AddressSanitizer's redzone starts right after the last byte asked for
    if (posix_memalign(&p, 256, n ? n : 1) != 0) return nullptr;
    memset(p, 0xA5, n ? n : 1);
    std::lock_guard<std::mutex> lk(alloc_mu);
    allocations[(uintptr_t)p] = n;
    return p;
}
static bool tracked_free(void* p) {
    if (!p) return true;
    std::lock_guard<std::mutex> lk(alloc_mu);
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) return false;
    allocations.erase(it);
    free(p);
    return true;
}

struct Event { std::chrono::steady_clock::time_point t; bool recorded = false; };

static int device_count() { return std::max(1, env_int("CPUCUDA_DEVICES", 8)); }
static thread_local int current_device = 0;

} // namespace cpucuda

using namespace cpucuda;

extern "C" {

cudaError_t cudaMalloc(void** p, size_t n) {
    *p = tracked_alloc(n);
    if (!*p) { set_error(cudaErrorMemoryAllocation); return cudaErrorMemoryAllocation; }
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
    if (tracked_free(p)) return cudaSuccess;
    set_error(cudaErrorInvalidValue);
    return cudaErrorInvalidValue;
}
cudaError_t cudaMallocHost(void** p, size_t n) { *p = malloc(n ? n : 1); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaFreeHost(void* p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { if (n) memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { if (n) memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemset(void* d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaGetLastError(void) { cudaError_t e = last_error; last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError(void) { return last_error; }
const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorNotReady: return "device not ready";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        default: return "unknown error (cpucuda)";
    }
}
const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorNotReady: return "cudaErrorNotReady";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        default: return "cudaErrorUnknown";
    }
}
// CPUCUDA_DEVICES "GPUs" (default 8), so one node can hold mpirun -np P ranks with one device each
cudaError_t cudaSetDevice(int d) {
    if (d < 0 || d >= device_count()) return cudaErrorInvalidDevice;
    current_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) { *d = current_device; return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int* n) { *n = device_count(); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute attr, int value) {
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > DEVICE_MAX_SMEM) return cudaErrorInvalidValue;
        if ((size_t)value > max_dynamic_smem) max_dynamic_smem = (size_t)value;
    }
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "cpucuda (CPU emulation)");
    p->major = 9; p->minor = 0;
    p->multiProcessorCount = (int)std::thread::hardware_concurrency();
    p->totalGlobalMem = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    p->l2CacheSize = 1 << 20;
    p->warpSize = 32;
    p->maxThreadsPerBlock = MAX_BLOCK_THREADS;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = DEVICE_MAX_SMEM;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
    switch (a) {
        case cudaDevAttrL2CacheSize: *v = 1 << 20; break;
        case cudaDevAttrMultiProcessorCount: *v = (int)std::thread::hardware_concurrency(); break;
        case cudaDevAttrMaxThreadsPerBlock: *v = MAX_BLOCK_THREADS; break;
        case cudaDevAttrWarpSize: *v = 32; break;
        case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
        case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
        case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = DEVICE_MAX_SMEM; break;
        default: *v = 0; break;
    }
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* fr, size_t* total) {
    *total = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    *fr = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = reinterpret_cast<cudaStream_t>(new char(0)); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete reinterpret_cast<char*>(s); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = reinterpret_cast<cudaEvent_t>(new Event()); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<Event*>(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    Event* ev = reinterpret_cast<Event*>(e);
    ev->t = std::chrono::steady_clock::now();
    ev->recorded = true;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    Event* x = reinterpret_cast<Event*>(a);
    Event* y = reinterpret_cast<Event*>(b);
    if (!x->recorded || !y->recorded) return cudaErrorInvalidResourceHandle;
    *ms = std::chrono::duration<float, std::milli>(y->t - x->t).count();
    return cudaSuccess;
}

} // extern "C"
