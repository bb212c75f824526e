// CPU emulation of the CUDA subset used by kernels/*.cu, force-included when
// build.rs compiles the kernels as host C++17 (feature `cuda-emu`).
//
// Execution model: a launch runs the blocks of its grid one after another; the
// threads of a block are real std::threads (a pool reused across launches)
// that meet at a barrier for __syncthreads. `__shared__` variables become function-local statics: one
// copy shared by the block's threads, reused by the next block (which, as on
// a GPU, must initialise them). Warps are 32 consecutive threads; shuffles and
// votes exchange values through per-lane slots and one warp barrier, so
// they require all 32 lanes to take part (the kernels only use full masks in
// converged code). Atomics are GCC __atomic builtins. Launches are serialised
// by one process-wide mutex because the statics are global.
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
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

// Sleeps while *addr == expected / wakes every sleeper on addr. On Linux a
// futex (no mutex: waking a block does not convoy its threads through one
// lock); elsewhere a short sleep-poll.
inline void wait_while_equal(std::atomic<unsigned>* addr, unsigned expected) {
    for (unsigned spin = 0; spin < 64; ++spin) {
        if (addr->load(std::memory_order_acquire) != expected) return;
    }
    while (addr->load(std::memory_order_acquire) == expected) {
#ifdef __linux__
        syscall(SYS_futex, reinterpret_cast<unsigned*>(addr), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
        std::this_thread::sleep_for(std::chrono::microseconds(20));
#endif
    }
}
inline void wake_all(std::atomic<unsigned>* addr) {
#ifdef __linux__
    syscall(SYS_futex, reinterpret_cast<unsigned*>(addr), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
#else
    (void)addr;
#endif
}

// A reusable barrier for a fixed number of threads: an arrival counter and a
// generation number; the last thread to arrive resets the counter, advances
// the generation and wakes the others.
class Barrier {
   public:
    explicit Barrier(unsigned count) : count_(count) {}
    void wait() {
        const unsigned gen = gen_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == count_) {
            arrived_.store(0, std::memory_order_relaxed);
            gen_.fetch_add(1, std::memory_order_acq_rel);
            wake_all(&gen_);
            return;
        }
        wait_while_equal(&gen_, gen);
    }

   private:
    const unsigned count_;
    std::atomic<unsigned> arrived_{0};
    std::atomic<unsigned> gen_{0};
};

// State shared by the threads of the running block.
struct Block {
    explicit Block(unsigned threads) : sync(threads), slots(2 * threads, 0), parity(threads, 0) {
        for (unsigned w = 0; w < threads / 32; ++w) warps.emplace_back(new Barrier(32));
    }
    ~Block() {
        for (Barrier* b : warps) delete b;
    }
    Barrier sync;
    std::vector<Barrier*> warps;
    // Two banks of one slot per thread, used alternately by successive warp
    // exchanges, so one warp barrier per exchange suffices: a lane can only
    // reuse a bank after the next exchange's barrier, which every lane
    // reaches only after reading the previous one.
    std::vector<unsigned long long> slots;
    std::vector<unsigned char> parity;
};

inline thread_local Block* current = nullptr;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

// The emulated "SMs": one pool of worker threads, created on first use and
// reused by every launch (spawning a block's worth of threads per launch
// costs more than most kernels). Worker t plays threadIdx.x = t. A launch
// publishes the job and bumps `job_`; every worker (also those past the
// block size, which just report back) decrements `remaining_` when done.
class Pool {
   public:
    // Runs `body` as `grid` blocks of `block` threads; returns when all
    // blocks are done. Callers hold launch_mutex().
    int run(unsigned grid, unsigned block, const std::function<void()>& body) {
        Block state(block);
        while (threads_ < block) {
            try {
                std::thread(&Pool::worker, this, threads_, job_.load(std::memory_order_acquire)).detach();
            } catch (const std::exception&) {
                return 1;
            }
            ++threads_;
        }
        body_ = &body;
        grid_ = grid;
        block_ = block;
        state_ = &state;
        remaining_.store(threads_, std::memory_order_relaxed);
        job_.fetch_add(1, std::memory_order_acq_rel);
        wake_all(&job_);
        for (unsigned r; (r = remaining_.load(std::memory_order_acquire)) != 0;) wait_while_equal(&remaining_, r);
        return 0;
    }

   private:
    void worker(unsigned t, unsigned seen) {
        for (;;) {
            wait_while_equal(&job_, seen);
            seen = job_.load(std::memory_order_acquire);
            if (t < block_) {
                Block* state = state_;
                current = state;
                threadIdx = uint3{t, 0, 0};
                blockDim = dim3{block_, 1, 1};
                gridDim = dim3{grid_, 1, 1};
                for (unsigned b = 0; b < grid_; ++b) {
                    blockIdx = uint3{b, 0, 0};
                    (*body_)();
                    // The block ends for every thread before the next begins.
                    state->sync.wait();
                }
                current = nullptr;
            }
            if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) wake_all(&remaining_);
        }
    }

    unsigned threads_ = 0;
    std::atomic<unsigned> job_{0};
    std::atomic<unsigned> remaining_{0};
    // Written by the launcher before `job_` is bumped, read by workers after.
    const std::function<void()>* body_ = nullptr;
    unsigned grid_ = 0, block_ = 0;
    Block* state_ = nullptr;
};

// Runs `body` as a grid of `grid` blocks of `block` threads (block a multiple
// of 32, at most 1024). Returns 0, 1 if a worker could not be started, 2 for a
// bad block size.
template <class F>
int launch(unsigned grid, unsigned block, F body) {
    if (block == 0 || block % 32 != 0 || block > 1024) return 2;
    std::lock_guard<std::mutex> guard(launch_mutex());
    // Never destroyed: detached workers may outlive static destructors.
    static Pool* pool = new Pool();
    const std::function<void()> job(body);
    return pool->run(grid, block, job);
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
    b->warps[warp]->wait();
    return (src >= 0 && src < 32) ? from_slot<T>(slots[warp * 32 + (unsigned)src]) : fallback;
}

}  // namespace cs_emu

inline void __syncthreads() { cs_emu::current->sync.wait(); }

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
    b->warps[warp]->wait();
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
