// CPU emulation of the CUDA subset used by kernels/*.cu, force-included when
// build.rs compiles the kernels as host C++17 (feature `cuda-emu`).
//
// Execution model: a launch runs the blocks of its grid one after another; the
// threads of a block are real std::threads that meet at a barrier for
// __syncthreads. `__shared__` variables become function-local statics: one
// copy shared by the block's threads, reused by the next block (which, as on
// a GPU, must initialise them). Warps are 32 consecutive threads; shuffles and
// votes exchange values through per-warp slots between two warp barriers, so
// they require all 32 lanes to take part (the kernels only use full masks in
// converged code). Atomics are GCC __atomic builtins. Launches are serialised
// by one process-wide mutex because the statics are global.
#ifndef CS_CUDA_EMU_H
#define CS_CUDA_EMU_H

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

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

// A reusable barrier for a fixed number of threads (generation counted).
class Barrier {
   public:
    explicit Barrier(unsigned count) : count_(count) {}
    void wait() {
        std::unique_lock<std::mutex> lock(m_);
        const unsigned long long gen = gen_;
        if (++waiting_ == count_) {
            waiting_ = 0;
            ++gen_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return gen_ != gen; });
        }
    }

   private:
    std::mutex m_;
    std::condition_variable cv_;
    unsigned count_;
    unsigned waiting_ = 0;
    unsigned long long gen_ = 0;
};

// State shared by the threads of the running block.
struct Block {
    explicit Block(unsigned threads) : sync(threads), slots(threads, 0) {
        for (unsigned w = 0; w < threads / 32; ++w) warps.emplace_back(new Barrier(32));
    }
    ~Block() {
        for (Barrier* b : warps) delete b;
    }
    Barrier sync;
    std::vector<Barrier*> warps;
    std::vector<unsigned long long> slots;
};

inline thread_local Block* current = nullptr;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

// Runs `body` as a grid of `grid` blocks of `block` threads (block a multiple
// of 32). Returns 0, or 1 if a thread could not be started.
template <class F>
int launch(unsigned grid, unsigned block, F body) {
    if (block == 0 || block % 32 != 0) return 2;
    std::lock_guard<std::mutex> guard(launch_mutex());
    Block state(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    try {
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&, t] {
                current = &state;
                threadIdx = uint3{t, 0, 0};
                blockDim = dim3{block, 1, 1};
                gridDim = dim3{grid, 1, 1};
                for (unsigned b = 0; b < grid; ++b) {
                    blockIdx = uint3{b, 0, 0};
                    body();
                    // The block ends for every thread before the next begins.
                    state.sync.wait();
                }
                current = nullptr;
            });
        }
    } catch (const std::exception&) {
        // Threads already started would wait forever at the barrier; this
        // cannot be recovered, so report it and abort the process.
        std::terminate();
    }
    for (std::thread& th : threads) th.join();
    return 0;
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
    const unsigned warp = threadIdx.x / 32;
    b->slots[threadIdx.x] = to_slot(v);
    b->warps[warp]->wait();
    T out = (src >= 0 && src < 32) ? from_slot<T>(b->slots[warp * 32 + (unsigned)src]) : fallback;
    b->warps[warp]->wait();
    return out;
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
    const unsigned warp = threadIdx.x / 32;
    b->slots[threadIdx.x] = pred ? 1u : 0u;
    b->warps[warp]->wait();
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l) r |= (unsigned)(b->slots[warp * 32 + l] != 0) << l;
    b->warps[warp]->wait();
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
