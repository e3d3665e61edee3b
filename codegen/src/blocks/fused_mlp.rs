//! The decode MLP as one phase (`decode.mlp = fused_split_k`): gate/up,
//! SwiGLU and the down projection, split over the intermediate dimension.
//!
//! A work item is `R` consecutive intermediate indices. Its warp (or team of
//! `KSPLIT` warps) computes their gate and up rows like any matvec item, and
//! multiplies `silu(gate) * up` into the same indices' rows of a transposed
//! copy of `down_proj` (`[intermediate][hidden]`, so an item's down weights
//! are `R` contiguous rows, not `R` scattered columns). Each warp sums its
//! items' contributions to the hidden outputs in its own shared-memory
//! accumulator (each lane owns the outputs of the 16-byte chunks it loads:
//! no atomics inside the block). After its last item the block adds the sum
//! of its warps' accumulators into the residual with float reductions, so
//! the MLP needs one grid-wide sync point instead of two; the summation
//! order of the residual (its last bits) varies from run to run.
//!
//! The down rows of an item are `cp.async`-copied into the warp's stage
//! before the gate/up dot products, so their loads are in flight together
//! with the gate/up loads without holding registers.

pub const FUSED_MLP: &str = r#"// ---- fused MLP: gate/up, SwiGLU and down_proj in one phase, split over the intermediate ----
// n_items = INTER / R; gate_up_rows(item, r): the item's gate rows (r < R)
// then up rows (as mlp_up_rows); down_t: [INTER][HIDDEN] bf16;
// resid_out += this block's share.
template <int R, int KSPLIT, class GateUpRows>
__device__ void fused_mlp_phase(int n_items, const float* __restrict__ xs, float* red, GateUpRows gate_up_rows,
                                const u16* __restrict__ down_t, float* resid_out) {
    using GU = MatvecSteps<2 * R, HIDDEN, KSPLIT>;
    using D = MatvecSteps<R, HIDDEN, KSPLIT>;  // down rows: the same width and K split
    constexpr int TEAMS = WARPS / KSPLIT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int team = warp / KSPLIT, wt = warp % KSPLIT;
    extern __shared__ __align__(16) unsigned char fm_dynamic_smem[];  // the kernel's `smem`
    float4* const acc_all = reinterpret_cast<float4*>(fm_dynamic_smem + MLP_ACC_OFFSET);
    float4* const acc = acc_all + warp * (HIDDEN / 4);
    static_assert(R * D::ITERS * 512 <= MLP_STAGE_WARP_BYTES, "a warp's stage holds one item's down rows");
    uint4* const stage = reinterpret_cast<uint4*>(fm_dynamic_smem + MLP_STAGE_OFFSET) + warp * (MLP_STAGE_WARP_BYTES / 16);
    for (int i = lane; i < HIDDEN / 4; i += 32) acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    __syncwarp();  // other lanes zeroed some of this lane's outputs
    // As matvec_phase_pre: round-robin over blocks first; with KSPLIT > 1
    // every team runs as many iterations as team 0 (named barriers).
    const int pace = KSPLIT > 1 ? blockIdx.x : team * GRID_BLOCKS + blockIdx.x;
    for (int k = 0; pace + k * GRID_BLOCKS * TEAMS < n_items; ++k) {
        const int item = team * GRID_BLOCKS + blockIdx.x + k * GRID_BLOCKS * TEAMS;
        const bool valid = item < n_items;
        float gu[2 * R];
        if (valid) {
            // The down rows are needed last: copy them first.
#pragma unroll
            for (int it = 0; it < D::ITERS; ++it) {
                const int c = (it * KSPLIT + wt) * 32 + lane;
                if (D::CHUNKS % D::STRIDE == 0 || c < D::CHUNKS) {
#pragma unroll
                    for (int r = 0; r < R; ++r)
                        cp_async16(stage + (it * R + r) * 32 + lane,
                                   reinterpret_cast<const uint4*>(down_t + (size_t)(item * R + r) * HIDDEN) + c);
                }
            }
            cp_async_commit();
            const uint4* rows[2 * R];
#pragma unroll
            for (int r = 0; r < 2 * R; ++r) rows[r] = reinterpret_cast<const uint4*>(gate_up_rows(item, r));
            if (GU::SLOTTED > 0 && k == 0)  // copied before the sync point; the stage's copies stay in flight
                matvec_rows_partial<2 * R, HIDDEN, KSPLIT, GU::SLOTTED, 1>(rows, xs, wt, gu);
            else
                matvec_rows_partial<2 * R, HIDDEN, KSPLIT>(rows, xs, wt, gu);
        } else {
#pragma unroll
            for (int r = 0; r < 2 * R; ++r) gu[r] = 0.0f;
        }
        // Every warp of the team needs the item's sums (each scales its own chunks).
        if constexpr (KSPLIT > 1) team_reduce<2 * R, KSPLIT, true>(red, team, wt, gu);
        if (!valid) continue;
        float act[R];
#pragma unroll
        for (int r = 0; r < R; ++r) act[r] = silu_f(gu[r]) * gu[R + r];
        cp_async_wait_all();  // this lane's stage chunks (each lane reads only its own)
#pragma unroll
        for (int it = 0; it < D::ITERS; ++it) {
            const int c = (it * KSPLIT + wt) * 32 + lane;
            if (D::CHUNKS % D::STRIDE == 0 || c < D::CHUNKS) {
                float o[8];
                combine_staged_rows<R>(stage, it, act, o);
                float4 a = acc[2 * c], b = acc[2 * c + 1];
                a.x += o[0]; a.y += o[1]; a.z += o[2]; a.w += o[3];
                b.x += o[4]; b.y += o[5]; b.z += o[6]; b.w += o[7];
                acc[2 * c] = a;
                acc[2 * c + 1] = b;
            }
        }
    }
    // The block's share: its warps' accumulators summed, one reduction per 4 outputs.
    __syncthreads();
    for (int i = threadIdx.x; i < HIDDEN / 4; i += THREADS) {
        float4 s = acc_all[i];
#pragma unroll 4
        for (int w = 1; w < WARPS; ++w) {
            const float4 v = acc_all[w * (HIDDEN / 4) + i];
            s.x += v.x; s.y += v.y; s.z += v.z; s.w += v.w;
        }
        red_add_f32x4(resid_out + 4 * i, s);
    }
}
"#;
