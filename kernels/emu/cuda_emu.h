// CPU emulation of the CUDA subset used by kernels/*.cu, force-included when
// build.rs compiles the kernels as host C++17 (feature `cuda-emu`).
//
// Execution model: a launch runs the blocks of its grid one after another on
// the calling thread. The threads of a block are fibers (ucontext, one stack
// each, reused across blocks and launches) scheduled cooperatively: a fiber
// runs until it reaches a barrier (__syncthreads, or the warp barrier inside
// a shuffle/vote) or returns. A block barrier releases once every live
// thread of the block waits at it, a warp barrier once every live lane of the
// warp does, exactly CUDA's rules for converged code; a state where nothing
// can run is reported as a deadlock instead of hanging. Fibers instead of OS
// threads because a barrier then costs two user-space context switches, not
// a futex wake-up of hundreds of threads on a machine with two cores.
// `__shared__` variables become function-local statics: one copy shared by
// the block's threads, reused by the next block (which, as on a GPU, must
// initialise them). Warps are 32 consecutive threads; shuffles and votes
// exchange values through per-lane slots. Atomics are GCC __atomic builtins
// (fibers never interleave inside one, but the kernels' code stays as on the
// GPU). Launches are serialised by one process-wide mutex because the
// statics are global.
#ifndef CS_CUDA_EMU_H
#define CS_CUDA_EMU_H

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>
#include <memory>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace cs_emu {

// Where a fiber stands between two runs of the scheduler.
enum class Wait : unsigned char { Run, Block, Warp, Done };

// Bytes of stack per emulated thread: the kernels' frames are small; the
// pages are only touched as far as a fiber actually goes.
constexpr std::size_t STACK_BYTES = 256 * 1024;

struct Fiber {
    ucontext_t ctx;
    Wait state = Wait::Done;
};

// State of the running block (and, for slots, of its warps' exchanges).
struct Block {
    explicit Block(unsigned threads) : threads(threads), slots(2 * threads, 0), parity(threads, 0), fibers(threads) {}
    unsigned threads;
    // Two banks of one slot per thread, used alternately by successive warp
    // exchanges, so one warp barrier per exchange suffices: a lane can only
    // reuse a bank after the next exchange's barrier, which every lane
    // reaches only after reading the previous one.
    std::vector<unsigned long long> slots;
    std::vector<unsigned char> parity;
    std::vector<Fiber> fibers;
    ucontext_t scheduler;
    const std::function<void()>* body = nullptr;
};

inline thread_local Block* current = nullptr;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

// Stacks, one per thread index, created on first use and kept (never
// destroyed: reused by every later launch).
inline char* stack_for(unsigned t) {
    static std::vector<std::unique_ptr<char[]>>* stacks = new std::vector<std::unique_ptr<char[]>>();
    while (stacks->size() <= t) stacks->emplace_back(new char[STACK_BYTES]);
    return (*stacks)[t].get();
}

// Parks the running fiber at a barrier and returns to the scheduler; returns
// when the scheduler resumes it after the barrier released.
inline void park(Wait why) {
    Block* b = current;
    Fiber& f = b->fibers[threadIdx.x];
    f.state = why;
    swapcontext(&f.ctx, &b->scheduler);
}

// Entry of every fiber: the kernel body, then back to the scheduler (uc_link).
inline void fiber_main() {
    (*current->body)();
    current->fibers[threadIdx.x].state = Wait::Done;
}

// Prepares fiber `t` to run the kernel body from its start on its stack.
// Out of line for the same reason as `resume` (getcontext returns twice).
__attribute__((noinline)) inline void start_fiber(Block& b, unsigned t) {
    Fiber& f = b.fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack_for(t);
    f.ctx.uc_stack.ss_size = STACK_BYTES;
    f.ctx.uc_link = &b.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
    f.state = Wait::Run;
}

// Switches to fiber `t` until it parks or returns. Out of line so that no
// local of the scheduler's loop lives across the returns-twice call.
__attribute__((noinline)) inline void resume(Block& b, unsigned t) {
    threadIdx = uint3{t, 0, 0};
    swapcontext(&b.scheduler, &b.fibers[t].ctx);
}

// Runs one block to completion. Returns 0, or 4 when the live threads wait at
// barriers none of which can release (a divergent barrier in a kernel).
inline int run_block(Block& b) {
    for (unsigned t = 0; t < b.threads; ++t) start_fiber(b, t);
    for (;;) {
        for (unsigned t = 0; t < b.threads; ++t) {
            Fiber& f = b.fibers[t];
            if (f.state != Wait::Run) continue;
            resume(b, t);
        }
        // Every fiber now waits at a barrier or is done: release what can go.
        bool released = false, all_done = true, all_at_block = true;
        for (unsigned w = 0; w < b.threads / 32; ++w) {
            bool warp_ready = true, any_waiting = false;
            for (unsigned l = w * 32; l < w * 32 + 32; ++l) {
                const Wait s = b.fibers[l].state;
                if (s == Wait::Done) continue;
                all_done = false;
                if (s != Wait::Block) all_at_block = false;
                if (s != Wait::Warp) warp_ready = false;
                if (s == Wait::Warp) any_waiting = true;
            }
            if (warp_ready && any_waiting) {
                for (unsigned l = w * 32; l < w * 32 + 32; ++l)
                    if (b.fibers[l].state == Wait::Warp) b.fibers[l].state = Wait::Run;
                released = true;
            }
        }
        if (all_done) return 0;
        if (!released && all_at_block) {
            for (Fiber& f : b.fibers)
                if (f.state == Wait::Block) f.state = Wait::Run;
            released = true;
        }
        if (!released) return 4;
    }
}

// Runs `body` as a grid of `grid` blocks of `block` threads (block a multiple
// of 32, at most 1024). Returns 0, 2 for a bad block size, 4 for a deadlock.
template <class F>
int launch(unsigned grid, unsigned block, F body) {
    if (block == 0 || block % 32 != 0 || block > 1024) return 2;
    std::lock_guard<std::mutex> guard(launch_mutex());
    const std::function<void()> job(body);
    Block state(block);
    state.body = &job;
    Block* outer = current;
    current = &state;
    blockDim = dim3{block, 1, 1};
    gridDim = dim3{grid, 1, 1};
    int rc = 0;
    for (unsigned g = 0; g < grid && rc == 0; ++g) {
        blockIdx = uint3{g, 0, 0};
        rc = run_block(state);
    }
    current = outer;
    return rc;
}

template <class T>
inline unsigned long long to_slot(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 64 bits");
    unsigned long long s = 0;
    std::memcpy(&s, &v, sizeof(T));
    return s;
}
template <class T>
inline T from_slot(unsigned long long s) {
    T v;
    std::memcpy(&v, &s, sizeof(T));
    return v;
}

// Publishes this lane's value and returns lane `src`'s (or `fallback` when
// `src` is outside the warp).
template <class T>
inline T exchange(T v, int src, T fallback) {
    Block* b = current;
    const unsigned t = threadIdx.x, warp = t / 32;
    const unsigned bank = b->parity[t];
    b->parity[t] ^= 1u;
    unsigned long long* slots = b->slots.data() + bank * b->parity.size();
    slots[t] = to_slot(v);
    park(Wait::Warp);
    return (src >= 0 && src < 32) ? from_slot<T>(slots[warp * 32 + (unsigned)src]) : fallback;
}

}  // namespace cs_emu

inline void __syncthreads() { cs_emu::park(cs_emu::Wait::Block); }

template <class T>
inline T __shfl_down_sync(unsigned, T v, int delta) {
    return cs_emu::exchange(v, (int)(threadIdx.x % 32) + delta, v);
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, int delta) {
    return cs_emu::exchange(v, (int)(threadIdx.x % 32) - delta, v);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
    return cs_emu::exchange(v, src & 31, v);
}
inline unsigned __ballot_sync(unsigned, int pred) {
    cs_emu::Block* b = cs_emu::current;
    const unsigned t = threadIdx.x, warp = t / 32;
    const unsigned bank = b->parity[t];
    b->parity[t] ^= 1u;
    unsigned long long* slots = b->slots.data() + bank * b->parity.size();
    slots[t] = pred ? 1u : 0u;
    cs_emu::park(cs_emu::Wait::Warp);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l) r |= (unsigned)(slots[warp * 32 + l] != 0) << l;
    return r;
}
inline int __all_sync(unsigned m, int pred) { return __ballot_sync(m, pred) == 0xffffffffu; }
inline int __any_sync(unsigned m, int pred) { return __ballot_sync(m, pred) != 0u; }

template <class T>
inline T atomicAdd(T* p, T v) {
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
}
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_ACQ_REL); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
    unsigned old = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    return old;
}

inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}
// Built with -ffp-contract=off and SSE arithmetic: each is one IEEE operation.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __clz(unsigned x) { return x == 0 ? 32 : __builtin_clz(x); }
using std::fmaxf;
using std::fminf;
template <class T>
inline T min(T a, T b) {
    return b < a ? b : a;
}
template <class T>
inline T max(T a, T b) {
    return a < b ? b : a;
}

#endif  // CS_CUDA_EMU_H
