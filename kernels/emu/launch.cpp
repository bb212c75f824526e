// Host entry points of the emulated kernels (feature `cuda-emu`): compiled by
// build.rs together with the kernel sources, with cuda_emu.h
// force-included. Kernel ids and argument order mirror
// src/backend/cuda/kernels.rs; every argument arrives as one 64-bit slot
// (pointers as addresses, 32-bit integers and f32 bits in the low half).
#include "../fused.cu"
#include "../select_pack.cu"
#include "../apply.cu"
#include "../validate.cu"

namespace {
template <class T>
T* P(unsigned long long a) {
    return reinterpret_cast<T*>(static_cast<unsigned long long>(a));
}
unsigned U(unsigned long long a) { return static_cast<unsigned>(a); }
float F(unsigned long long a) { return __uint_as_float(static_cast<unsigned>(a)); }

const char* const NAMES[] = {"cs_fill_u32",    "cs_fused_pass", "cs_fused_finish", "cs_select_fixed",
                             "cs_cut_search",  "cs_hist_level", "cs_chunk_count",  "cs_pack_layout",
                             "cs_pack_chunk",  "cs_checksum",   "cs_apply_entries", "cs_validate_peers",
                             "cs_pack_gate",   "cs_zero_if_valid", "cs_vote_word"};
constexpr unsigned COUNT = sizeof(NAMES) / sizeof(NAMES[0]);
}  // namespace

// The kernel name for an id (nullptr past the end), so the Rust side can
// check that both tables agree.
extern "C" const char* cs_emu_kernel_name(unsigned id) { return id < COUNT ? NAMES[id] : nullptr; }

// Runs kernel `id` as `grid` blocks of `block` threads. Returns 0 on
// success, 2 for a bad block size, 3 for an unknown id or argument count.
extern "C" int cs_emu_launch(unsigned id, unsigned grid, unsigned block, const unsigned long long* a,
                             unsigned nargs) {
    static const unsigned ARGC[] = {3, 9, 6, 6, 6, 5, 4, 8, 6, 3, 11, 6, 5, 4, 7};
    if (id >= COUNT || nargs != ARGC[id]) return 3;
    switch (id) {
        case 0:
            return cs_emu::launch(grid, block, [&] { cs_fill_u32(P<unsigned>(a[0]), a[1], U(a[2])); });
        case 1:
            return cs_emu::launch(grid, block, [&] {
                cs_fused_pass(P<const float>(a[0]), P<const float>(a[1]), P<const float>(a[2]), P<float>(a[3]),
                              P<float>(a[4]), P<float>(a[5]), P<unsigned>(a[6]), P<unsigned>(a[7]), a[8]);
            });
        case 2:
            return cs_emu::launch(grid, block, [&] {
                cs_fused_finish(P<const float>(a[0]), P<const float>(a[1]), P<const unsigned>(a[2]), U(a[3]),
                                F(a[4]), P<unsigned>(a[5]));
            });
        case 3:
            return cs_emu::launch(grid, block, [&] {
                cs_select_fixed(P<unsigned>(a[0]), U(a[1]), P<const unsigned>(a[2]), F(a[3]), a[4], U(a[5]));
            });
        case 4:
            return cs_emu::launch(grid, block, [&] {
                cs_cut_search(P<const unsigned>(a[0]), U(a[1]), U(a[2]), U(a[3]), P<unsigned>(a[4]),
                              P<unsigned>(a[5]));
            });
        case 5:
            return cs_emu::launch(grid, block, [&] {
                cs_hist_level(P<const float>(a[0]), a[1], U(a[2]), P<const unsigned>(a[3]), P<unsigned>(a[4]));
            });
        case 6:
            return cs_emu::launch(grid, block, [&] {
                cs_chunk_count(P<const float>(a[0]), a[1], P<const unsigned>(a[2]), P<unsigned>(a[3]));
            });
        case 7:
            return cs_emu::launch(grid, block, [&] {
                cs_pack_layout(P<const unsigned>(a[0]), U(a[1]), a[2], U(a[3]), P<unsigned>(a[4]),
                               P<unsigned>(a[5]), P<unsigned>(a[6]), P<cs_u64>(a[7]));
            });
        case 8:
            return cs_emu::launch(grid, block, [&] {
                cs_pack_chunk(P<const float>(a[0]), P<const unsigned>(a[1]), P<const unsigned>(a[2]),
                              P<const cs_u64>(a[3]), U(a[4]), P<unsigned char>(a[5]));
            });
        case 9:
            return cs_emu::launch(grid, block, [&] {
                cs_checksum(P<unsigned>(a[0]), P<const cs_u64>(a[1]), P<const unsigned>(a[2]));
            });
        case 10:
            return cs_emu::launch(grid, block, [&] {
                cs_apply_entries(P<const unsigned char>(a[0]), P<const unsigned>(a[1]), U(a[2]), U(a[3]),
                                 P<float>(a[4]), P<unsigned>(a[5]), P<float>(a[6]), P<float>(a[7]), F(a[8]),
                                 P<const unsigned>(a[9]), U(a[10]));
            });
        case 11:
            return cs_emu::launch(grid, block, [&] {
                cs_validate_peers(P<const unsigned char>(a[0]), P<const cs_u64>(a[1]), a[2], U(a[3]),
                                  P<unsigned>(a[4]), P<unsigned>(a[5]));
            });
        case 12:
            return cs_emu::launch(grid, block, [&] {
                cs_pack_gate(P<const unsigned>(a[0]), U(a[1]), P<unsigned>(a[2]), P<const unsigned>(a[3]), U(a[4]));
            });
        case 13:
            return cs_emu::launch(grid, block, [&] {
                cs_zero_if_valid(P<float>(a[0]), a[1], P<const unsigned>(a[2]), U(a[3]));
            });
        case 14:
            return cs_emu::launch(grid, block, [&] {
                cs_vote_word(P<const unsigned>(a[0]), U(a[1]), U(a[2]), U(a[3]), U(a[4]), U(a[5]), P<unsigned>(a[6]));
            });
        default:
            return 3;
    }
}
