//! Matrix-vector products over the whole grid with fused epilogues.
//!
//! A work item is `R` consecutive rows (the schedule's rows per warp) owned
//! by a team of `KSPLIT` warps of one block; the team splits K and reduces
//! through shared memory (KSPLIT > 1 only where a phase has too few rows to
//! give every warp of the grid an item). Lanes read 16-byte chunks, so each
//! lane keeps `R x unroll` 16-byte loads in flight. The item -> (block, team)
//! map is static, which is what lets a warp prefetch its next phase's rows
//! (into L2, its first item into a shared-memory slot, or everything
//! through its shared-memory ring: see `weight_stream`).
//! Items go round-robin over blocks first (item i -> block i % GRID_BLOCKS,
//! team i / GRID_BLOCKS): a phase with fewer items than teams still spreads
//! over every SM, and no block holds more than one item above the mean.

pub const MATVEC: &str = r#"// ---- matvec: rows over all warps of the grid, 16-byte loads, fused epilogue ----
// One warp's share of an item: ITERS steps of 32 lanes x 16 bytes (every
// KSPLIT-th 512-byte step of each row). With FIRST_ITEM_SMEM the warp's
// first item of a phase comes from its shared-memory slot when all of it
// fits (SLOTTED = ITERS), else it loads as usual (SLOTTED = 0): part of an
// item in the slot would still leave a whole load round trip for the rest.
template <int R, int K, int KSPLIT>
struct MatvecSteps {
    static constexpr int CHUNKS = K / 8;  // 16-byte chunks per row
    static constexpr int STRIDE = 32 * KSPLIT;
    static constexpr int ITERS = (CHUNKS + STRIDE - 1) / STRIDE;
    static constexpr int SLOTTED = FIRST_ITEM_SMEM && ITERS * R <= FIRST_ITEM_CHUNKS ? ITERS : 0;
};

// This warp's first-item slot: FIRST_ITEM_CHUNKS x 32 lanes x 16 bytes, lane-minor.
__device__ __forceinline__ uint4* first_item_slot() {
    extern __shared__ __align__(16) unsigned char fi_dynamic_smem[];  // the kernel's `smem`
    return reinterpret_cast<uint4*>(fi_dynamic_smem + FIRST_ITEM_OFFSET) + (threadIdx.x >> 5) * FIRST_ITEM_CHUNKS * 32;
}
// 16 bytes global -> shared without registers; cached at L2 only (weights are read once).
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(smem_addr(dst)), "l"(src) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// This thread's copies have landed (and are visible to it: each lane reads only its own chunks).
__device__ __forceinline__ void cp_async_wait_all() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}
// All but this thread's PENDING most recent copy groups have landed.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait_older() {
#if __CUDA_ARCH__ >= 800
    if constexpr (PENDING == 0) asm volatile("cp.async.wait_all;" ::: "memory");
    else asm volatile("cp.async.wait_group %0;" :: "n"(PENDING) : "memory");
#endif
}

// Partial dot products of R rows (pointers rows[r], K bf16 each) with xs (f32,
// shared). FROM_SLOT > 0 (= ITERS): the weights are in this warp's first-item
// slot; PENDING: copy groups committed after the slot's that need not land yet.
template <int R, int K, int KSPLIT, int FROM_SLOT = 0, int PENDING = 0>
__device__ __forceinline__ void matvec_rows_partial(const uint4* const (&rows)[R], const float* __restrict__ xs,
                                                     int wt, float (&acc)[R]) {
    using S = MatvecSteps<R, K, KSPLIT>;
    const int lane = threadIdx.x & 31;
    const float4* x4 = reinterpret_cast<const float4*>(xs);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    const uint4* slot = nullptr;
    if constexpr (FROM_SLOT > 0) {
        slot = first_item_slot();
        cp_async_wait_older<PENDING>();
    }
#pragma unroll 4
    for (int it = 0; it < S::ITERS; ++it) {
        const int c = (it * KSPLIT + wt) * 32 + lane;
        if (S::CHUNKS % S::STRIDE == 0 || c < S::CHUNKS) {
            uint4 w[R];
#pragma unroll
            for (int r = 0; r < R; ++r) w[r] = FROM_SLOT > 0 ? slot[(it * R + r) * 32 + lane] : ld_weight16(rows[r] + c);
            const float4 a = x4[2 * c], b = x4[2 * c + 1];
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] += dot_bf16x8(w[r], a, b);
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
}

// Prefetch into L2 the first PREFETCH_BYTES_PER_WARP bytes this warp will
// read of rows[] (issued before waiting at the sync point that precedes the phase).
template <int R, int K, int KSPLIT>
__device__ __forceinline__ void matvec_prefetch(const uint4* const (&rows)[R], int wt) {
    constexpr int CHUNKS = K / 8;
    constexpr int ITERS = (CHUNKS + 32 * KSPLIT - 1) / (32 * KSPLIT);
    constexpr int BUDGET_ITERS = PREFETCH_BYTES_PER_WARP / (512 * R);
    constexpr int N = ITERS < BUDGET_ITERS ? ITERS : BUDGET_ITERS;
    const int lane = threadIdx.x & 31;
    if (lane >= 4) return;  // 4 lanes x 128-byte lines cover a warp's 512-byte step
    for (int it = 0; it < N; ++it) {
        const int c = (it * KSPLIT + wt) * 32 + lane * 8;
        if (c < CHUNKS) {
#pragma unroll
            for (int r = 0; r < R; ++r) prefetch_l2(rows[r] + c);
        }
    }
}

// acc[i] without dynamic indexing (which would put acc in local memory).
template <int R>
__device__ __forceinline__ float pick(const float (&acc)[R], int i) {
    float v = acc[0];
#pragma unroll
    for (int r = 1; r < R; ++r) if (r == i) v = acc[r];
    return v;
}

// The sums of a team's KSPLIT partial results (one per warp, through red),
// in acc of the team's first warp or, with TO_ALL, of every warp of it.
template <int R, int KSPLIT, bool TO_ALL>
__device__ __forceinline__ void team_reduce(float* red, int team, int wt, float (&acc)[R]) {
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) red[(team * KSPLIT + wt) * R + r] = acc[r];
    }
    team_sync(team, KSPLIT * 32);
    if (TO_ALL || wt == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float s = 0.0f;
#pragma unroll
            for (int w = 0; w < KSPLIT; ++w) s += red[(team * KSPLIT + w) * R + r];
            acc[r] = s;
        }
    }
    team_sync(team, KSPLIT * 32);
}

// One matvec phase. row_ptr(item, r) -> const u16* of row r of the item;
// on lanes 0..EPI_LANES-1, pre(item, lane) runs before the item's dot
// products (to issue the epilogue's own loads early) and epi(item, lane,
// acc, pre's result) after them, with the item's R sums.
template <int R, int K, int KSPLIT, int EPI_LANES, class RowPtr, class Pre, class Epi>
__device__ __forceinline__ void matvec_phase_pre(int n_items, const float* __restrict__ xs, float* red,
                                                 RowPtr row_ptr, Pre pre, Epi epi) {
    constexpr int TEAMS = WARPS / KSPLIT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int team = warp / KSPLIT, wt = warp % KSPLIT;
    // With KSPLIT > 1 every team of the block runs as many iterations as team 0
    // (which has the most items), so all teams meet their named barriers
    // equally often; a team past the end computes nothing.
    const int pace = KSPLIT > 1 ? blockIdx.x : team * GRID_BLOCKS + blockIdx.x;
    for (int k = 0; pace + k * GRID_BLOCKS * TEAMS < n_items; ++k) {
        const int item = team * GRID_BLOCKS + blockIdx.x + k * GRID_BLOCKS * TEAMS;
        const bool valid = item < n_items;
        decltype(pre(0, 0)) ctx{};
        if (valid && lane < EPI_LANES) ctx = pre(item, lane);
        float acc[R];
        if (valid) {
            if constexpr (WEIGHT_STREAM) {
                // The item's rows arrive through the warp's ring, in this order.
                matvec_rows_partial_ring<R, K, KSPLIT>(ws_acquire(), xs, wt, acc);
                ws_release();
            } else {
                const uint4* rows[R];
#pragma unroll
                for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const uint4*>(row_ptr(item, r));
                if (MatvecSteps<R, K, KSPLIT>::SLOTTED > 0 && k == 0)  // copied before the sync point
                    matvec_rows_partial<R, K, KSPLIT, MatvecSteps<R, K, KSPLIT>::SLOTTED>(rows, xs, wt, acc);
                else
                    matvec_rows_partial<R, K, KSPLIT>(rows, xs, wt, acc);
            }
        } else {
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] = 0.0f;
        }
        if constexpr (KSPLIT > 1) {
            team_reduce<R, KSPLIT, false>(red, team, wt, acc);
            if (wt != 0) continue;
        }
        if (valid && lane < EPI_LANES) epi(item, lane, acc, ctx);
    }
}

// matvec_phase_pre without early epilogue loads: epi(item, lane, acc).
template <int R, int K, int KSPLIT, int EPI_LANES, class RowPtr, class Epi>
__device__ __forceinline__ void matvec_phase(int n_items, const float* __restrict__ xs, float* red,
                                             RowPtr row_ptr, Epi epi) {
    matvec_phase_pre<R, K, KSPLIT, EPI_LANES>(n_items, xs, red, row_ptr, [](int, int) { return 0; },
        [&](int item, int lane, const float (&acc)[R], int) { epi(item, lane, acc); });
}

// The rows of this warp's first item of a phase (matvec_phase_pre's k = 0);
// false when the warp has none.
template <int R, int KSPLIT, class RowPtr>
__device__ __forceinline__ bool first_item_rows(int n_items, RowPtr row_ptr, const uint4* (&rows)[R]) {
    const int item = ((threadIdx.x >> 5) / KSPLIT) * GRID_BLOCKS + blockIdx.x;
    if (item >= n_items) return false;
#pragma unroll
    for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const uint4*>(row_ptr(item, r));
    return true;
}

// The prefetch matching matvec_phase's first item of this warp.
template <int R, int K, int KSPLIT, class RowPtr>
__device__ __forceinline__ void matvec_phase_prefetch(int n_items, RowPtr row_ptr) {
    if (PREFETCH_BYTES_PER_WARP == 0) return;
    const uint4* rows[R];
    if (first_item_rows<R, KSPLIT>(n_items, row_ptr, rows)) matvec_prefetch<R, K, KSPLIT>(rows, (threadIdx.x >> 5) % KSPLIT);
}

// Before the sync point that precedes a matvec phase: move this warp's first
// item of it ahead, into L2 (PREFETCH) or into its shared-memory slot
// (FIRST_ITEM_SMEM, when the item fits; matvec_phase_pre reads it there).
template <int R, int K, int KSPLIT, class RowPtr>
__device__ __forceinline__ void matvec_phase_ahead(int n_items, RowPtr row_ptr) {
    if constexpr (PREFETCH) matvec_phase_prefetch<R, K, KSPLIT>(n_items, row_ptr);
    if constexpr (MatvecSteps<R, K, KSPLIT>::SLOTTED > 0) {
        using S = MatvecSteps<R, K, KSPLIT>;
        const uint4* rows[R];
        if (!first_item_rows<R, KSPLIT>(n_items, row_ptr, rows)) return;
        const int lane = threadIdx.x & 31, wt = (threadIdx.x >> 5) % KSPLIT;
        uint4* slot = first_item_slot();
#pragma unroll
        for (int it = 0; it < S::ITERS; ++it) {
            const int c = (it * KSPLIT + wt) * 32 + lane;
            if (S::CHUNKS % S::STRIDE == 0 || c < S::CHUNKS) {
#pragma unroll
                for (int r = 0; r < R; ++r) cp_async16(slot + (it * R + r) * 32 + lane, rows[r] + c);
            }
        }
        cp_async_commit();
    }
}
"#;
