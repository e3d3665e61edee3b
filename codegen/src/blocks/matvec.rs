//! Matrix-vector products over the whole grid with fused epilogues.
//!
//! A work item is `R` consecutive rows (the schedule's rows per warp) owned
//! by a team of `KSPLIT` warps of one block; the team splits K and reduces
//! through shared memory (KSPLIT > 1 only where a phase has too few rows to
//! give every warp of the grid an item). Lanes read 16-byte chunks, so each
//! lane keeps `R x unroll` 16-byte loads in flight. The item -> (block, team)
//! map is static, which is what lets a warp prefetch its next phase's rows
//! (into L2, or through its shared-memory ring: see `weight_stream`).
//! Items go round-robin over blocks first (item i -> block i % GRID_BLOCKS,
//! team i / GRID_BLOCKS): a phase with fewer items than teams still spreads
//! over every SM, and no block holds more than one item above the mean.

pub const MATVEC: &str = r#"// ---- matvec: rows over all warps of the grid, 16-byte loads, fused epilogue ----
// Partial dot products of R rows (pointers rows[r], K bf16 each) with xs (f32, shared).
template <int R, int K, int KSPLIT>
__device__ __forceinline__ void matvec_rows_partial(const uint4* const (&rows)[R], const float* __restrict__ xs,
                                                     int wt, float (&acc)[R]) {
    constexpr int CHUNKS = K / 8;  // 16-byte chunks per row
    constexpr int STRIDE = 32 * KSPLIT;
    constexpr int ITERS = (CHUNKS + STRIDE - 1) / STRIDE;
    const int lane = threadIdx.x & 31;
    const float4* x4 = reinterpret_cast<const float4*>(xs);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
#pragma unroll 4
    for (int it = 0; it < ITERS; ++it) {
        const int c = (it * KSPLIT + wt) * 32 + lane;
        if (CHUNKS % STRIDE == 0 || c < CHUNKS) {
            uint4 w[R];
#pragma unroll
            for (int r = 0; r < R; ++r) w[r] = ld_weight16(rows[r] + c);
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
                matvec_rows_partial<R, K, KSPLIT>(rows, xs, wt, acc);
            }
        } else {
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] = 0.0f;
        }
        if constexpr (KSPLIT > 1) {
            if (lane == 0) {
#pragma unroll
                for (int r = 0; r < R; ++r) red[(team * KSPLIT + wt) * R + r] = acc[r];
            }
            team_sync(team, KSPLIT * 32);
            if (wt == 0) {
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    float s = 0.0f;
#pragma unroll
                    for (int w = 0; w < KSPLIT; ++w) s += red[(team * KSPLIT + w) * R + r];
                    acc[r] = s;
                }
            }
            team_sync(team, KSPLIT * 32);
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

// The prefetch matching matvec_phase's first item of this warp.
template <int R, int K, int KSPLIT, class RowPtr>
__device__ __forceinline__ void matvec_phase_prefetch(int n_items, RowPtr row_ptr) {
    if (PREFETCH_BYTES_PER_WARP == 0) return;
    const int warp = threadIdx.x >> 5;
    const int team = warp / KSPLIT, wt = warp % KSPLIT;
    const int item = team * GRID_BLOCKS + blockIdx.x;
    if (item >= n_items) return;
    const uint4* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const uint4*>(row_ptr(item, r));
    matvec_prefetch<R, K, KSPLIT>(rows, wt);
}
"#;
