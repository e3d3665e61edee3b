//! CUDA text of the prefill kernels. Model and schedule numbers enter only
//! through the constants printed by [`super::generate_prefill`]; the few
//! arch-dependent pieces (cp.async or plain copies, mma.sync or FMA) are
//! chosen in Rust so each file holds only code its arch can run.

/// Every prefill kernel's first statement with `prefill.programmatic_launch`
/// (sm_90+): the runtime launches each kernel as a programmatic dependent of
/// the one before it, so its blocks are scheduled while that one drains.
pub const ENTRY_PROGRAMMATIC: &str = r#"// ---- prefill_entry: programmatic dependent launch (prefill.programmatic_launch) ----
// This kernel may start while the one before it drains: nothing is read or written before that one
// has completed and flushed (griddepcontrol.wait); then the next kernel may launch.
__device__ __forceinline__ void prefill_entry() {
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
"#;

/// `prefill_entry` in ordinary stream order: nothing to wait for.
pub const ENTRY_STREAM_ORDER: &str = r#"// ---- prefill_entry: ordinary stream order (each kernel starts after the one before completes) ----
__device__ __forceinline__ void prefill_entry() {}
"#;

/// How a kernel stores an activation that a GEMM reads.
pub const ACT_STORE: &str = r#"// ---- GEMM input activations: ACT_PARTS bf16 parts per value ----
// Row of a K-wide activation = ACT_PARTS x K bf16: the value rounded (hi) at row[k] and, with
// ACT_PARTS == 2, the remainder bf16(v - hi) at row[K + k], so the GEMM sees 16 mantissa bits.
__device__ __forceinline__ void store_act(u16* row, int k, int K, float v) {
    const u16 hi = f32_to_bf16(v);
    row[k] = hi;
    if (ACT_PARTS == 2) row[K + k] = f32_to_bf16(v - bf16_to_f32(hi));
}
// Two adjacent values (k even), as one 32-bit store per part.
__device__ __forceinline__ void store_act2(u16* row, int k, int K, float v0, float v1) {
    const u16 h0 = f32_to_bf16(v0), h1 = f32_to_bf16(v1);
    *reinterpret_cast<u32*>(row + k) = (u32)h0 | ((u32)h1 << 16);
    if (ACT_PARTS == 2) {
        const u16 l0 = f32_to_bf16(v0 - bf16_to_f32(h0)), l1 = f32_to_bf16(v1 - bf16_to_f32(h1));
        *reinterpret_cast<u32*>(row + K + k) = (u32)l0 | ((u32)l1 << 16);
    }
}
"#;

/// Embedding gather and the zero-centred RMSNorm over T rows.
pub const ROWWISE: &str = r#"// ---- prefill_embed: resid[t][i] = embed_tokens[tokens[t]][i] (bf16 -> f32) ----
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
prefill_embed(const u32* __restrict__ tokens, int T, const u16* __restrict__ table, float* __restrict__ resid) {
    prefill_entry();
    const long long idx = (long long)blockIdx.x * ROW_THREADS + threadIdx.x;
    if (idx >= (long long)T * HIDDEN) return;
    const int t = (int)(idx / HIDDEN), i = (int)(idx % HIDDEN);
    resid[idx] = bf16_to_f32(table[(size_t)tokens[t] * HIDDEN + i]);
}

// ---- prefill_mark_inputs: counts[tokens[t]] |= seen-in-input bit (the decode penalties' view of the prompt) ----
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
prefill_mark_inputs(const u32* __restrict__ tokens, int T, u32* __restrict__ counts) {
    prefill_entry();
    const int t = blockIdx.x * ROW_THREADS + threadIdx.x;
    if (t < T) atomicOr(counts + tokens[t], 0x80000000u);
}

// ---- prefill_rms_norm: out[t] = act(x[t] / sqrt(mean(x[t]^2) + eps) * (1 + w)), one block per row ----
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
prefill_rms_norm(const float* __restrict__ x, const float* __restrict__ w, int T, u16* __restrict__ out) {
    prefill_entry();
    __shared__ float red[ROW_THREADS / 32];
    const int t = blockIdx.x;
    if (t >= T) return;
    const float* row = x + (size_t)t * HIDDEN;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < HIDDEN; i += ROW_THREADS) ss = fmaf(row[i], row[i], ss);
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = (int)(threadIdx.x & 31) < ROW_THREADS / 32 ? red[threadIdx.x & 31] : 0.0f;
    tot = warp_sum(tot);
    const float inv = rsqrtf(tot / (float)HIDDEN + RMS_EPS);
    for (int i = threadIdx.x; i < HIDDEN; i += ROW_THREADS)
        store_act(out + (size_t)t * ACT_PARTS * HIDDEN, i, HIDDEN, row[i] * inv * (1.0f + w[i]));
}
"#;

/// Async 16-byte global->shared copies with cp.async (sm_80+).
pub const COPY_CP_ASYNC: &str = r#"// ---- 16-byte global->shared copies: cp.async (zero-fill when !valid) ----
// Destinations are shared-window addresses (smem_ptr): converted once per kernel, so a copy
// costs no address conversion.
typedef u32 smem_ptr;
__device__ __forceinline__ smem_ptr to_smem_ptr(void* p) { return smem_addr(p); }
// src_bytes: 16, or 0 to zero-fill the destination without reading gmem.
__device__ __forceinline__ void copy16(smem_ptr s, const void* gmem, u32 src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void copy_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N committed groups are still in flight.
template <int N> __device__ __forceinline__ void copy_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }
"#;

/// Plain synchronous copies for archs without cp.async.
pub const COPY_PLAIN: &str = r#"// ---- 16-byte global->shared copies: plain loads (no cp.async on this arch) ----
typedef unsigned char* smem_ptr;
__device__ __forceinline__ smem_ptr to_smem_ptr(void* p) { return reinterpret_cast<smem_ptr>(p); }
__device__ __forceinline__ void copy16(smem_ptr s, const void* gmem, u32 src_bytes) {
    uint4 v;
    if (src_bytes != 0u) { v = *reinterpret_cast<const uint4*>(gmem); } else { v.x = 0u; v.y = 0u; v.z = 0u; v.w = 0u; }
    *reinterpret_cast<uint4*>(s) = v;
}
__device__ __forceinline__ void copy_commit() {}
template <int N> __device__ __forceinline__ void copy_wait() {}
"#;

/// GEMM pieces shared by every math path: epilogue selectors, split-K ranges.
pub const GEMM_COMMON: &str = r#"// ---- prefill_gemm: Y[M, N] = X[M, K] . W[N, K]^T, bf16 in, f32 accumulate ----
// Block tile GEMM_BM x GEMM_BN, K in steps of GEMM_BK through a GEMM_STAGES-deep smem ring.
// K must be a multiple of GEMM_BK; M and N are bounds-checked (rows past M/N are zero-filled
// and never stored).
// Activations: each X row holds ACT_PARTS x K bf16, the value's bf16 `hi` then (ACT_PARTS == 2)
// its bf16 remainder `lo` = bf16(x - hi); a stage holds both parts' A tiles and one W tile, and
// every W fragment multiplies both (X . W^T = hi . W^T + lo . W^T: 16 mantissa bits of activation).
// Split-K: blockIdx.z takes a contiguous range of the k tiles; with splits > 1 every split
// stores its f32 tile to `partials`, and the last to arrive at the tile's counter sums them in
// split order (deterministic) and runs the epilogue.
// Epilogues (the `epilogue` argument).
constexpr int EPI_STORE_F32 = 0;     // Yf = acc
constexpr int EPI_ADD_F32 = 1;       // Yf += acc (residual add, in place)
constexpr int EPI_STORE_BF16 = 2;    // Yb = activation(acc): a GEMM input (ACT_PARTS x N per row)
constexpr int EPI_SWIGLU_BF16 = 3;   // Yb = activation(silu(X.W^T) * (X.W2^T)); W = gate, W2 = up

// The k tiles of split blockIdx.z: [kt0, kt1).
__device__ __forceinline__ void gemm_split_range(int KT, int splits, int& kt0, int& kt1) {
    const int per = (KT + splits - 1) / splits;
    kt0 = min(KT, (int)blockIdx.z * per);
    kt1 = min(KT, kt0 + per);
}
"#;

/// The epilogue of the mma.sync and FMA paths: the block's f32 tile staged
/// in shared memory, then split-K and the stores.
pub const GEMM_STAGED_EPILOGUE: &str = r#"// ---- prefill_gemm epilogue: f32 tile staged in smem ----
constexpr int GEMM_CS = GEMM_BN + 4;  // f32 staging row of the epilogue

__device__ __forceinline__ void gemm_epilogue(const float* Cs, int M, int N, int m0, int n0, int epilogue,
                                              float* __restrict__ Yf, u16* __restrict__ Yb) {
    const bool swiglu = epilogue == EPI_SWIGLU_BF16;
    const int cols = swiglu ? GEMM_BN / 2 : GEMM_BN;
    for (int i = threadIdx.x; i < GEMM_BM * cols; i += GEMM_THREADS) {
        const int r = i / cols, c = i % cols, m = m0 + r, n = n0 + c;
        if (m >= M || n >= N) continue;
        const float v = Cs[r * GEMM_CS + c];
        const size_t o = (size_t)m * N + n;
        if (epilogue == EPI_STORE_F32) Yf[o] = v;
        else if (epilogue == EPI_ADD_F32) Yf[o] += v;
        else if (epilogue == EPI_STORE_BF16) store_act(Yb + (size_t)m * ACT_PARTS * N, n, N, v);
        else store_act(Yb + (size_t)m * ACT_PARTS * N, n, N, silu_f(v) * Cs[r * GEMM_CS + c + GEMM_BN / 2]);
    }
}

// After the block's f32 tile is in Cs: the epilogue, or (split-K) publish the tile and let the
// last split of this output tile sum all splits in order and run the epilogue.
__device__ __forceinline__ void gemm_finish(float* Cs, int M, int N, int m0, int n0, int epilogue, int splits,
                                            float* __restrict__ partials, u32* __restrict__ counters,
                                            float* __restrict__ Yf, u16* __restrict__ Yb) {
    if (splits > 1) {
        __shared__ u32 is_last;
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        float* mine = partials + ((size_t)tile * splits + blockIdx.z) * (GEMM_BM * GEMM_BN);
        for (int i = threadIdx.x; i < GEMM_BM * GEMM_BN; i += GEMM_THREADS)
            mine[i] = Cs[(i / GEMM_BN) * GEMM_CS + i % GEMM_BN];
        __syncthreads();
        if (threadIdx.x == 0) is_last = tile_arrive_is_last(counters + tile, (u32)splits) ? 1u : 0u;
        __syncthreads();
        if (!is_last) return;
        __threadfence();
        const float* all = partials + (size_t)tile * splits * (GEMM_BM * GEMM_BN);
        for (int i = threadIdx.x; i < GEMM_BM * GEMM_BN; i += GEMM_THREADS) {
            float v = 0.0f;
            for (int z = 0; z < splits; ++z) v += __ldcg(all + (size_t)z * (GEMM_BM * GEMM_BN) + i);
            Cs[(i / GEMM_BN) * GEMM_CS + i % GEMM_BN] = v;
        }
        __syncthreads();
    }
    gemm_epilogue(Cs, M, N, m0, n0, epilogue, Yf, Yb);
}
"#;

/// The padded smem ring of the mma.sync and FMA paths, and its loader.
pub const GEMM_PADDED_RING: &str = r#"// ---- prefill_gemm operand ring: padded rows ----
// Rows of a stage are padded to GEMM_SK halves: 16-byte aligned for the copies and
// conflict-free for the 32-bit fragment loads.
constexpr int GEMM_SK = GEMM_BK + 8;
constexpr int GEMM_A_TILE = GEMM_BM * GEMM_SK;  // one activation part
constexpr int GEMM_B_TILE = GEMM_BN * GEMM_SK;
constexpr int GEMM_STAGE = ACT_PARTS * GEMM_A_TILE + GEMM_B_TILE;
constexpr int GEMM_RING_BYTES = GEMM_STAGES * GEMM_STAGE * 2;
constexpr int GEMM_C_BYTES = GEMM_BM * GEMM_CS * 4;  // the epilogue's f32 staging tile
constexpr int GEMM_SMEM_BYTES = GEMM_RING_BYTES > GEMM_C_BYTES ? GEMM_RING_BYTES : GEMM_C_BYTES;
static_assert(GEMM_SMEM_BYTES == GEMM_DYN_SMEM, "the launch plan's dynamic smem size");
static_assert(GEMM_BK % 16 == 0 && GEMM_BN % 16 == 0 && GEMM_BM % 16 == 0, "mma tiles");

// Loading a stage: columns [k, k+BK) of X rows [m0, m0+BM) (each activation part: ACT_PARTS
// tiles) and of this block's weight rows. SwiGLU blocks cover BN/2 output columns: weight rows
// [0, BN/2) from W (gate), the rest from W2 (up). A thread copies the same GEMM_LOADS chunks
// (rows and 16-byte columns of the tile) in every stage, so their sources and destinations are
// worked out once (`gemm_plan_loads`) and a stage is GEMM_LOADS copies at the k offset: the
// index arithmetic stays out of the k loop, which is issue-bound otherwise.
constexpr int GEMM_CPR = GEMM_BK / 8;                               // 16-byte chunks per tile row
constexpr int GEMM_CHUNKS = (ACT_PARTS * GEMM_BM + GEMM_BN) * GEMM_CPR;  // per stage
constexpr int GEMM_LOADS = (GEMM_CHUNKS + GEMM_THREADS - 1) / GEMM_THREADS;
constexpr int GEMM_STAGE_BYTES = GEMM_STAGE * 2;
struct GemmLoads {
    const u16* src[GEMM_LOADS];  // the chunk at k = 0 of the block's k range (a valid row when bytes is 0)
    u32 dst[GEMM_LOADS];         // bytes from the stage's base
    u32 bytes[GEMM_LOADS];       // 16 inside M / N, else 0: the chunk is zero-filled
};

__device__ __forceinline__ void gemm_plan_loads(GemmLoads& L, const u16* __restrict__ X, const u16* __restrict__ W,
                                                const u16* __restrict__ W2, int M, int N, int K, int m0, int n0,
                                                int k0, bool swiglu) {
    constexpr int A_ROWS = ACT_PARTS * GEMM_BM;
#pragma unroll
    for (int i = 0; i < GEMM_LOADS; ++i) {
        const int idx = threadIdx.x + i * GEMM_THREADS;
        const int row = idx / GEMM_CPR, ch = (idx % GEMM_CPR) * 8;
        L.dst[i] = (u32)(row * GEMM_SK + ch) * 2u;
        if (row < A_ROWS) {
            const int part = row / GEMM_BM, m = m0 + row % GEMM_BM;
            L.bytes[i] = m < M ? 16u : 0u;
            L.src[i] = X + (size_t)(m < M ? m : 0) * (ACT_PARTS * K) + part * K + k0 + ch;
        } else {
            const int r = row - A_ROWS;
            const u16* w = W;
            int n = n0 + r;
            if (swiglu && r >= GEMM_BN / 2) { w = W2; n = n0 + r - GEMM_BN / 2; }
            L.bytes[i] = n < N && idx < GEMM_CHUNKS ? 16u : 0u;
            L.src[i] = w + (size_t)(n < N ? n : 0) * K + k0 + ch;
        }
    }
}

// Queue the copies of one stage: k columns [k, k + GEMM_BK) of the block's range.
__device__ __forceinline__ void gemm_issue_stage(smem_ptr stage, const GemmLoads& L, int k) {
#pragma unroll
    for (int i = 0; i < GEMM_LOADS; ++i)
        if (GEMM_CHUNKS % GEMM_THREADS == 0 || threadIdx.x + i * GEMM_THREADS < GEMM_CHUNKS)
            copy16(stage + L.dst[i], L.src[i] + k, L.bytes[i]);
}
"#;

/// Warp-level tensor-core pieces (sm_80+): ldmatrix fragment loads and
/// `mma.sync` m16n8k16 bf16, shared by the mma.sync GEMM and the attention.
pub const MMA_HELPERS: &str = r#"// ---- mma.sync m16n8k16 bf16 -> f32 and ldmatrix fragment loads ----
// ldmatrix: each 8-lane group gives the row addresses of one 8x8 bf16 matrix; lane l receives
// row l/4, columns 2(l%4), 2(l%4)+1 of every matrix -- exactly the mma.sync fragment layout
// (.trans: column l/4, rows 2(l%4), 2(l%4)+1 -- a B fragment of a row-major k x n tile).
__device__ __forceinline__ void ldmatrix_x4(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(u32* r, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void mma_bf16_16816(float* d, const u32* a, const u32* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
"#;

/// Tensor-core math: each warp owns a (GEMM_WTM x GEMM_WTN) tile of mma.sync m16n8k16.
pub const GEMM_MMA: &str = r#"// ---- GEMM math: mma.sync m16n8k16 bf16 -> f32 ----
constexpr int GEMM_MI = GEMM_WTM / 16;
constexpr int GEMM_NI = GEMM_WTN / 8;
constexpr u32 GEMM_ROW_BYTES = GEMM_SK * 2;  // one padded smem tile row

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
prefill_gemm(const u16* __restrict__ X, const u16* __restrict__ W, const u16* __restrict__ W2, int M, int N, int K,
             int epilogue, float* __restrict__ partials, u32* __restrict__ counters,
             float* __restrict__ Yf, u16* __restrict__ Yb) {
    prefill_entry();
    const int splits = gridDim.z;  // split-K
    extern __shared__ __align__(16) unsigned char smem[];
    const bool swiglu = epilogue == EPI_SWIGLU_BF16;
    const int m0 = blockIdx.y * GEMM_BM;
    const int n0 = blockIdx.x * (swiglu ? GEMM_BN / 2 : GEMM_BN);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp / GEMM_WARPS_N, wn = warp % GEMM_WARPS_N;
    const int g = lane >> 2, c2 = (lane & 3) * 2;  // mma fragment row / column pair
    float acc[GEMM_MI][GEMM_NI][4];
#pragma unroll
    for (int i = 0; i < GEMM_MI; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    int kt0, kt1;
    gemm_split_range(K / GEMM_BK, splits, kt0, kt1);
    const int KT = kt1 - kt0;
    GemmLoads loads;
    gemm_plan_loads(loads, X, W, W2, M, N, K, m0, n0, kt0 * GEMM_BK, swiglu);
    const smem_ptr ring = to_smem_ptr(smem);
#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; ++s) {
        if (s < KT) gemm_issue_stage(ring + s * GEMM_STAGE_BYTES, loads, s * GEMM_BK);
        copy_commit();
    }
    // This lane's ldmatrix row addresses at kk = 0, in bytes from a stage's base.
    // A 16x16 fragment = four 8x8 matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15): lane l addresses
    // row l & 15, k offset (l >> 4) * 8 -> registers a0..a3 in mma order.
    u32 a_lane = ((wm * GEMM_WTM + (lane & 15)) * GEMM_SK + (lane >> 4) * 8) * 2;
    // B fragments (W rows = n, contiguous k), two 16x8 fragments j, j+1 per x4: lane l addresses
    // row n = 8 * (j + ((l >> 4) & 1)) + (l & 7), k offset ((l >> 3) & 1) * 8 -> b[j][0..1],
    // b[j+1][0..1]. With an odd GEMM_NI the last fragment is an x2 (lanes 0-15 as above).
    u32 b_lane = (ACT_PARTS * GEMM_A_TILE + (wn * GEMM_WTN + ((lane >> 4) & 1) * 8 + (lane & 7)) * GEMM_SK +
                        ((lane >> 3) & 1) * 8) * 2;
    u32 ring_s = smem_addr(smem);
    int read_stage = 0, write_stage = GEMM_STAGES - 1;
    for (int kt = 0; kt < KT; ++kt) {
        // Opaque to the compiler, so these stay in registers instead of being recomputed from
        // the thread index in every iteration.
        asm volatile("" : "+r"(a_lane), "+r"(b_lane), "+r"(ring_s));
        copy_wait<GEMM_STAGES - 2>();
        __syncthreads();  // stage kt landed for every thread; stage kt-1 is free to refill
        if (kt + GEMM_STAGES - 1 < KT)
            gemm_issue_stage(ring + write_stage * GEMM_STAGE_BYTES, loads, (kt + GEMM_STAGES - 1) * GEMM_BK);
        copy_commit();
        const u32 st = ring_s + read_stage * GEMM_STAGE_BYTES;
        read_stage = read_stage + 1 == GEMM_STAGES ? 0 : read_stage + 1;
        write_stage = write_stage + 1 == GEMM_STAGES ? 0 : write_stage + 1;
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += 16) {
            u32 b[GEMM_NI][2];
#pragma unroll
            for (int j = 0; j + 1 < GEMM_NI; j += 2) {
                u32 r[4];
                ldmatrix_x4(r, st + b_lane + j * 8 * GEMM_ROW_BYTES + kk * 2);
                b[j][0] = r[0]; b[j][1] = r[1]; b[j + 1][0] = r[2]; b[j + 1][1] = r[3];
            }
            if (GEMM_NI % 2 == 1)
                ldmatrix_x2(b[GEMM_NI - 1], st + b_lane + (GEMM_NI - 1) * 8 * GEMM_ROW_BYTES + kk * 2);
#pragma unroll
            for (int part = 0; part < ACT_PARTS; ++part) {
                u32 a[GEMM_MI][4];
#pragma unroll
                for (int i = 0; i < GEMM_MI; ++i)
                    ldmatrix_x4(a[i], st + a_lane + part * GEMM_A_TILE * 2 + i * 16 * GEMM_ROW_BYTES + kk * 2);
#pragma unroll
                for (int i = 0; i < GEMM_MI; ++i)
#pragma unroll
                    for (int j = 0; j < GEMM_NI; ++j) mma_bf16_16816(acc[i][j], a[i], b[j]);
            }
        }
    }
    copy_wait<0>();
    __syncthreads();  // the ring is reused as the f32 staging tile
    float* Cs = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int i = 0; i < GEMM_MI; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_NI; ++j) {
            const int r = wm * GEMM_WTM + i * 16 + g, c = wn * GEMM_WTN + j * 8 + c2;
            Cs[r * GEMM_CS + c] = acc[i][j][0];
            Cs[r * GEMM_CS + c + 1] = acc[i][j][1];
            Cs[(r + 8) * GEMM_CS + c] = acc[i][j][2];
            Cs[(r + 8) * GEMM_CS + c + 1] = acc[i][j][3];
        }
    __syncthreads();
    gemm_finish(Cs, M, N, m0, n0, epilogue, splits, partials, counters, Yf, Yb);
}
"#;

/// FMA math for archs without bf16 mma.sync: each thread owns GEMM_BM*GEMM_BN/GEMM_THREADS outputs.
pub const GEMM_FMA: &str = r#"// ---- GEMM math: FMA fallback (no bf16 tensor cores on this arch) ----
constexpr int GEMM_OPT = GEMM_BM * GEMM_BN / GEMM_THREADS;  // outputs per thread
static_assert(GEMM_BM * GEMM_BN % GEMM_THREADS == 0, "outputs per thread");

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
prefill_gemm(const u16* __restrict__ X, const u16* __restrict__ W, const u16* __restrict__ W2, int M, int N, int K,
             int epilogue, float* __restrict__ partials, u32* __restrict__ counters,
             float* __restrict__ Yf, u16* __restrict__ Yb) {
    prefill_entry();
    const int splits = gridDim.z;  // split-K
    extern __shared__ __align__(16) unsigned char smem[];
    u16* ring = reinterpret_cast<u16*>(smem);
    const bool swiglu = epilogue == EPI_SWIGLU_BF16;
    const int m0 = blockIdx.y * GEMM_BM;
    const int n0 = blockIdx.x * (swiglu ? GEMM_BN / 2 : GEMM_BN);
    float acc[GEMM_OPT];
#pragma unroll
    for (int o = 0; o < GEMM_OPT; ++o) acc[o] = 0.0f;
    int kt0, kt1;
    gemm_split_range(K / GEMM_BK, splits, kt0, kt1);
    const int KT = kt1 - kt0;
    GemmLoads loads;
    gemm_plan_loads(loads, X, W, W2, M, N, K, m0, n0, kt0 * GEMM_BK, swiglu);
    const smem_ptr ring_s = to_smem_ptr(smem);
#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; ++s) {
        if (s < KT) gemm_issue_stage(ring_s + s * GEMM_STAGE_BYTES, loads, s * GEMM_BK);
        copy_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        copy_wait<GEMM_STAGES - 2>();
        __syncthreads();
        const int nk = kt + GEMM_STAGES - 1;
        if (nk < KT) gemm_issue_stage(ring_s + (nk % GEMM_STAGES) * GEMM_STAGE_BYTES, loads, nk * GEMM_BK);
        copy_commit();
        const u16* As = ring + (kt % GEMM_STAGES) * GEMM_STAGE;
        const u16* Bs = As + ACT_PARTS * GEMM_A_TILE;
#pragma unroll 4
        for (int kk = 0; kk < GEMM_BK; kk += 2) {
#pragma unroll
            for (int o = 0; o < GEMM_OPT; ++o) {
                const int e = o * GEMM_THREADS + threadIdx.x, r = e / GEMM_BN, c = e % GEMM_BN;
                const u32 b = *reinterpret_cast<const u32*>(Bs + c * GEMM_SK + kk);
#pragma unroll
                for (int part = 0; part < ACT_PARTS; ++part) {
                    const u32 a = *reinterpret_cast<const u32*>(As + part * GEMM_A_TILE + r * GEMM_SK + kk);
                    acc[o] = fmaf(__uint_as_float(a << 16), __uint_as_float(b << 16), acc[o]);
                    acc[o] = fmaf(__uint_as_float(a & 0xffff0000u), __uint_as_float(b & 0xffff0000u), acc[o]);
                }
            }
        }
    }
    copy_wait<0>();
    __syncthreads();
    float* Cs = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int o = 0; o < GEMM_OPT; ++o) {
        const int e = o * GEMM_THREADS + threadIdx.x;
        Cs[(e / GEMM_BN) * GEMM_CS + e % GEMM_BN] = acc[o];
    }
    __syncthreads();
    gemm_finish(Cs, M, N, m0, n0, epilogue, splits, partials, counters, Yf, Yb);
}
"#;

/// Depthwise causal conv over the prompt and the conv state it leaves.
pub const CONV: &str = r#"// ---- prefill_causal_conv: y[t][c] = silu(sum_j w[c][j] * x_{t-CONV_K+1+j}[c]) ----
// x: [T][GDN_PROJ_COLS] the fused input projection, whose first CONV_DIM columns are the pre-conv
// in_proj_qkv outputs (f32); inputs before the prompt come from
// conv_state [CONV_DIM][CONV_K-1] (oldest first). One thread per (channel, CONV_SEG tokens);
// the state itself is advanced by the delta rule's state pass (gdn_advance_conv_state), after the
// prep. With prefill.gdn_fused_conv the prep computes this conv itself and this kernel is not run.
static_assert(GDN_PROJ_COLS == CONV_DIM + VALUE_DIM + 2 * GDN_HV, "fused GDN projection row [qkv | z | b | a]");
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
prefill_causal_conv(const float* __restrict__ x, int T, const float* __restrict__ w,
                    const float* __restrict__ conv_state, float* __restrict__ y) {
    prefill_entry();
    const int c = blockIdx.x * ROW_THREADS + threadIdx.x;
    const int t0 = blockIdx.y * CONV_SEG;
    if (c >= CONV_DIM || t0 >= T) return;
    float wc[CONV_K], win[CONV_K];
#pragma unroll
    for (int j = 0; j < CONV_K; ++j) wc[j] = w[(size_t)c * CONV_K + j];
    // win[j] holds x_{t-CONV_K+1+j}; fill the CONV_K-1 inputs before t0.
#pragma unroll
    for (int j = 0; j < CONV_K - 1; ++j) {
        const int p = t0 - (CONV_K - 1) + j;
        win[j + 1] = p >= 0 ? x[(size_t)p * GDN_PROJ_COLS + c] : conv_state[(size_t)c * (CONV_K - 1) + (CONV_K - 1 + p)];
    }
    const int t1 = min(T, t0 + CONV_SEG);
    for (int t = t0; t < t1; ++t) {
#pragma unroll
        for (int j = 0; j < CONV_K - 1; ++j) win[j] = win[j + 1];
        win[CONV_K - 1] = x[(size_t)t * GDN_PROJ_COLS + c];
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < CONV_K; ++j) acc = fmaf(wc[j], win[j], acc);
        y[(size_t)t * CONV_DIM + c] = silu_f(acc);
    }
}
"#;

/// The chunked gated delta rule: scratch layout and the pieces both math paths share
/// (per-row scalars, Kd/Qg, the forward-substitution solve).
pub const GDN_CHUNKED: &str = r#"// ---- chunked gated delta rule (chunk GDN_CHUNK = C, WY/UT form): three launches ----
// qkv: [T][CONV_DIM] post-conv [q | k | v]; b_proj, a_proj: in_proj_b/a columns of the fused
// input projection (row stride GDN_PROJ_COLS);
// state: this layer's f32 [GDN_HV][GDN_DK][GDN_DV] (S[h, key, value]), continued and updated in place;
// o: [T][VALUE_DIM] (before the gated norm). Per v-head h and chunk, with gamma = cumsum(g) in the
// chunk, D_rs = exp(gamma_r - gamma_s), A_rs = beta_r (k_r.k_s) D_rs (s < r), X = (I + A)^-1:
//   prefill_gdn_chunked_prep   (grid GDN_HV x chunks, all chunks in parallel)
//     U = X (beta V), W = X (beta exp(gamma) K), P = (Q K^T) D (lower incl. diagonal, q scale
//     included), Qg = Q exp(gamma), Kd = K exp(gamma_C - gamma), gamma
//   prefill_gdn_chunked_state  (GDN_HV*GDN_DV/GDN_ST_COLS blocks, sequential over chunks)
//     S_c = S (stored), V_new = U - W S, S <- exp(gamma_C) S + Kd^T V_new
//   prefill_gdn_chunked_output (grid GDN_HV*GDN_DV/GDN_OCOLS x chunks, parallel)
//     O = Qg S_c + P V_new
// O is not computed in the state pass: that would add C dk dv + C^2 dv / 2 FMAs per chunk to the
// sequential critical path (2 C dk dv now); from the stored S_c it runs on every chunk at once.
// Scratch is chunk-major (indices do not depend on T); rows past T are zero in every buffer (k = q
// = 0, beta = g = 0), so the padded last chunk is a no-op:
//   u  [chunk][GDN_HV][C][GDN_DV]  U, overwritten with V_new by the state pass
//   w, kd, qg [chunk][GDN_HV][C][GDN_DK];  p [chunk][GDN_HV][C][C];  gam [chunk][GDN_HV][C]
//   sc [chunk][GDN_HV][GDN_DV][GDN_DK]  S_c transposed: S_c[key][col] at col * GDN_DK + key
constexpr int GDN_WARPS = GDN_THREADS / 32;
constexpr int GDN_CPW = GDN_CHUNK / GDN_WARPS;  // solve: columns of X per warp
constexpr int GDN_PARTS = 32 / GDN_CPW;         // solve: lanes sharing one column
static_assert(GDN_CHUNK % GDN_WARPS == 0 && 32 % GDN_CPW == 0, "solve layout");
// The solve reads X[s][j] at M[j * GDN_MS + s], s = j + 1 + part + GDN_PARTS m: with GDN_MS + 1 =
// GDN_PARTS (mod 32) the bank is GDN_PARTS j + part + const, distinct over a warp's lanes.
static_assert(GDN_MS >= GDN_CHUNK && (GDN_MS + 1) % 32 == GDN_PARTS % 32, "conflict-free solve stride");

// The prep's parameters, in the plan's order; both math paths' kernels take them. qkv: the conv
// kernel's output (row stride CONV_DIM) or, with GDN_FUSED_CONV (tensor cores), the input projection
// whose conv the prep computes with conv_w from conv_state (unused otherwise).
#define GDN_PREP_PARAMS                                                                                      \
    const float* __restrict__ qkv, const float* __restrict__ conv_w, const float* __restrict__ conv_state,  \
        const float* __restrict__ b_proj, const float* __restrict__ a_proj, const float* __restrict__ a_log, \
        const float* __restrict__ dt_bias, int T, float* __restrict__ u, float* __restrict__ w,              \
        float* __restrict__ kd, float* __restrict__ qg, float* __restrict__ p, float* __restrict__ gam_out

// The state pass's parameters, in the plan's order (both math paths): the pass also advances the
// conv state (x: the fused input projection).
#define GDN_STATE_PARAMS                                                                                  \
    int T, float* __restrict__ u, const float* __restrict__ w, const float* __restrict__ kd,             \
        const float* __restrict__ gam, float* __restrict__ state, float* __restrict__ sc,                \
        const float* __restrict__ x, float* __restrict__ conv_state

// The conv state <- the last CONV_K-1 pre-conv inputs of [old state | x] (x: the fused input
// projection, row stride GDN_PROJ_COLS), one thread per channel over the grid. Run by the state
// pass: the conv, in its own kernel or in the prep, read the old state in an earlier launch.
// Ascending i reads index i + T >= i, so the in-place shift is safe when T < CONV_K-1.
__device__ __forceinline__ void gdn_advance_conv_state(const float* __restrict__ x, int T,
                                                       float* __restrict__ conv_state) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < CONV_DIM; c += gridDim.x * blockDim.x) {
        float* st = conv_state + (size_t)c * (CONV_K - 1);
#pragma unroll
        for (int i = 0; i < CONV_K - 1; ++i) {
            const int p = T - (CONV_K - 1) + i;
            st[i] = p >= 0 ? x[(size_t)p * GDN_PROJ_COLS + c] : st[CONV_K - 1 + p];
        }
    }
}

// Prep: gamma = cumsum(g) over the chunk in place (gam holds g per row on entry), bek = beta
// exp(gamma), gamma to gam_out (this chunk and head). A GDN_THREADS block; starts with a barrier, so
// what the caller wrote before is visible after; bek is visible after the caller's next barrier.
__device__ __forceinline__ void gdn_prep_scan(float* gam, const float* bet, float* bek, float* __restrict__ gam_out) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (warp == 0) {  // gamma = cumsum(g): lane l holds rows 2l, 2l + 1; a warp scan of the pair sums
        static_assert(GDN_CHUNK == 64, "two rows per lane");
        const float g0 = gam[2 * lane], g1 = g0 + gam[2 * lane + 1];
        float incl = g1;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const float v = __shfl_up_sync(FULL_MASK, incl, off);
            if (lane >= off) incl += v;
        }
        const float before = incl - g1;
        gam[2 * lane] = before + g0;
        gam[2 * lane + 1] = incl;
    }
    __syncthreads();
    for (int r = threadIdx.x; r < GDN_CHUNK; r += GDN_THREADS) {
        bek[r] = bet[r] * expf(gam[r]);
        gam_out[r] = gam[r];
    }
}

// Prep, step 0: the chunk's L2-normed keys into Ks (row stride KS; rows past the prompt zero) and
// per row gam = cumsum(g), bet = beta, qsc = q scale rsqrt(|q|^2 + eps) dk^-1/2, bek = beta exp(gamma);
// gamma also to gam_out (this chunk and head). A GDN_THREADS block; ends with gam, bet, qsc visible.
template <int KS>
__device__ __forceinline__ void gdn_prep_rows(const float* __restrict__ qkv, const float* __restrict__ b_proj,
                                              const float* __restrict__ a_proj, float neg_a, float dtb, int h,
                                              int c0, int n, float* Ks, float* gam, float* bet, float* qsc,
                                              float* bek, float* __restrict__ gam_out) {
    const int kh = h / GDN_V_PER_K;  // v-head h uses k-head h / (Hv/Hk)
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // Rows warp + GDN_WARPS i: every row's loads are issued before any reduction, so a warp waits
    // for one memory round trip instead of one per row.
    constexpr int RPW = GDN_CHUNK / GDN_WARPS, DPL = GDN_DK / 32;
    static_assert(GDN_CHUNK % GDN_WARPS == 0 && GDN_DK % 32 == 0, "rows per warp, dims per lane");
    float kv[RPW][DPL], qv[RPW][DPL], bp[RPW], ap[RPW];
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int r = warp + GDN_WARPS * i;
        const float* row = qkv + (size_t)(c0 + (r < n ? r : 0)) * CONV_DIM;  // rows past T: any valid row, unused
#pragma unroll
        for (int d = 0; d < DPL; ++d) {
            kv[i][d] = row[KEY_DIM + kh * GDN_DK + lane + 32 * d];
            qv[i][d] = row[kh * GDN_DK + lane + 32 * d];
        }
        bp[i] = b_proj[(size_t)(c0 + (r < n ? r : 0)) * GDN_PROJ_COLS + h];
        ap[i] = a_proj[(size_t)(c0 + (r < n ? r : 0)) * GDN_PROJ_COLS + h];
    }
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
        const int r = warp + GDN_WARPS * i;
        float* kr = Ks + r * KS;
        if (r < n) {
            float sk = 0.0f, sq = 0.0f;
#pragma unroll
            for (int d = 0; d < DPL; ++d) {
                sk = fmaf(kv[i][d], kv[i][d], sk);
                sq = fmaf(qv[i][d], qv[i][d], sq);
            }
            const float inv_k = rsqrtf(warp_sum(sk) + 1e-6f);
            sq = warp_sum(sq);
#pragma unroll
            for (int d = 0; d < DPL; ++d) kr[lane + 32 * d] = kv[i][d] * inv_k;
            if (lane == 0) {
                qsc[r] = rsqrtf(sq + 1e-6f) * GDN_Q_SCALE;
                bet[r] = sigmoid_f(bp[i]);
                gam[r] = neg_a * softplus_f(ap[i] + dtb);
            }
        } else {
#pragma unroll
            for (int d = 0; d < DPL; ++d) kr[lane + 32 * d] = 0.0f;
            if (lane == 0) { qsc[r] = 0.0f; bet[r] = 0.0f; gam[r] = 0.0f; }
        }
    }
    gdn_prep_scan(gam, bet, bek, gam_out);
}

// Prep, step 2: Kd = K exp(gamma_C - gamma) and Qg = Q qscale exp(gamma) (zero past T), one warp per
// row, into this chunk and head's rows of kd and qg. Row r of Q is at q + r * q_stride (global or
// shared memory); rows past T are not read.
template <int KS>
__device__ __forceinline__ void gdn_prep_kd_qg(const float* q, size_t q_stride, int n, const float* Ks,
                                               const float* gam, const float* qsc, float* __restrict__ kd,
                                               float* __restrict__ qg) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float gam_c = gam[GDN_CHUNK - 1];
#pragma unroll
    for (int r = warp; r < GDN_CHUNK; r += GDN_WARPS) {
        const float tail = expf(gam_c - gam[r]), qs = r < n ? qsc[r] * expf(gam[r]) : 0.0f;
        const float* qrow = q + (size_t)(r < n ? r : 0) * q_stride;
        float* kdr = kd + (size_t)r * GDN_DK;
        float* qgr = qg + (size_t)r * GDN_DK;
        for (int d = lane; d < GDN_DK; d += 32) {
            kdr[d] = Ks[r * KS + d] * tail;
            qgr[d] = r < n ? qrow[d] * qs : 0.0f;
        }
    }
}

// Prep, step 3: X = (I + A)^-1 by forward substitution, one column j per GDN_PARTS lanes (warp-local):
// X[r][j] = -(A[r][j] + sum_{j<s<r} A[r][s] X[s][j]), stored at M[j][r] (A stays intact below).
// A is M's strictly lower part; a GDN_THREADS block.
__device__ __forceinline__ void gdn_solve_x(float* M) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int j = warp * GDN_CPW + lane % GDN_CPW, part = lane / GDN_CPW;
    for (int r = 1; r < GDN_CHUNK; ++r) {
        float sum = 0.0f;
        if (j < r) {
            if (part == 0) sum = M[r * GDN_MS + j];
            for (int s = j + 1 + part; s < r; s += GDN_PARTS) sum = fmaf(M[r * GDN_MS + s], M[j * GDN_MS + s], sum);
        }
#pragma unroll
        for (int off = GDN_CPW; off < 32; off <<= 1) sum += __shfl_xor_sync(FULL_MASK, sum, off);
        if (j < r && part == 0) M[j * GDN_MS + r] = -sum;
        __syncwarp();
    }
}
"#;

/// The delta rule's three kernels on CUDA cores (register-tiled FMA).
pub const GDN_CUDA_CORES: &str = r#"// ---- the chunked delta rule on CUDA cores ----
constexpr int GDN_KS = GDN_DK + 1;        // K row stride (conflict-free column reads)
constexpr int GDN_TQ = GDN_CHUNK / 4;        // 4x4 register tiles: rows t + GDN_TQ*i
constexpr int GDN_TILES = GDN_TQ * GDN_TQ;    // tiles of a CHUNK x CHUNK matrix
static_assert(GDN_CHUNK % 4 == 0 && GDN_DK % 4 == 0 && GDN_DV % 4 == 0, "register tiles");
// acc[i][j] = sum_d x[i * x_step + d] * y[GDN_TQ * j * GDN_KS + d] (rows of K spaced GDN_TQ apart).
__device__ __forceinline__ void gdn_tile_dot(float (&acc)[4][4], const float* x, int x_step, const float* y) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < GDN_DK; ++d) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) { a[i] = x[i * x_step + d]; b[i] = y[GDN_TQ * i * GDN_KS + d]; }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}
// acc[i][j] = sum_{s <= r_i, s < n} X[r_i][s] scale[s] src[s * stride + tc + NQ j], r_i = tr + GDN_TQ i.
// X is unit lower triangular; its strictly lower part is stored transposed: X[r][s] at M[s * GDN_MS + r].
template <int NQ>
__device__ __forceinline__ void gdn_x_times(float (&acc)[4][4], const float* M, int tr, int n, const float* src,
                                            int stride, int tc, const float* scale) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    const int s_end = min(n, tr + GDN_TQ * 3 + 1);
#pragma unroll 2
    for (int s = 0; s < s_end; ++s) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = tr + GDN_TQ * i;
            a[i] = s < r ? M[s * GDN_MS + r] : (s == r ? 1.0f : 0.0f);
        }
        const float sc = scale[s];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = sc * src[(size_t)s * stride + tc + NQ * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}
constexpr int GDN_PREP_SMEM_FLOATS = GDN_CHUNK * GDN_KS + GDN_CHUNK * GDN_MS + 4 * GDN_CHUNK;
static_assert(GDN_PREP_SMEM_FLOATS * 4 == GDN_SMEM_BYTES, "the launch plan's dynamic smem size");

// One block per (v-head h = blockIdx.x, chunk blockIdx.y).
extern "C" __global__ void __launch_bounds__(GDN_THREADS)
prefill_gdn_chunked_prep(GDN_PREP_PARAMS) {
    prefill_entry();
    extern __shared__ float4 gdn_smem4[];
    float* Ks = reinterpret_cast<float*>(gdn_smem4);  // [CHUNK][GDN_KS] L2-normed k
    float* M = Ks + GDN_CHUNK * GDN_KS;               // [CHUNK][GDN_MS]: A below the diagonal, X^T above
    float* gam = M + GDN_CHUNK * GDN_MS;              // cumulative log-decay
    float* bet = gam + GDN_CHUNK;                     // beta
    float* qsc = bet + GDN_CHUNK;                     // q scale: rsqrt(|q|^2 + eps) * dk^-1/2
    float* bek = qsc + GDN_CHUNK;                     // beta exp(gamma) (W's right-hand side scale)
    const int h = blockIdx.x, c = blockIdx.y, c0 = c * GDN_CHUNK;
    const int n = min(GDN_CHUNK, T - c0);
    const size_t hc = (size_t)c * GDN_HV + h;  // (chunk, head) index of the scratch buffers
    gdn_prep_rows<GDN_KS>(qkv, b_proj, a_proj, -expf(a_log[h]), dt_bias[h], h, c0, n, Ks, gam, bet, qsc, bek,
                          gam_out + hc * GDN_CHUNK);
    // 1. A (strictly lower part of M). 4x4 register tiles: rows tr + GDN_TQ i, columns tc + GDN_TQ j.
    for (int it = threadIdx.x; it < GDN_TILES; it += GDN_THREADS) {
        const int tr = it / GDN_TQ, tc = it % GDN_TQ;
        float acc[4][4];
        gdn_tile_dot(acc, Ks + tr * GDN_KS, GDN_TQ * GDN_KS, Ks + tc * GDN_KS);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int r = tr + GDN_TQ * i, s = tc + GDN_TQ * j;
                if (s < r) M[r * GDN_MS + s] = bet[r] * acc[i][j] * expf(gam[r] - gam[s]);
            }
    }
    gdn_prep_kd_qg<GDN_KS>(qkv + (size_t)c0 * CONV_DIM + (h / GDN_V_PER_K) * GDN_DK, CONV_DIM, n, Ks, gam, qsc,
                           kd + hc * GDN_CHUNK * GDN_DK, qg + hc * GDN_CHUNK * GDN_DK);
    __syncthreads();
    gdn_solve_x(M);
    __syncthreads();
    // 4. U = X (beta V): 4x4 tiles, rows tr + GDN_TQ i, columns tc + (GDN_DV/4) j; V read from global
    for (int it = threadIdx.x; it < GDN_TQ * (GDN_DV / 4); it += GDN_THREADS) {
        const int tr = it / (GDN_DV / 4), tc = it % (GDN_DV / 4);
        float acc[4][4];
        gdn_x_times<GDN_DV / 4>(acc, M, tr, n, qkv + (size_t)c0 * CONV_DIM + 2 * KEY_DIM + h * GDN_DV, CONV_DIM, tc,
                                bet);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                u[(hc * GDN_CHUNK + tr + GDN_TQ * i) * GDN_DV + tc + (GDN_DV / 4) * j] = acc[i][j];
    }
    // 5. W = X (beta exp(gamma) K), K from smem
    for (int it = threadIdx.x; it < GDN_TQ * (GDN_DK / 4); it += GDN_THREADS) {
        const int tr = it / (GDN_DK / 4), tc = it % (GDN_DK / 4);
        float acc[4][4];
        gdn_x_times<GDN_DK / 4>(acc, M, tr, n, Ks, GDN_KS, tc, bek);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                w[(hc * GDN_CHUNK + tr + GDN_TQ * i) * GDN_DK + tc + (GDN_DK / 4) * j] = acc[i][j];
    }
    // 6. P = (Q K^T) D, lower incl. diagonal, zero past T; q rows from global (L1), same tiles as A
    for (int it = threadIdx.x; it < GDN_TILES; it += GDN_THREADS) {
        const int tr = it / GDN_TQ, tc = it % GDN_TQ;
        // rows past the prompt read row c0 (any valid row) and are masked below
        const float* q0 = qkv + (size_t)c0 * CONV_DIM + (h / GDN_V_PER_K) * GDN_DK;
        const float* qr[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) qr[i] = tr + GDN_TQ * i < n ? q0 + (size_t)(tr + GDN_TQ * i) * CONV_DIM : q0;
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < GDN_DK; ++d) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) { a[i] = qr[i][d]; b[i] = Ks[(tc + GDN_TQ * i) * GDN_KS + d]; }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int r = tr + GDN_TQ * i, s = tc + GDN_TQ * j;
                p[(hc * GDN_CHUNK + r) * GDN_CHUNK + s] =
                    (s <= r && r < n) ? qsc[r] * acc[i][j] * expf(gam[r] - gam[s]) : 0.0f;
            }
    }
}

// The state pass: one block per (v-head, GDN_ST_COLS value columns), sequential over chunks. Per
// chunk, as two small matrix products through shared memory (no per-row dependency chain):
//   V_new = U - W S_c      (C x GDN_ST_COLS outputs: rows i0 + GDN_ST_RSTEP j of column c per thread)
//   S <- exp(gamma_C) S + Kd^T V_new   (GDN_DK x GDN_ST_COLS: keys kb .. kb + GDN_ST_KPT - 1 of column c)
// W and then Kd pass through one smem tile whose rows are 16-byte aligned, so both products read it
// with float4 loads (conflict-free: a warp's 4 row groups start 4 banks apart); S_c is stored for the
// output kernel.
constexpr int GDN_ST_MS = GDN_DK + 4;                                   // tile row stride (16-byte rows)
constexpr int GDN_ST_RPT = GDN_CHUNK * GDN_ST_COLS / GDN_ST_THREADS;    // V_new rows per thread
constexpr int GDN_ST_KPT = GDN_DK * GDN_ST_COLS / GDN_ST_THREADS;       // state keys per thread
constexpr int GDN_ST_RSTEP = GDN_ST_THREADS / GDN_ST_COLS;              // row step between a thread's rows
static_assert(GDN_ST_THREADS % GDN_ST_COLS == 0 && GDN_CHUNK % GDN_ST_RSTEP == 0 && GDN_DK % 4 == 0,
              "state pass layout");
static_assert(GDN_DK * GDN_ST_COLS % GDN_ST_THREADS == 0 && GDN_ST_KPT % 2 == 0, "state pass keys");
static_assert(GDN_DV % GDN_ST_COLS == 0, "a block's columns share one head");
static_assert((GDN_CHUNK * GDN_ST_MS + GDN_DK * GDN_ST_COLS + GDN_CHUNK * GDN_ST_COLS) * 4 <= 48 * 1024,
              "state pass static smem");

// A C x GDN_DK f32 tile into Ms (row stride GDN_ST_MS): all 16-byte loads issued before the stores.
__device__ __forceinline__ void gdn_state_load_tile(float* Ms, const float* __restrict__ src) {
    constexpr int V4 = GDN_CHUNK * GDN_DK / 4 / GDN_ST_THREADS;
    static_assert(GDN_CHUNK * GDN_DK % (4 * GDN_ST_THREADS) == 0, "tile load");
    float4 v[V4];
#pragma unroll
    for (int i = 0; i < V4; ++i) v[i] = reinterpret_cast<const float4*>(src)[i * GDN_ST_THREADS + threadIdx.x];
#pragma unroll
    for (int i = 0; i < V4; ++i) {
        const int e = 4 * (i * GDN_ST_THREADS + threadIdx.x), r = e / GDN_DK, k = e % GDN_DK;
        *reinterpret_cast<float4*>(Ms + r * GDN_ST_MS + k) = v[i];
    }
}

extern "C" __global__ void __launch_bounds__(GDN_ST_THREADS)
prefill_gdn_chunked_state(GDN_STATE_PARAMS) {
    prefill_entry();
    gdn_advance_conv_state(x, T, conv_state);
    __shared__ __align__(16) float Ms[GDN_CHUNK * GDN_ST_MS];  // W, then Kd, of this chunk and head
    __shared__ float Ss[GDN_DK * GDN_ST_COLS];                 // S_c[key][c]
    __shared__ float Vs[GDN_CHUNK * GDN_ST_COLS];              // U, then V_new [r][c]
    const int h = blockIdx.x / (GDN_DV / GDN_ST_COLS), col0 = (blockIdx.x % (GDN_DV / GDN_ST_COLS)) * GDN_ST_COLS;
    const int c = threadIdx.x % GDN_ST_COLS, i0 = threadIdx.x / GDN_ST_COLS, kb = i0 * GDN_ST_KPT;
    float* st = state + (size_t)h * GDN_DK * GDN_DV + col0;  // S[key * GDN_DV + c]
    float S[GDN_ST_KPT];  // S[kb + j][c]
#pragma unroll
    for (int j = 0; j < GDN_ST_KPT; ++j) {
        S[j] = st[(size_t)(kb + j) * GDN_DV + c];
        Ss[(kb + j) * GDN_ST_COLS + c] = S[j];
    }
    const int nc = (T + GDN_CHUNK - 1) / GDN_CHUNK;
    for (int ch = 0; ch < nc; ++ch) {
        const size_t hc = (size_t)ch * GDN_HV + h;
        float* scc = sc + (hc * GDN_DV + col0 + c) * GDN_DK;
#pragma unroll
        for (int j = 0; j < GDN_ST_KPT; ++j) scc[kb + j] = S[j];
        gdn_state_load_tile(Ms, w + hc * GDN_CHUNK * GDN_DK);
        float* uc = u + hc * GDN_CHUNK * GDN_DV + col0;
        for (int e = threadIdx.x; e < GDN_CHUNK * GDN_ST_COLS; e += GDN_ST_THREADS)
            Vs[e] = uc[(size_t)(e / GDN_ST_COLS) * GDN_DV + e % GDN_ST_COLS];
        __syncthreads();  // W, U and S_c are in smem
        {
            float acc[GDN_ST_RPT];
#pragma unroll
            for (int j = 0; j < GDN_ST_RPT; ++j) acc[j] = 0.0f;
#pragma unroll 2
            for (int k = 0; k < GDN_DK; k += 4) {
                float sk[4];
#pragma unroll
                for (int q = 0; q < 4; ++q) sk[q] = Ss[(k + q) * GDN_ST_COLS + c];
#pragma unroll
                for (int j = 0; j < GDN_ST_RPT; ++j) {
                    const float4 wv = *reinterpret_cast<const float4*>(Ms + (i0 + GDN_ST_RSTEP * j) * GDN_ST_MS + k);
                    acc[j] = fmaf(wv.x, sk[0], acc[j]);
                    acc[j] = fmaf(wv.y, sk[1], acc[j]);
                    acc[j] = fmaf(wv.z, sk[2], acc[j]);
                    acc[j] = fmaf(wv.w, sk[3], acc[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < GDN_ST_RPT; ++j) {
                const int r = i0 + GDN_ST_RSTEP * j;
                const float vn = Vs[r * GDN_ST_COLS + c] - acc[j];
                Vs[r * GDN_ST_COLS + c] = vn;
                uc[(size_t)r * GDN_DV + c] = vn;
            }
        }
        __syncthreads();  // V_new complete; the tile is free for Kd
        gdn_state_load_tile(Ms, kd + hc * GDN_CHUNK * GDN_DK);
        __syncthreads();
        {
            const float decay = expf(gam[hc * GDN_CHUNK + GDN_CHUNK - 1]);  // exp(gamma_C)
            float acc[GDN_ST_KPT];
#pragma unroll
            for (int j = 0; j < GDN_ST_KPT; ++j) acc[j] = 0.0f;
#pragma unroll 4
            for (int r = 0; r < GDN_CHUNK; ++r) {
                const float v = Vs[r * GDN_ST_COLS + c];
                const float* kr = Ms + r * GDN_ST_MS + kb;
#pragma unroll
                for (int j = 0; j < GDN_ST_KPT; j += 2) {
                    const float2 k2 = *reinterpret_cast<const float2*>(kr + j);
                    acc[j] = fmaf(k2.x, v, acc[j]);
                    acc[j + 1] = fmaf(k2.y, v, acc[j + 1]);
                }
            }
#pragma unroll
            for (int j = 0; j < GDN_ST_KPT; ++j) S[j] = fmaf(decay, S[j], acc[j]);
        }
        __syncthreads();  // every read of Ms, Vs and Ss for this chunk is done
#pragma unroll
        for (int j = 0; j < GDN_ST_KPT; ++j) Ss[(kb + j) * GDN_ST_COLS + c] = S[j];
    }
#pragma unroll
    for (int j = 0; j < GDN_ST_KPT; ++j) st[(size_t)(kb + j) * GDN_DV + c] = S[j];
}

// Outputs: one block per (v-head, GDN_OCOLS value columns) = blockIdx.x and chunk = blockIdx.y;
// 4x2 register tiles of O: rows tr + GDN_TQ i, columns tc + GDN_OXC j.
constexpr int GDN_OSL = GDN_DV / GDN_OCOLS;  // value slices per head
constexpr int GDN_OXC = GDN_OCOLS / 2;
constexpr int GDN_OSS = GDN_OCOLS + 1;       // S_c row stride in smem (conflict-free transpose)
static_assert(GDN_DV % GDN_OCOLS == 0 && GDN_OCOLS % 2 == 0, "output slices");
extern "C" __global__ void __launch_bounds__(GDN_OUT_THREADS)
prefill_gdn_chunked_output(int T, const float* __restrict__ qg, const float* __restrict__ p,
                           const float* __restrict__ u, const float* __restrict__ sc, float* __restrict__ o) {
    prefill_entry();
    __shared__ float Ss[GDN_DK * GDN_OSS];  // S_c[key][col] of this slice
    const int h = blockIdx.x / GDN_OSL, col0 = (blockIdx.x % GDN_OSL) * GDN_OCOLS, c = blockIdx.y;
    const int c0 = c * GDN_CHUNK, n = min(GDN_CHUNK, T - c0);
    const size_t hc = (size_t)c * GDN_HV + h;
    const float* scc = sc + (hc * GDN_DV + col0) * GDN_DK;
    for (int e = threadIdx.x; e < GDN_DK * GDN_OCOLS; e += GDN_OUT_THREADS) {
        const int key = e % GDN_DK, col = e / GDN_DK;
        Ss[key * GDN_OSS + col] = scc[(size_t)col * GDN_DK + key];
    }
    __syncthreads();
    const float* qc = qg + hc * GDN_CHUNK * GDN_DK;
    const float* pc = p + hc * GDN_CHUNK * GDN_CHUNK;
    const float* vc = u + hc * GDN_CHUNK * GDN_DV + col0;  // V_new
    for (int it = threadIdx.x; it < GDN_TQ * GDN_OXC; it += GDN_OUT_THREADS) {
        const int tr = it / GDN_OXC, tc = it % GDN_OXC;
        float acc[4][2];
#pragma unroll
        for (int i = 0; i < 4; ++i) { acc[i][0] = 0.0f; acc[i][1] = 0.0f; }
#pragma unroll 4
        for (int key = 0; key < GDN_DK; ++key) {
            float a[4], b[2];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = qc[(tr + GDN_TQ * i) * GDN_DK + key];
#pragma unroll
            for (int j = 0; j < 2; ++j) b[j] = Ss[key * GDN_OSS + tc + GDN_OXC * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // P is zero above the diagonal and past n: no masks in the intra-chunk sum.
        const int s_end = min(n, tr + GDN_TQ * 3 + 1);
#pragma unroll 2
        for (int s = 0; s < s_end; ++s) {
            float a[4], b[2];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = pc[(tr + GDN_TQ * i) * GDN_CHUNK + s];
#pragma unroll
            for (int j = 0; j < 2; ++j) b[j] = vc[s * GDN_DV + tc + GDN_OXC * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = tr + GDN_TQ * i;
            if (r >= n) continue;
#pragma unroll
            for (int j = 0; j < 2; ++j) o[(size_t)(c0 + r) * VALUE_DIM + h * GDN_DV + col0 + tc + GDN_OXC * j] = acc[i][j];
        }
    }
}
"#;

/// The delta rule's three kernels on tensor cores (sm_80+): mma.sync tf32 with
/// split operands, f32-like precision.
pub const GDN_TENSOR_CORES: &str = r#"// ---- the chunked delta rule on tensor cores: mma.sync m16n8k8 tf32, split operands (3xTF32) ----
// Same launches, scratch and math as the CUDA-core kernels; the matrix products run on tensor cores.
// An f32 value x is carried as hi = tf32(x) and lo = tf32(x - hi); D += Al Bh + Ah Bl + Ah Bh keeps
// about 21 mantissa bits of each operand (the dropped Al Bl is ~2^-22 relative), f32-like at 3 mma
// per product. Fragments of m16n8k8 (g = lane / 4, t = lane % 4): A (16 x 8) a0 (g, t), a1 (g + 8, t),
// a2 (g, t + 4), a3 (g + 8, t + 4); B (8 x 8, k x n) b0 (t, g), b1 (t + 4, g); C c0 (g, 2t),
// c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1).
// Shared-memory tiles are padded so that fragment loads are conflict-free: tiles read along k (A, or
// B stored [n][k]) use row strides = 4 (mod 32) (bank 4g + t), tiles read across rows of k (B stored
// [k][n], or A stored transposed) use strides = 8 or 24 (mod 32) (bank 8t + g or 24t + g).
struct Tf32A { u32 hi[4], lo[4]; };
struct Tf32B { u32 hi[2], lo[2]; };
__device__ __forceinline__ void tf32_split(float x, u32& hi, u32& lo) {
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(hi) : "f"(x));
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(lo) : "f"(x - __uint_as_float(hi)));
}
__device__ __forceinline__ void tf32_frag_a(Tf32A& f, float a0, float a1, float a2, float a3) {
    tf32_split(a0, f.hi[0], f.lo[0]);
    tf32_split(a1, f.hi[1], f.lo[1]);
    tf32_split(a2, f.hi[2], f.lo[2]);
    tf32_split(a3, f.hi[3], f.lo[3]);
}
__device__ __forceinline__ void tf32_frag_b(Tf32B& f, float b0, float b1) {
    tf32_split(b0, f.hi[0], f.lo[0]);
    tf32_split(b1, f.hi[1], f.lo[1]);
}
// A(r, k) = s[r * stride + k]: a row-major tile at the fragment's origin.
__device__ __forceinline__ void tf32_load_a(Tf32A& f, const float* s, int stride, int g, int t) {
    tf32_frag_a(f, s[g * stride + t], s[(g + 8) * stride + t], s[g * stride + t + 4], s[(g + 8) * stride + t + 4]);
}
// A(r, k) = s[k * stride + r]: the transpose of a row-major tile.
__device__ __forceinline__ void tf32_load_a_t(Tf32A& f, const float* s, int stride, int g, int t) {
    tf32_frag_a(f, s[t * stride + g], s[t * stride + g + 8], s[(t + 4) * stride + g], s[(t + 4) * stride + g + 8]);
}
// B(k, n) = s[n * stride + k]: stored [n][k].
__device__ __forceinline__ void tf32_load_b_nk(Tf32B& f, const float* s, int stride, int g, int t) {
    tf32_frag_b(f, s[g * stride + t], s[g * stride + t + 4]);
}
// B(k, n) = s[k * stride + n]: stored [k][n].
__device__ __forceinline__ void tf32_load_b_kn(Tf32B& f, const float* s, int stride, int g, int t) {
    tf32_frag_b(f, s[t * stride + g], s[(t + 4) * stride + g]);
}
__device__ __forceinline__ void mma_tf32_1688(float* d, const u32* a, const u32* b) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma_3xtf32(float* d, const Tf32A& a, const Tf32B& b) {
    mma_tf32_1688(d, a.lo, b.hi);
    mma_tf32_1688(d, a.hi, b.lo);
    mma_tf32_1688(d, a.hi, b.hi);
}
// A ROWS x COLS f32 tile (COLS % 4 == 0, 16-byte aligned rows) from global (row stride gs) into smem
// (row stride ss) by 16-byte cp.async copies; the caller commits and waits.
template <int ROWS, int COLS, int THREADS>
__device__ __forceinline__ void gdn_copy_tile(float* dst, int ss, const float* __restrict__ src, size_t gs) {
    constexpr int CPR = COLS / 4;
    static_assert(COLS % 4 == 0, "16-byte chunks");
    for (int i = threadIdx.x; i < ROWS * CPR; i += THREADS) {
        const int r = i / CPR, ch = i % CPR;
        copy16(to_smem_ptr(dst + r * ss + ch * 4), src + r * gs + ch * 4, 16u);
    }
}
// Row stride of a [k][n] tile of `cols` columns: = 8 or 24 (mod 32).
__host__ __device__ constexpr int gdn_kn_stride(int cols) { return cols % 32 == 8 || cols % 32 == 24 ? cols : cols + 8; }
constexpr int GDN_TC_KS = GDN_DK + 4;     // row stride of [.][dk] tiles read along dk
constexpr int GDN_TC_CS = GDN_CHUNK + 4;  // row stride of C x C tiles read along their rows
static_assert(GDN_CHUNK == 64 && GDN_DK % 16 == 0 && GDN_DV % 8 == 0, "tensor-core tiles");

// Prep: one block per (v-head h = blockIdx.x, chunk blockIdx.y), GDN_THREADS threads. The products
// A = K K^T, P = Q K^T, U = X (beta V) and W = X (beta exp(gamma) K) are warp tiles of m16n8k8: warp
// w owns rows 16 (w % 4) .. + 15 and column group w / 4 of GDN_TP_CG (C / GDN_TP_CG columns of the
// C x C products, dv / GDN_TP_CG of U and W). X, lower triangular, is solved in 16 x 16 blocks
// straight into a row-major tile that reads as A fragments, and U, W stop their k steps at a
// warp's last row.
constexpr int GDN_TP_XS = GDN_CHUNK + 4;
// X = (I + A)^-1 in 16 x 16 blocks, A being M's strictly lower part; X goes row-major into Xs
// (zero above the diagonal). The scalar solve walks 63 dependent rows (the prep's longest chain,
// measured on an H100); here the diagonal blocks are inverted by forward substitution at once
// (2 warps per block, 8 columns each, 4 lanes per column: 15 dependent rows), then block rows
// i = 1, 2, 3 in turn: T_j = sum_{j <= k < i} A_ik X_kj for every j < i, kept in M's unused upper
// triangle at block (j, i), then X_ij = -X_ii T_j.
constexpr int GDN_SB = 16;
__device__ __forceinline__ void gdn_solve_x_blocked(float* M, float* Xs) {
    static_assert(GDN_CHUNK == 4 * GDN_SB && GDN_WARPS == 8, "blocked solve: 4 diagonal blocks, 2 warps each");
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int e = threadIdx.x; e < GDN_CHUNK * GDN_CHUNK; e += GDN_THREADS) {
        const int r = e / GDN_CHUNK, c = e % GDN_CHUNK;
        Xs[r * GDN_TP_XS + c] = r == c ? 1.0f : 0.0f;
    }
    __syncthreads();
    {
        const int b0 = GDN_SB * (warp >> 1), j = b0 + 8 * (warp & 1) + (lane & 7), part = lane >> 3;
        for (int r = b0 + 1; r < b0 + GDN_SB; ++r) {
            float sum = 0.0f;
            if (j < r) {
                if (part == 0) sum = M[r * GDN_MS + j];
                for (int c = j + 1 + part; c < r; c += 4) sum = fmaf(M[r * GDN_MS + c], Xs[c * GDN_TP_XS + j], sum);
            }
            sum += __shfl_xor_sync(FULL_MASK, sum, 8);
            sum += __shfl_xor_sync(FULL_MASK, sum, 16);
            if (j < r && part == 0) Xs[r * GDN_TP_XS + j] = -sum;
            __syncwarp();
        }
    }
    __syncthreads();
    for (int i = 1; i < GDN_CHUNK / GDN_SB; ++i) {
        for (int e = threadIdx.x; e < i * GDN_SB * GDN_SB; e += GDN_THREADS) {
            const int j = e / (GDN_SB * GDN_SB), rr = e / GDN_SB % GDN_SB, cc = e % GDN_SB;
            const float* a = M + (GDN_SB * i + rr) * GDN_MS;
            float acc = 0.0f;
            for (int c = GDN_SB * j; c < GDN_SB * i; ++c) acc = fmaf(a[c], Xs[c * GDN_TP_XS + GDN_SB * j + cc], acc);
            M[(GDN_SB * j + rr) * GDN_MS + GDN_SB * i + cc] = acc;
        }
        __syncthreads();
        for (int e = threadIdx.x; e < i * GDN_SB * GDN_SB; e += GDN_THREADS) {
            const int j = e / (GDN_SB * GDN_SB), rr = e / GDN_SB % GDN_SB, cc = e % GDN_SB;
            const float* x = Xs + (GDN_SB * i + rr) * GDN_TP_XS + GDN_SB * i;  // row rr of X_ii
            float acc = 0.0f;
            for (int c = 0; c <= rr; ++c) acc = fmaf(x[c], M[(GDN_SB * j + c) * GDN_MS + GDN_SB * i + cc], acc);
            Xs[(GDN_SB * i + rr) * GDN_TP_XS + GDN_SB * j + cc] = -acc;
        }
        __syncthreads();
    }
}
// Prep, step 0 on tensor cores: this chunk's q and k rows (k-head h / (Hv/Hk)) into Qs and Ks (row
// stride GDN_TC_KS) and, with GDN_FUSED_CONV, the v rows of head h into Vs (row stride GDN_TP_VS);
// rows past the prompt are zero. GDN_FUSED_CONV: the depthwise causal conv and SiLU are computed
// here from the input projection `src` (row stride GDN_PROJ_COLS, pre-conv [q | k | v] in its first
// CONV_DIM columns; inputs before the prompt from conv_state); otherwise `src` is the conv kernel's
// output (row stride CONV_DIM) and v stays there. An item is one channel over GDN_TP_RSEG rows
// (plus the conv's CONV_K - 1 earlier inputs); a warp's lanes take consecutive channels (coalesced
// loads, conflict-free smem stores). A thread loads the inputs of GDN_TP_BATCH items before it
// computes and stores any, so their loads share one memory round trip (one item at a time measured
// 1.40 instead of 1.01 ms of prep per 0.8B prefill of 520 tokens on an H100). The caller synchronises.
constexpr int GDN_TP_RSEG = 16;
constexpr int GDN_TP_BATCH = 3;
constexpr int GDN_TP_HALO = GDN_FUSED_CONV ? CONV_K - 1 : 0;
constexpr int GDN_TP_VS = gdn_kn_stride(GDN_DV);  // Vs row stride (read across k by U = X (beta V))
constexpr int GDN_TP_SRC_STRIDE = GDN_FUSED_CONV ? GDN_PROJ_COLS : CONV_DIM;
__device__ __forceinline__ void gdn_tc_prep_load(const float* __restrict__ src, const float* __restrict__ conv_w,
                                                 const float* __restrict__ conv_state, int h, int c0, int n,
                                                 float* Qs, float* Ks, float* Vs) {
    constexpr int CH = 2 * GDN_DK + (GDN_FUSED_CONV ? GDN_DV : 0);  // channels staged: q, k (, v)
    constexpr int ITEMS = CH * (GDN_CHUNK / GDN_TP_RSEG), WIN = GDN_TP_RSEG + GDN_TP_HALO;
    static_assert(CH % 32 == 0 && GDN_CHUNK % GDN_TP_RSEG == 0, "whole warps of channels, whole segments");
    const int kh = h / GDN_V_PER_K;
    // Item it: channel ch of the conv's [q | k | v], its first row r0 and its destination column.
    auto place = [&](int it, int& ch, int& r0, float*& dst, int& ds) {
        const int j = it % CH;
        r0 = it / CH * GDN_TP_RSEG;
        if (j < GDN_DK) {
            ch = kh * GDN_DK + j; dst = Qs + j; ds = GDN_TC_KS;
        } else if (j < 2 * GDN_DK) {
            ch = KEY_DIM + kh * GDN_DK + j - GDN_DK; dst = Ks + j - GDN_DK; ds = GDN_TC_KS;
        } else {
            ch = 2 * KEY_DIM + h * GDN_DV + j - 2 * GDN_DK; dst = Vs + j - 2 * GDN_DK; ds = GDN_TP_VS;
        }
    };
    for (int i0 = threadIdx.x; i0 < ITEMS; i0 += GDN_TP_BATCH * GDN_THREADS) {
        float win[GDN_TP_BATCH][WIN], wc[GDN_TP_BATCH][CONV_K];
        float* dst[GDN_TP_BATCH];
        int ds[GDN_TP_BATCH], r0[GDN_TP_BATCH];
#pragma unroll
        for (int b = 0; b < GDN_TP_BATCH; ++b) {
            const int it = i0 + b * GDN_THREADS;
            if (it >= ITEMS) continue;
            int ch;
            place(it, ch, r0[b], dst[b], ds[b]);
            // win[b][i]: input c0 + r0 - GDN_TP_HALO + i (zero past the prompt)
#pragma unroll
            for (int i = 0; i < WIN; ++i) {
                const int p = c0 + r0[b] - GDN_TP_HALO + i;
                win[b][i] = p < 0        ? conv_state[(size_t)ch * (CONV_K - 1) + (CONV_K - 1 + p)]
                            : p - c0 < n ? src[(size_t)p * GDN_TP_SRC_STRIDE + ch]
                                         : 0.0f;
            }
            if constexpr (GDN_FUSED_CONV) {
#pragma unroll
                for (int i = 0; i < CONV_K; ++i) wc[b][i] = conv_w[(size_t)ch * CONV_K + i];
            }
        }
#pragma unroll
        for (int b = 0; b < GDN_TP_BATCH; ++b) {
            if (i0 + b * GDN_THREADS >= ITEMS) continue;
#pragma unroll
            for (int r = 0; r < GDN_TP_RSEG; ++r) {
                float y = win[b][r];
                if constexpr (GDN_FUSED_CONV) {
                    float acc = 0.0f;
#pragma unroll
                    for (int i = 0; i < CONV_K; ++i) acc = fmaf(wc[b][i], win[b][r + i], acc);
                    y = r0[b] + r < n ? silu_f(acc) : 0.0f;
                }
                dst[b][(r0[b] + r) * ds[b]] = y;
            }
        }
    }
}

// Shared memory: Ks | a region that holds Qs first, then M and Xs (the solve) | Vs (fused conv) | 4
// per-row vectors. Q is last read before A is written to M (schedules::gdn_tc_prep_smem_bytes).
constexpr int GDN_TP_SOLVE_FLOATS = GDN_CHUNK * GDN_MS + GDN_CHUNK * GDN_TP_XS;
constexpr int GDN_TP_REGION = GDN_TP_SOLVE_FLOATS > GDN_CHUNK * GDN_TC_KS ? GDN_TP_SOLVE_FLOATS : GDN_CHUNK * GDN_TC_KS;
constexpr int GDN_TP_SMEM_FLOATS =
    GDN_CHUNK * GDN_TC_KS + GDN_TP_REGION + (GDN_FUSED_CONV ? GDN_CHUNK * GDN_TP_VS : 0) + 4 * GDN_CHUNK;
static_assert(GDN_TP_SMEM_FLOATS * 4 == GDN_SMEM_BYTES, "the launch plan's dynamic smem size");
constexpr int GDN_TP_CG = GDN_WARPS / 4;               // column groups (4 row groups of 16)
constexpr int GDN_TP_APN = GDN_CHUNK / 8 / GDN_TP_CG;  // n8 tiles of A and P per warp
constexpr int GDN_TP_UWN = GDN_DV / 8 / GDN_TP_CG;     // n8 tiles of U and W per warp
static_assert(GDN_WARPS % 4 == 0 && GDN_TP_APN * 8 * GDN_TP_CG == GDN_CHUNK && GDN_TP_UWN * 8 * GDN_TP_CG == GDN_DV &&
                  GDN_TP_UWN >= 1 && GDN_DV == GDN_DK,
              "prep warp tiles");
extern "C" __global__ void __launch_bounds__(GDN_THREADS)
prefill_gdn_chunked_prep(GDN_PREP_PARAMS) {
    prefill_entry();
    extern __shared__ float4 gdn_smem4[];
    float* Ks = reinterpret_cast<float*>(gdn_smem4);  // [CHUNK][GDN_TC_KS] k, then L2-normed
    float* Qs = Ks + GDN_CHUNK * GDN_TC_KS;           // [CHUNK][GDN_TC_KS] q (until A is stored)
    float* M = Qs;                                    // [CHUNK][GDN_MS]: A below the diagonal, solve blocks above
    float* Xs = M + GDN_CHUNK * GDN_MS;               // [CHUNK][GDN_TP_XS]: X row-major (unit lower)
    float* Vs = Qs + GDN_TP_REGION;                   // [CHUNK][GDN_TP_VS] post-conv v (GDN_FUSED_CONV)
    float* gam = Vs + (GDN_FUSED_CONV ? GDN_CHUNK * GDN_TP_VS : 0);  // g, then cumulative log-decay
    float* bet = gam + GDN_CHUNK;                     // beta
    float* qsc = bet + GDN_CHUNK;                     // q scale: rsqrt(|q|^2 + eps) * dk^-1/2
    float* bek = qsc + GDN_CHUNK;                     // beta exp(gamma) (W's right-hand side scale)
    const int h = blockIdx.x, c = blockIdx.y, c0 = c * GDN_CHUNK;
    const int n = min(GDN_CHUNK, T - c0);
    const size_t hc = (size_t)c * GDN_HV + h;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = 16 * (warp & 3), cg = warp >> 2;
    // 0. Rows: q, k (, v) tiles; beta and g per row (their loads issued first); then |k| and |q|.
    float bp = 0.0f, ap = 0.0f;
    if (threadIdx.x < n) {
        bp = b_proj[(size_t)(c0 + threadIdx.x) * GDN_PROJ_COLS + h];
        ap = a_proj[(size_t)(c0 + threadIdx.x) * GDN_PROJ_COLS + h];
    }
    gdn_tc_prep_load(qkv, conv_w, conv_state, h, c0, n, Qs, Ks, Vs);
    if (threadIdx.x < GDN_CHUNK) {
        const bool live = threadIdx.x < n;
        bet[threadIdx.x] = live ? sigmoid_f(bp) : 0.0f;
        gam[threadIdx.x] = live ? -expf(a_log[h]) * softplus_f(ap + dt_bias[h]) : 0.0f;
    }
    __syncthreads();
    {
        constexpr int DPL = GDN_DK / 32;
        static_assert(GDN_DK % 32 == 0, "dims per lane");
#pragma unroll 2
        for (int r = warp; r < GDN_CHUNK; r += GDN_WARPS) {
            float kv[DPL], sk = 0.0f, sq = 0.0f;
#pragma unroll
            for (int d = 0; d < DPL; ++d) {
                kv[d] = Ks[r * GDN_TC_KS + lane + 32 * d];
                const float qv = Qs[r * GDN_TC_KS + lane + 32 * d];
                sk = fmaf(kv[d], kv[d], sk);
                sq = fmaf(qv, qv, sq);
            }
            const float inv_k = rsqrtf(warp_sum(sk) + 1e-6f);
            sq = warp_sum(sq);
#pragma unroll
            for (int d = 0; d < DPL; ++d) Ks[r * GDN_TC_KS + lane + 32 * d] = kv[d] * inv_k;  // zero rows stay zero
            if (lane == 0) qsc[r] = r < n ? rsqrtf(sq + 1e-6f) * GDN_Q_SCALE : 0.0f;
        }
    }
    gdn_prep_scan(gam, bet, bek, gam_out + hc * GDN_CHUNK);
    // 1. A = beta K K^T D (strictly lower, into M) and P = Q K^T D qscale (lower incl. the diagonal,
    //    zero past T, to global): column group cg of rows r0 .. r0 + 15. A stays in registers until
    //    Q (under M) has been read for Qg too.
    float acc_a[GDN_TP_APN][4] = {};
    const int s0 = 8 * GDN_TP_APN * cg;
    {
        float acc_p[GDN_TP_APN][4] = {};
#pragma unroll 4
        for (int k = 0; k < GDN_DK; k += 8) {
            Tf32A ka, qf;
            tf32_load_a(ka, Ks + r0 * GDN_TC_KS + k, GDN_TC_KS, g, t);
            tf32_load_a(qf, Qs + r0 * GDN_TC_KS + k, GDN_TC_KS, g, t);
#pragma unroll
            for (int j = 0; j < GDN_TP_APN; ++j) {
                Tf32B kb;
                tf32_load_b_nk(kb, Ks + (s0 + 8 * j) * GDN_TC_KS + k, GDN_TC_KS, g, t);
                mma_3xtf32(acc_a[j], ka, kb);
                mma_3xtf32(acc_p[j], qf, kb);
            }
        }
#pragma unroll
        for (int j = 0; j < GDN_TP_APN; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = r0 + g + 8 * (e >> 1), s = s0 + 8 * j + 2 * t + (e & 1);
                p[(hc * GDN_CHUNK + r) * GDN_CHUNK + s] =
                    (s <= r && r < n) ? qsc[r] * acc_p[j][e] * expf(gam[r] - gam[s]) : 0.0f;
            }
    }
    gdn_prep_kd_qg<GDN_TC_KS>(Qs, GDN_TC_KS, n, Ks, gam, qsc, kd + hc * GDN_CHUNK * GDN_DK, qg + hc * GDN_CHUNK * GDN_DK);
    __syncthreads();  // Q is dead: M may be written
#pragma unroll
    for (int j = 0; j < GDN_TP_APN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = r0 + g + 8 * (e >> 1), s = s0 + 8 * j + 2 * t + (e & 1);
            if (s < r) M[r * GDN_MS + s] = bet[r] * acc_a[j][e] * expf(gam[r] - gam[s]);
        }
    gdn_solve_x_blocked(M, Xs);  // starts with a barrier after its own stores (M is visible)
    // 2. U = X (beta V) and W = X (beta exp(gamma) K): column group cg (of dv, then dk) of rows
    //    r0 .. r0 + 15; X is zero right of the diagonal, so k stops at r0 + 16. V rows past the
    //    prompt are zero in Vs, or not read from global (masked to 0; their beta is 0 too).
    const float* v0 = qkv + (size_t)c0 * GDN_TP_SRC_STRIDE + 2 * KEY_DIM + h * GDN_DV;
#pragma unroll 1
    for (int which = 0; which < 2; ++which) {
        float acc[GDN_TP_UWN][4] = {};
        const int col0 = 8 * GDN_TP_UWN * cg;
        for (int k = 0; k < r0 + 16; k += 8) {
            Tf32A xa;
            tf32_load_a(xa, Xs + r0 * GDN_TP_XS + k, GDN_TP_XS, g, t);
            const int s0 = k + t, s1 = k + t + 4;
#pragma unroll
            for (int j = 0; j < GDN_TP_UWN; ++j) {
                const int col = col0 + 8 * j + g;
                Tf32B b;
                if (which == 0) {
                    if constexpr (GDN_FUSED_CONV)
                        tf32_frag_b(b, bet[s0] * Vs[s0 * GDN_TP_VS + col], bet[s1] * Vs[s1 * GDN_TP_VS + col]);
                    else
                        tf32_frag_b(b, s0 < n ? bet[s0] * v0[(size_t)s0 * GDN_TP_SRC_STRIDE + col] : 0.0f,
                                    s1 < n ? bet[s1] * v0[(size_t)s1 * GDN_TP_SRC_STRIDE + col] : 0.0f);
                } else {
                    tf32_frag_b(b, bek[s0] * Ks[s0 * GDN_TC_KS + col], bek[s1] * Ks[s1 * GDN_TC_KS + col]);
                }
                mma_3xtf32(acc[j], xa, b);
            }
        }
        float* dst = which == 0 ? u : w;  // both [chunk][head][C][dv = dk]
#pragma unroll
        for (int j = 0; j < GDN_TP_UWN; ++j)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const int r = r0 + g + 8 * hh, col = col0 + 8 * j + 2 * t;
                *reinterpret_cast<float2*>(dst + (hc * GDN_CHUNK + r) * GDN_DV + col) =
                    make_float2(acc[j][2 * hh], acc[j][2 * hh + 1]);
            }
    }
}

// State pass: one block per (v-head, GDN_ST_COLS value columns), GDN_TS_THREADS threads, sequential
// over chunks. The state slice S (dk x GDN_ST_COLS) lives in registers as C fragments (warp w: keys
// kw .. kw + 16 GDN_TS_MT - 1 x columns cw .. cw + 8 GDN_TS_NT - 1) and as a [col][key] smem copy
// that is B of the next product and the source of the S_c snapshot. Per chunk:
//   V_new = U - W S_c               (warp w: 16 rows x 8 GDN_TS_NT2 columns)
//   S <- exp(gamma_C) S + Kd^T V_new
// The three products of each 3xTF32 step go to separate accumulators, so a warp has three
// independent mma chains per tile instead of one three times as long (the chunk loop is the
// critical path of the prefill). W, Kd and U come through cp.async, each while the other product
// runs: W (and U, double-buffered) of the next chunk load during this chunk's state update, Kd of
// the next chunk during the S_c store and V_new.
constexpr int GDN_TS_THREADS = GDN_ST_THREADS;
constexpr int GDN_TS_WARPS = GDN_TS_THREADS / 32;
constexpr int GDN_TS_CG2 = GDN_TS_WARPS / (GDN_CHUNK / 16);  // V_new: column groups (rows in groups of 16)
constexpr int GDN_TS_NT2 = GDN_ST_COLS / 8 / GDN_TS_CG2;     // n8 tiles of V_new per warp
// The update's warp tiles: GDN_TS_KW warps along the keys x GDN_TS_CW along the columns.
constexpr int GDN_TS_KW = GDN_DK / 16 < GDN_TS_WARPS ? GDN_DK / 16 : GDN_TS_WARPS;
constexpr int GDN_TS_CW = GDN_TS_WARPS / GDN_TS_KW;
constexpr int GDN_TS_MT = GDN_DK / 16 / GDN_TS_KW;      // m16 tiles of keys per warp
constexpr int GDN_TS_NT = GDN_ST_COLS / 8 / GDN_TS_CW;  // n8 tiles of columns per warp
static_assert(GDN_TS_KW * GDN_TS_CW == GDN_TS_WARPS && GDN_TS_MT * GDN_TS_KW * 16 == GDN_DK &&
                  GDN_TS_NT * GDN_TS_CW * 8 == GDN_ST_COLS && GDN_TS_NT >= 1 &&
                  GDN_TS_CG2 * (GDN_CHUNK / 16) == GDN_TS_WARPS && GDN_TS_NT2 * GDN_TS_CG2 * 8 == GDN_ST_COLS &&
                  GDN_TS_NT2 >= 1,
              "state pass warp tiles (schedules::gdn_tensor_core_tiles_fit)");
constexpr int GDN_TS_KDS = gdn_kn_stride(GDN_DK);      // Kd read transposed (A = Kd^T)
constexpr int GDN_TS_VS = gdn_kn_stride(GDN_ST_COLS);  // U / V_new, B of the update
constexpr int GDN_TS_SMEM_FLOATS =
    GDN_CHUNK * GDN_TC_KS + GDN_CHUNK * GDN_TS_KDS + 2 * GDN_CHUNK * GDN_TS_VS + GDN_ST_COLS * GDN_TC_KS;
static_assert(GDN_TS_SMEM_FLOATS * 4 == GDN_ST_SMEM_BYTES, "the launch plan's dynamic smem size");
static_assert(GDN_DV % GDN_ST_COLS == 0, "a block's columns share one head");
// d[0] += Al Bh, d[1] += Ah Bl, d[2] += Ah Bh: the 3xTF32 terms as three independent chains.
__device__ __forceinline__ void mma_3xtf32_apart(float (&d)[3][4], const Tf32A& a, const Tf32B& b) {
    mma_tf32_1688(d[0], a.lo, b.hi);
    mma_tf32_1688(d[1], a.hi, b.lo);
    mma_tf32_1688(d[2], a.hi, b.hi);
}
__device__ __forceinline__ float tf32_terms_sum(const float (&d)[3][4], int e) { return (d[0][e] + d[1][e]) + d[2][e]; }
extern "C" __global__ void __launch_bounds__(GDN_TS_THREADS)
prefill_gdn_chunked_state(GDN_STATE_PARAMS) {
    prefill_entry();
    gdn_advance_conv_state(x, T, conv_state);
    extern __shared__ float4 gdn_ts_smem4[];
    float* Ws = reinterpret_cast<float*>(gdn_ts_smem4);  // [C][GDN_TC_KS] W of this chunk
    float* Kds = Ws + GDN_CHUNK * GDN_TC_KS;              // [C][GDN_TS_KDS] Kd of this chunk
    float* Us = Kds + GDN_CHUNK * GDN_TS_KDS;             // 2 x [C][GDN_TS_VS]: U, then V_new, by chunk parity
    float* Ss = Us + 2 * GDN_CHUNK * GDN_TS_VS;           // [GDN_ST_COLS][GDN_TC_KS] S_c (transposed)
    const int h = blockIdx.x / (GDN_DV / GDN_ST_COLS), col0 = (blockIdx.x % (GDN_DV / GDN_ST_COLS)) * GDN_ST_COLS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nc = (T + GDN_CHUNK - 1) / GDN_CHUNK;
    auto load_wu = [&](int ch) {  // one cp.async group, empty past the last chunk
        if (ch < nc) {
            const size_t hc = (size_t)ch * GDN_HV + h;
            gdn_copy_tile<GDN_CHUNK, GDN_DK, GDN_TS_THREADS>(Ws, GDN_TC_KS, w + hc * GDN_CHUNK * GDN_DK, GDN_DK);
            gdn_copy_tile<GDN_CHUNK, GDN_ST_COLS, GDN_TS_THREADS>(Us + (ch & 1) * GDN_CHUNK * GDN_TS_VS, GDN_TS_VS,
                                                                   u + hc * GDN_CHUNK * GDN_DV + col0, GDN_DV);
        }
        copy_commit();
    };
    auto load_kd = [&](int ch) {
        if (ch < nc) {
            const size_t hc = (size_t)ch * GDN_HV + h;
            gdn_copy_tile<GDN_CHUNK, GDN_DK, GDN_TS_THREADS>(Kds, GDN_TS_KDS, kd + hc * GDN_CHUNK * GDN_DK, GDN_DK);
        }
        copy_commit();
    };
    load_wu(0);
    load_kd(0);
    // S[i][j][e]: key kw + 16 i + g + 8 (e / 2), column cw + 8 j + 2 t + e % 2 (of the block's columns).
    const int kw = 16 * GDN_TS_MT * (warp % GDN_TS_KW), cw = 8 * GDN_TS_NT * (warp / GDN_TS_KW);
    float* st = state + (size_t)h * GDN_DK * GDN_DV + col0;  // S[key * GDN_DV + col]
    float S[GDN_TS_MT][GDN_TS_NT][4];
    auto put_state = [&]() {
#pragma unroll
        for (int i = 0; i < GDN_TS_MT; ++i)
#pragma unroll
            for (int j = 0; j < GDN_TS_NT; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    Ss[(cw + 8 * j + 2 * t + (e & 1)) * GDN_TC_KS + kw + 16 * i + g + 8 * (e >> 1)] = S[i][j][e];
    };
#pragma unroll
    for (int i = 0; i < GDN_TS_MT; ++i)
#pragma unroll
        for (int j = 0; j < GDN_TS_NT; ++j)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                const float2 v = *reinterpret_cast<const float2*>(
                    st + (size_t)(kw + 16 * i + g + 8 * hh) * GDN_DV + cw + 8 * j + 2 * t);
                S[i][j][2 * hh] = v.x;
                S[i][j][2 * hh + 1] = v.y;
            }
    put_state();
    __syncthreads();
    for (int ch = 0; ch < nc; ++ch) {
        const size_t hc = (size_t)ch * GDN_HV + h;
        const float gam_c = gam[hc * GDN_CHUNK + GDN_CHUNK - 1];  // loaded here, used after V_new
        // S_c -> sc [col][key], 16-byte rows
        float* scc = sc + (hc * GDN_DV + col0) * GDN_DK;
        for (int e = threadIdx.x; e < GDN_ST_COLS * GDN_DK / 4; e += GDN_TS_THREADS) {
            const int col = e / (GDN_DK / 4), k4 = 4 * (e % (GDN_DK / 4));
            *reinterpret_cast<float4*>(scc + (size_t)col * GDN_DK + k4) =
                *reinterpret_cast<const float4*>(Ss + col * GDN_TC_KS + k4);
        }
        copy_wait<1>();  // this chunk's W and U (its Kd may still be in flight)
        __syncthreads();
        float* Uc = Us + (ch & 1) * GDN_CHUNK * GDN_TS_VS;
        {  // V_new = U - W S_c: rows r0 .. r0 + 15, columns c2 .. c2 + 8 GDN_TS_NT2 - 1
            const int r0 = 16 * (warp % (GDN_CHUNK / 16)), c2 = 8 * GDN_TS_NT2 * (warp / (GDN_CHUNK / 16));
            float acc[GDN_TS_NT2][3][4] = {};
#pragma unroll 4
            for (int k = 0; k < GDN_DK; k += 8) {
                Tf32A a;
                tf32_load_a(a, Ws + r0 * GDN_TC_KS + k, GDN_TC_KS, g, t);
#pragma unroll
                for (int j = 0; j < GDN_TS_NT2; ++j) {
                    Tf32B b;
                    tf32_load_b_nk(b, Ss + (c2 + 8 * j) * GDN_TC_KS + k, GDN_TC_KS, g, t);
                    mma_3xtf32_apart(acc[j], a, b);
                }
            }
            float* uc = u + hc * GDN_CHUNK * GDN_DV + col0;
#pragma unroll
            for (int j = 0; j < GDN_TS_NT2; ++j)
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int r = r0 + g + 8 * hh, col = c2 + 8 * j + 2 * t;
                    float* vs = Uc + r * GDN_TS_VS + col;
                    const float2 vn = make_float2(vs[0] - tf32_terms_sum(acc[j], 2 * hh),
                                                  vs[1] - tf32_terms_sum(acc[j], 2 * hh + 1));
                    vs[0] = vn.x;
                    vs[1] = vn.y;
                    *reinterpret_cast<float2*>(uc + (size_t)r * GDN_DV + col) = vn;
                }
        }
        __syncthreads();  // V_new complete; Ws and the other U buffer are free
        load_wu(ch + 1);
        copy_wait<1>();  // this chunk's Kd (the next W and U may still be in flight)
        __syncthreads();
        {  // S <- exp(gamma_C) S + Kd^T V_new: A(key, s) = Kd[s][key], B(s, col) = V_new[s][col]
            float upd[GDN_TS_MT][GDN_TS_NT][3][4] = {};
#pragma unroll 2
            for (int k = 0; k < GDN_CHUNK; k += 8) {
                Tf32B b[GDN_TS_NT];
#pragma unroll
                for (int j = 0; j < GDN_TS_NT; ++j)
                    tf32_load_b_kn(b[j], Uc + k * GDN_TS_VS + cw + 8 * j, GDN_TS_VS, g, t);
#pragma unroll
                for (int i = 0; i < GDN_TS_MT; ++i) {
                    Tf32A a;
                    tf32_load_a_t(a, Kds + k * GDN_TS_KDS + kw + 16 * i, GDN_TS_KDS, g, t);
#pragma unroll
                    for (int j = 0; j < GDN_TS_NT; ++j) mma_3xtf32_apart(upd[i][j], a, b[j]);
                }
            }
            const float decay = expf(gam_c);
#pragma unroll
            for (int i = 0; i < GDN_TS_MT; ++i)
#pragma unroll
                for (int j = 0; j < GDN_TS_NT; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) S[i][j][e] = fmaf(decay, S[i][j][e], tf32_terms_sum(upd[i][j], e));
        }
        __syncthreads();  // every read of Kds, Ss and this chunk's U buffer is done
        load_kd(ch + 1);
        put_state();
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < GDN_TS_MT; ++i)
#pragma unroll
        for (int j = 0; j < GDN_TS_NT; ++j)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
                *reinterpret_cast<float2*>(st + (size_t)(kw + 16 * i + g + 8 * hh) * GDN_DV + cw + 8 * j + 2 * t) =
                    make_float2(S[i][j][2 * hh], S[i][j][2 * hh + 1]);
}

// Outputs: one block per (v-head, GDN_OCOLS value columns) = blockIdx.x and chunk = blockIdx.y,
// GDN_TO_THREADS threads; warp w computes rows 16 w .. + 15 of O = Qg S_c + P V_new (P is zero right
// of the diagonal, so its k steps stop at 16 w + 16). Qg, P, the S_c slice and the V_new slice are
// staged in smem by cp.async.
constexpr int GDN_TO_THREADS = 2 * GDN_CHUNK;  // C / 16 warps
constexpr int GDN_TO_NT = GDN_OCOLS / 8;
constexpr int GDN_TO_VS = gdn_kn_stride(GDN_OCOLS);
constexpr int GDN_TO_SMEM_FLOATS =
    GDN_CHUNK * GDN_TC_KS + GDN_CHUNK * GDN_TC_CS + GDN_OCOLS * GDN_TC_KS + GDN_CHUNK * GDN_TO_VS;
static_assert(GDN_TO_THREADS == GDN_OUT_THREADS && GDN_TO_SMEM_FLOATS * 4 == GDN_OUT_SMEM_BYTES,
              "the launch plan's block and dynamic smem size");
static_assert(GDN_DV % GDN_OCOLS == 0 && GDN_OCOLS % 8 == 0, "output slices");
extern "C" __global__ void __launch_bounds__(GDN_TO_THREADS)
prefill_gdn_chunked_output(int T, const float* __restrict__ qg, const float* __restrict__ p,
                           const float* __restrict__ u, const float* __restrict__ sc, float* __restrict__ o) {
    prefill_entry();
    extern __shared__ float4 gdn_to_smem4[];
    float* Qs = reinterpret_cast<float*>(gdn_to_smem4);  // [C][GDN_TC_KS] Qg
    float* Ps = Qs + GDN_CHUNK * GDN_TC_KS;               // [C][GDN_TC_CS] P
    float* Ss = Ps + GDN_CHUNK * GDN_TC_CS;               // [GDN_OCOLS][GDN_TC_KS] S_c (transposed)
    float* Vs = Ss + GDN_OCOLS * GDN_TC_KS;               // [C][GDN_TO_VS] V_new
    constexpr int SLICES = GDN_DV / GDN_OCOLS;
    const int h = blockIdx.x / SLICES, col0 = (blockIdx.x % SLICES) * GDN_OCOLS, c = blockIdx.y;
    const int c0 = c * GDN_CHUNK, n = min(GDN_CHUNK, T - c0);
    const size_t hc = (size_t)c * GDN_HV + h;
    // Two cp.async groups: Qg S_c runs while P and V_new land.
    gdn_copy_tile<GDN_CHUNK, GDN_DK, GDN_TO_THREADS>(Qs, GDN_TC_KS, qg + hc * GDN_CHUNK * GDN_DK, GDN_DK);
    gdn_copy_tile<GDN_OCOLS, GDN_DK, GDN_TO_THREADS>(Ss, GDN_TC_KS, sc + (hc * GDN_DV + col0) * GDN_DK, GDN_DK);
    copy_commit();
    gdn_copy_tile<GDN_CHUNK, GDN_CHUNK, GDN_TO_THREADS>(Ps, GDN_TC_CS, p + hc * GDN_CHUNK * GDN_CHUNK, GDN_CHUNK);
    gdn_copy_tile<GDN_CHUNK, GDN_OCOLS, GDN_TO_THREADS>(Vs, GDN_TO_VS, u + hc * GDN_CHUNK * GDN_DV + col0, GDN_DV);
    copy_commit();
    copy_wait<1>();
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = 16 * warp;
    float acc[GDN_TO_NT][4] = {};
#pragma unroll 4
    for (int k = 0; k < GDN_DK; k += 8) {
        Tf32A a;
        tf32_load_a(a, Qs + r0 * GDN_TC_KS + k, GDN_TC_KS, g, t);
#pragma unroll
        for (int j = 0; j < GDN_TO_NT; ++j) {
            Tf32B b;
            tf32_load_b_nk(b, Ss + 8 * j * GDN_TC_KS + k, GDN_TC_KS, g, t);
            mma_3xtf32(acc[j], a, b);
        }
    }
    copy_wait<0>();
    __syncthreads();
    for (int k = 0; k < r0 + 16; k += 8) {
        Tf32A a;
        tf32_load_a(a, Ps + r0 * GDN_TC_CS + k, GDN_TC_CS, g, t);
#pragma unroll
        for (int j = 0; j < GDN_TO_NT; ++j) {
            Tf32B b;
            tf32_load_b_kn(b, Vs + k * GDN_TO_VS + 8 * j, GDN_TO_VS, g, t);
            mma_3xtf32(acc[j], a, b);
        }
    }
#pragma unroll
    for (int j = 0; j < GDN_TO_NT; ++j)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int r = r0 + g + 8 * hh;
            if (r < n)
                *reinterpret_cast<float2*>(o + (size_t)(c0 + r) * VALUE_DIM + h * GDN_DV + col0 + 8 * j + 2 * t) =
                    make_float2(acc[j][2 * hh], acc[j][2 * hh + 1]);
        }
}
"#;

/// The gated RMSNorm after the delta rule (the out-projection's GEMM input).
pub const GATED_RMS_NORM: &str = r#"// ---- prefill_gated_rms_norm: out = act(w * norm(o) * silu(z)) per (token, v-head); NOT zero-centred ----
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
prefill_gated_rms_norm(const float* __restrict__ o, const float* __restrict__ z, const float* __restrict__ w, int T,
                       u16* __restrict__ out) {
    prefill_entry();
    const int gw = blockIdx.x * (ROW_THREADS / 32) + (threadIdx.x >> 5);
    if (gw >= T * GDN_HV) return;
    const int lane = threadIdx.x & 31;
    const size_t base = (size_t)(gw / GDN_HV) * VALUE_DIM + (size_t)(gw % GDN_HV) * GDN_DV;
    // z: a column slice of the fused input projection (row stride GDN_PROJ_COLS).
    const size_t zbase = (size_t)(gw / GDN_HV) * GDN_PROJ_COLS + (size_t)(gw % GDN_HV) * GDN_DV;
    float ss = 0.0f;
    for (int d = lane; d < GDN_DV; d += 32) ss = fmaf(o[base + d], o[base + d], ss);
    const float inv = rsqrtf(warp_sum(ss) / (float)GDN_DV + RMS_EPS);
    u16* row = out + (size_t)(gw / GDN_HV) * ACT_PARTS * VALUE_DIM;
    for (int d = lane; d < GDN_DV; d += 32)
        store_act(row, (gw % GDN_HV) * GDN_DV + d, VALUE_DIM, w[d] * (o[base + d] * inv) * silu_f(z[zbase + d]));
}
"#;

/// q/k norm, partial RoPE and the KV append of the prompt's tokens.
pub const QK_NORM_ROPE: &str = r#"// ---- prefill_qk_norm_rope: one warp per (token, head) over ATT_H query + ATT_HKV kv heads ----
// qg, k, v: column slices of the fused input projection [T][ATT_PROJ_COLS] = [q+gate | k | v]
// (f32; per head of q+gate: [query | gate]).
static_assert(ATT_PROJ_COLS == ATT_QG_DIM + 2 * ATT_KV_DIM, "fused attention projection row");
// q_out: [T][ATT_H][ATT_HD] f32 (normed, roped, scaled by ATT_HD^-1/2). K (normed, roped) and V
// go to this layer's caches [ATT_HKV][MAX_CTX][ATT_HD] bf16 at slot start + t, position start + t.
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
prefill_qk_norm_rope(const float* __restrict__ qg, const float* __restrict__ k, const float* __restrict__ v, int T,
                     int start, const float* __restrict__ q_norm_w, const float* __restrict__ k_norm_w,
                     float* __restrict__ q_out, u16* __restrict__ k_cache, u16* __restrict__ v_cache) {
    prefill_entry();
    const int gw = blockIdx.x * (ROW_THREADS / 32) + (threadIdx.x >> 5);
    if (gw >= T * (ATT_H + ATT_HKV)) return;
    const int t = gw / (ATT_H + ATT_HKV), head = gw % (ATT_H + ATT_HKV);
    const int lane = threadIdx.x & 31, d0 = lane * ATT_EPL;
    const int slot = start + t;
    if (slot >= MAX_CTX) return;
    float x[ATT_EPL];
    if (head < ATT_H) {
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) x[e] = qg[(size_t)t * ATT_PROJ_COLS + head * 2 * ATT_HD + d0 + e];
        head_rms_norm(x, q_norm_w);
        rope_partial(x, (u32)slot);
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) q_out[((size_t)t * ATT_H + head) * ATT_HD + d0 + e] = x[e] * ATT_SCALE;
    } else {
        const int kvh = head - ATT_H;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) x[e] = k[(size_t)t * ATT_PROJ_COLS + kvh * ATT_HD + d0 + e];
        head_rms_norm(x, k_norm_w);
        rope_partial(x, (u32)slot);
        store_bf16_vec<ATT_EPL>(k_cache + ((size_t)kvh * MAX_CTX + slot) * ATT_HD + d0, x);
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) x[e] = v[(size_t)t * ATT_PROJ_COLS + kvh * ATT_HD + d0 + e];
        store_bf16_vec<ATT_EPL>(v_cache + ((size_t)kvh * MAX_CTX + slot) * ATT_HD + d0, x);
    }
}

"#;

/// Causal attention on CUDA cores: one warp per (query head, token).
pub const ATTENTION_CUDA_CORES: &str = r#"// ---- prefill_attention: causal attention over the cache, online softmax (no score matrix) ----
// Block (query head, ATT_WARPS consecutive tokens); one warp per token, ATT_EPL dims per lane.
// The warps of a block read the same kv head's keys, so K/V rows are shared through L1.
// Keys are visited ATT_KEYS_PER_STEP at a time (independent dot products in flight).
// The cache was written by an earlier launch: plain (L1-cached) loads are coherent here.
// out: [T][ACT_PARTS x ATT_OUT_DIM] GEMM input (store_act) = softmax(q K^T) V * sigmoid(gate).
template <int N>
__device__ __forceinline__ void load_bf16_l1(const u16* p, float* o) {
    if constexpr (N == 8) {
        unpack_bf16x8(*reinterpret_cast<const uint4*>(p), o);
    } else if constexpr (N == 4) {
        const uint2 v = *reinterpret_cast<const uint2*>(p);
        o[0] = bf16_lo(v.x); o[1] = bf16_hi(v.x); o[2] = bf16_lo(v.y); o[3] = bf16_hi(v.y);
    } else {
        const u32 v = *reinterpret_cast<const unsigned int*>(p);
        o[0] = bf16_lo(v); o[1] = bf16_hi(v);
    }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
prefill_attention(const float* __restrict__ q, const float* __restrict__ qg, int T, int start,
                  const u16* __restrict__ k_cache, const u16* __restrict__ v_cache, u16* __restrict__ out) {
    prefill_entry();
    const int hq = blockIdx.x, kvh = hq / ATT_G;
    const int t = blockIdx.y * ATT_WARPS + (threadIdx.x >> 5);
    if (t >= T || start + t >= MAX_CTX) return;
    const int lane = threadIdx.x & 31, d0 = lane * ATT_EPL;
    float qv[ATT_EPL], acc[ATT_EPL];
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) { qv[e] = q[((size_t)t * ATT_H + hq) * ATT_HD + d0 + e]; acc[e] = 0.0f; }
    float m = NEG_INF, l = 0.0f;
    const u16* kc = k_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
    const u16* vc = v_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
    const int n_keys = start + t + 1;  // causal: keys 0..start+t
    // Keys past n_keys (the last step) re-read key n_keys-1 and get weight 0 (score -inf).
    for (int p0 = 0; p0 < n_keys; p0 += ATT_KEYS_PER_STEP) {
        float sc[ATT_KEYS_PER_STEP];
        float m_new = m;
#pragma unroll
        for (int j = 0; j < ATT_KEYS_PER_STEP; ++j) {
            float kf[ATT_EPL];
            load_bf16_l1<ATT_EPL>(kc + (size_t)min(p0 + j, n_keys - 1) * ATT_HD, kf);
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) dot = fmaf(qv[e], kf[e], dot);
            sc[j] = warp_sum(dot);
            if (p0 + j >= n_keys) sc[j] = NEG_INF;
            m_new = fmaxf(m_new, sc[j]);
        }
        const float corr = expf(m - m_new);
        l *= corr;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) acc[e] *= corr;
#pragma unroll
        for (int j = 0; j < ATT_KEYS_PER_STEP; ++j) {
            const float pw = expf(sc[j] - m_new);
            float vf[ATT_EPL];
            load_bf16_l1<ATT_EPL>(vc + (size_t)min(p0 + j, n_keys - 1) * ATT_HD, vf);
            l += pw;
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) acc[e] = fmaf(pw, vf[e], acc[e]);
        }
        m = m_new;
    }
    const float inv = 1.0f / l;
    float o[ATT_EPL];
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) {
        const float gate = qg[(size_t)t * ATT_PROJ_COLS + hq * 2 * ATT_HD + ATT_HD + d0 + e];
        o[e] = acc[e] * inv * sigmoid_f(gate);
    }
    u16* row = out + (size_t)t * ACT_PARTS * ATT_OUT_DIM;
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) store_act(row, hq * ATT_HD + d0 + e, ATT_OUT_DIM, o[e]);
}
"#;

/// Causal flash attention on mma.sync tensor cores (sm_80+), GQA: a block is
/// ATT_TC_HEADS query heads of one kv head x 16 tokens, one warp per head.
pub const ATTENTION_TC: &str = r#"// ---- prefill_attention: causal flash attention on mma.sync (bf16 in, f32 accumulate), GQA ----
// Block: ATT_TC_HEADS query heads of kv head kvh x 16 consecutive tokens; warp w owns query head
// hq0 + w for those 16 tokens (its 16 rows of m16n8k16). K/V tiles of ATT_KT keys come from the
// cache (bf16) through a 2-stage cp.async ring that the block's warps share. Per tile:
// S = Q K^T (Q rounded to bf16), the causal mask, online softmax on the fragments, then
// O += P V with P (bf16) taken straight from S's registers (the C fragment of two n8 tiles is
// the A fragment of one k16 step). Keys past the block's last query are zero-filled, so
// masked weights multiply zeros, never stale cache values.
// out: [T][ACT_PARTS x ATT_OUT_DIM] GEMM input = softmax(q K^T) V * sigmoid(gate).
constexpr int ATT_QROWS = 16;                   // tokens per block (mma rows)
constexpr int ATT_SROW = ATT_HD + 8;            // padded smem row (bf16): conflict-free ldmatrix
constexpr int ATT_Q_ELEMS = ATT_TC_HEADS * ATT_QROWS * ATT_SROW;
constexpr int ATT_KV_ELEMS = ATT_KT * ATT_SROW;  // one K or V tile
static_assert((ATT_Q_ELEMS + 4 * ATT_KV_ELEMS) * 2 == ATT_DYN_SMEM, "the launch plan's dynamic smem size");
static_assert(ATT_KT % 16 == 0 && ATT_HD % 16 == 0 && ATT_G % ATT_TC_HEADS == 0, "attention tiles");
constexpr int ATT_NT = ATT_KT / 8;              // n8 tiles of S
constexpr int ATT_DT = ATT_HD / 8;              // n8 tiles of O
constexpr u32 ATT_ROW_BYTES = ATT_SROW * 2;

extern "C" __global__ void __launch_bounds__(ATT_TC_HEADS * 32, 1)
prefill_attention(const float* __restrict__ q, const float* __restrict__ qg, int T, int start,
                  const u16* __restrict__ k_cache, const u16* __restrict__ v_cache, u16* __restrict__ out) {
    prefill_entry();
    extern __shared__ __align__(16) unsigned char smem[];
    u16* qs = reinterpret_cast<u16*>(smem);
    const u32 kv_s = smem_addr(smem) + ATT_Q_ELEMS * 2;  // stage s: K at 2s tiles, V at 2s + 1
    constexpr int GROUPS = ATT_G / ATT_TC_HEADS;          // blocks per kv head and token tile
    const int kvh = blockIdx.x / GROUPS;
    const int hq0 = kvh * ATT_G + (blockIdx.x % GROUPS) * ATT_TC_HEADS;
    const int t0 = blockIdx.y * ATT_QROWS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, c2 = (lane & 3) * 2;
    constexpr int THREADS = ATT_TC_HEADS * 32;
    // Keys the block's queries see: 0 .. start + min(t0 + 16, T) - 1.
    const int n_keys = min(start + min(t0 + ATT_QROWS, T), MAX_CTX);
    const int n_tiles = (n_keys + ATT_KT - 1) / ATT_KT;
    const u16* kc = k_cache + (size_t)kvh * MAX_CTX * ATT_HD;
    const u16* vc = v_cache + (size_t)kvh * MAX_CTX * ATT_HD;
    constexpr int CPR = ATT_HD / 8;  // 16-byte chunks per row
    auto load_tile = [&](int tile) {
        const int p0 = tile * ATT_KT;
        const u32 st = kv_s + (tile & 1) * 2 * ATT_KV_ELEMS * 2;
        for (int i = threadIdx.x; i < 2 * ATT_KT * CPR; i += THREADS) {
            const int which = i / (ATT_KT * CPR), r = (i / CPR) % ATT_KT, ch = i % CPR;
            const int p = p0 + r;
            const bool ok = p < n_keys;
            const u16* src = (which ? vc : kc) + (size_t)(ok ? p : 0) * ATT_HD + ch * 8;
            copy16(st + (which * ATT_KV_ELEMS + r * ATT_SROW + ch * 8) * 2, src, ok ? 16u : 0u);
        }
        copy_commit();
    };
    load_tile(0);
    // This block's query rows as bf16 (rows past the prompt are zero) while tile 0 loads.
    for (int i = threadIdx.x; i < ATT_TC_HEADS * ATT_QROWS * (ATT_HD / 2); i += THREADS) {
        const int e = (i % (ATT_HD / 2)) * 2, r = (i / (ATT_HD / 2)) % ATT_QROWS, h = i / (ATT_HD / 2 * ATT_QROWS);
        const int t = t0 + r;
        float2 v = make_float2(0.0f, 0.0f);
        if (t < T && start + t < MAX_CTX) v = *reinterpret_cast<const float2*>(q + ((size_t)t * ATT_H + hq0 + h) * ATT_HD + e);
        *reinterpret_cast<u32*>(qs + (h * ATT_QROWS + r) * ATT_SROW + e) = pack_bf16x2(v.x, v.y);
    }
    // Per-lane ldmatrix row addresses (each 8-lane group addresses one 8x8 matrix of an x4):
    // A = Q: row l & 15, dims + (l >> 4) * 8 -> a0..a3. B of S = K (rows n = keys, k = dims):
    // key 8 ((l >> 4) & 1) + (l & 7), dims + ((l >> 3) & 1) * 8 -> b of n8 tiles j, j + 1.
    // B of P V = V (rows k = keys, via .trans): key (l & 7) + 8 ((l >> 3) & 1), dims + (l >> 4) * 8
    // -> b of dim tiles j, j + 1.
    const u32 q_lane = smem_addr(qs) + ((warp * ATT_QROWS + (lane & 15)) * ATT_SROW + (lane >> 4) * 8) * 2;
    const u32 k_lane = (((lane >> 4) & 1) * 8 + (lane & 7)) * ATT_ROW_BYTES + ((lane >> 3) & 1) * 16;
    const u32 v_lane = ((lane & 7) + ((lane >> 3) & 1) * 8) * ATT_ROW_BYTES + (lane >> 4) * 16;
    const int pos0 = start + t0 + g, pos1 = pos0 + 8;  // this lane's two query rows
    float o[ATT_DT][4];
#pragma unroll
    for (int j = 0; j < ATT_DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.0f, l1 = 0.0f;
    for (int tile = 0; tile < n_tiles; ++tile) {
        if (tile + 1 < n_tiles) load_tile(tile + 1);
        else copy_commit();
        copy_wait<1>();
        __syncthreads();  // tile's K/V (and, the first time, Q) visible to every warp
        const u32 ks = kv_s + (tile & 1) * 2 * ATT_KV_ELEMS * 2, vs = ks + ATT_KV_ELEMS * 2;
        float s[ATT_NT][4];
#pragma unroll
        for (int j = 0; j < ATT_NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < ATT_HD / 16; ++kk) {
            u32 a[4];
            ldmatrix_x4(a, q_lane + kk * 32);
#pragma unroll
            for (int j = 0; j < ATT_NT; j += 2) {
                u32 b[4];
                ldmatrix_x4(b, ks + k_lane + j * 8 * ATT_ROW_BYTES + kk * 32);
                mma_bf16_16816(s[j], a, b);
                mma_bf16_16816(s[j + 1], a, b + 2);
            }
        }
        // Causal mask and the running max of each row (4 lanes share a row).
        const int p0 = tile * ATT_KT;
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int j = 0; j < ATT_NT; ++j) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int p = p0 + 8 * j + c2 + e;
                if (p > pos0) s[j][e] = NEG_INF;
                if (p > pos1) s[j][2 + e] = NEG_INF;
                mx0 = fmaxf(mx0, s[j][e]);
                mx1 = fmaxf(mx1, s[j][2 + e]);
            }
        }
#pragma unroll
        for (int d = 1; d < 4; d <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, d));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, d));
        }
        // Key 0 is in tile 0 and never masked, so the max is finite from the first tile on.
        const float corr0 = __expf(m0 - mx0), corr1 = __expf(m1 - mx1);
        m0 = mx0;
        m1 = mx1;
        l0 *= corr0;
        l1 *= corr1;
#pragma unroll
        for (int j = 0; j < ATT_DT; ++j) { o[j][0] *= corr0; o[j][1] *= corr0; o[j][2] *= corr1; o[j][3] *= corr1; }
#pragma unroll
        for (int j = 0; j < ATT_NT; ++j) {
            s[j][0] = __expf(s[j][0] - m0); s[j][1] = __expf(s[j][1] - m0);
            s[j][2] = __expf(s[j][2] - m1); s[j][3] = __expf(s[j][3] - m1);
            l0 += s[j][0] + s[j][1];
            l1 += s[j][2] + s[j][3];
        }
        // O += P V, k = keys in steps of 16.
#pragma unroll
        for (int kk = 0; kk < ATT_KT / 16; ++kk) {
            u32 a[4];
            a[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int j = 0; j < ATT_DT; j += 2) {
                u32 b[4];
                ldmatrix_x4_trans(b, vs + v_lane + kk * 16 * ATT_ROW_BYTES + j * 16);
                mma_bf16_16816(o[j], a, b);
                mma_bf16_16816(o[j + 1], a, b + 2);
            }
        }
        __syncthreads();  // every warp is done with this stage before the next tile refills it
    }
    copy_wait<0>();
#pragma unroll
    for (int d = 1; d < 4; d <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, d);
        l1 += __shfl_xor_sync(0xffffffffu, l1, d);
    }
    const int hq = hq0 + warp;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int t = t0 + g + 8 * h;
        if (t >= T || start + t >= MAX_CTX) continue;
        const float inv = 1.0f / (h ? l1 : l0);
        const float* gate = qg + (size_t)t * ATT_PROJ_COLS + hq * 2 * ATT_HD + ATT_HD;
        u16* row = out + (size_t)t * ACT_PARTS * ATT_OUT_DIM;
#pragma unroll
        for (int j = 0; j < ATT_DT; ++j) {
            const int d = 8 * j + c2;
            const float2 gv = *reinterpret_cast<const float2*>(gate + d);
            store_act2(row, hq * ATT_HD + d, ATT_OUT_DIM, o[j][2 * h] * inv * sigmoid_f(gv.x),
                       o[j][2 * h + 1] * inv * sigmoid_f(gv.y));
        }
    }
}
"#;

/// Warpgroup tensor-core GEMM (sm_90a): TMA fills a ring of stages that
/// `wgmma.mma_async` reads through shared-memory descriptors. One producer
/// warpgroup (one thread issues the copies) and GEMM_BM / 64 consumer
/// warpgroups, each owning 64 rows x GEMM_BN columns in registers; full and
/// empty mbarriers per stage hand the ring between them, so loads run ahead of
/// the math without block-wide barriers. `bn` is the block tile's width (the
/// instruction's N); the accumulator is `bn / 2` f32 registers per thread.
pub fn gemm_wgmma(bn: u32, cluster: u32) -> String {
    let regs = bn / 2;
    let outs: Vec<String> = (0..regs).map(|r| format!("%{r}")).collect();
    let binds: Vec<String> = (0..regs).map(|r| format!("\"+f\"(d[{r}])")).collect();
    let mma = format!(
        r#"// d (64 x GEMM_BN f32 fragment) += A (64 x 16, smem desc_a) . B (GEMM_BN x 16, smem desc_b)^T
__device__ __forceinline__ void wgmma_m64k16(float* d, u64 desc_a, u64 desc_b) {{
    asm volatile("wgmma.mma_async.sync.aligned.m64n{bn}k16.f32.bf16.bf16 {{{outs}}}, %{da}, %{db}, 1, 1, 1, 0, 0;\n"
                 : {binds}
                 : "l"(desc_a), "l"(desc_b));
}}
"#,
        outs = outs.join(","),
        da = regs,
        db = regs + 1,
        binds = binds.join(", "),
    );
    let mut s = String::from(GEMM_WGMMA_HEAD);
    s.push_str(&mma);
    // Blocks of a cluster share the activation tile by TMA multicast.
    let attr = if cluster > 1 {
        format!("__cluster_dims__({cluster}, 1, 1) ")
    } else {
        String::new()
    };
    s.push_str(GEMM_WGMMA_CONSUME);
    s.push_str(&GEMM_WGMMA_KERNEL.replace("CLUSTER_ATTR ", &attr));
    s
}

const GEMM_WGMMA_HEAD: &str = r#"// ---- GEMM math: TMA ring + warp-specialised wgmma m64nGEMM_BNk16 bf16 -> f32 (sm_90a) ----
// Operands arrive by TMA (cp.async.bulk.tensor) into 128-byte-swizzled tiles: row r of a tile
// is 128 bytes (the stage's 64 k values), its 16-byte chunk c stored at chunk c ^ (r % 8), and
// every tile starts on a 1024-byte boundary, as wgmma's descriptors expect. A stage: ACT_PARTS
// activation tiles (GEMM_BM rows), then the weight tile (GEMM_BN rows; with SwiGLU the gate
// rows, then the up rows). The tensor maps (CUtensorMap, encoded by the runtime, in global
// memory) zero-fill rows past the matrix, so M and N need no checks until the epilogue.
constexpr int GEMM_CONSUMERS = GEMM_BM / 64;                     // math warpgroups, 64 rows each
constexpr int GEMM_MATH_THREADS = GEMM_CONSUMERS * 128;
constexpr u32 GEMM_A_BYTES = GEMM_BM * 128u;                     // one activation part
constexpr u32 GEMM_W_BYTES = GEMM_BN * 128u;
constexpr u32 GEMM_STAGE_BYTES = ACT_PARTS * GEMM_A_BYTES + GEMM_W_BYTES;
constexpr int GEMM_RING_BYTES = GEMM_STAGES * GEMM_STAGE_BYTES + 1024;  // + alignment slack
static_assert(GEMM_RING_BYTES == GEMM_DYN_SMEM, "the launch plan's dynamic smem size");
static_assert(GEMM_BK == 64, "one 128-byte swizzle row of k per stage");
static_assert(GEMM_THREADS == GEMM_MATH_THREADS + 128, "one producer warpgroup + one per 64 rows");
static_assert(GEMM_BN % 16 == 0 && GEMM_BN <= 256, "wgmma N; SwiGLU halves of whole 8-column groups");
static_assert(GEMM_BM % (8 * GEMM_CLUSTER) == 0, "each block's share of a multicast tile is whole 8-row swizzle groups");
constexpr int GEMM_A_ROWS_OWN = GEMM_BM / GEMM_CLUSTER;          // rows of an activation tile this block loads

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
// Stepping k by 16 (32 bytes) inside the swizzle row adds 2 to the encoded start address.
__device__ __forceinline__ u64 wgmma_desc(u32 saddr) {
    return (u64)((saddr & 0x3FFFFu) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Wait until at most N committed wgmma groups of this warpgroup are still running.
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }

// mbarriers (shared::cta addresses). A stage's `full` barrier completes when the producer has
// arrived and the stage's TMA bytes have landed; its `empty` barrier when every consumer
// warpgroup has finished the wgmmas that read it. Waits name the phase parity they wait out.
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    asm volatile("{\n .reg .pred done;\n WAIT:\n"
                 " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 " @!done bra WAIT;\n}\n" :: "r"(bar), "r"(parity) : "memory");
}
// Box (64 k x box rows) of the 2-D bf16 tensor `map` at (k, row) into smem, counted on `bar`.
__device__ __forceinline__ void tma_load_2d(u32 dst, const void* map, u32 bar, int k, int row) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n"
                 :: "r"(dst), "l"(map), "r"(bar), "r"(k), "r"(row) : "memory");
}
// Clusters (GEMM_CLUSTER blocks along N share each activation tile): a block loads its
// 1 / GEMM_CLUSTER of the tile's rows and multicasts them to every block of the cluster (same smem
// offsets, each block's own `full` barrier counts the bytes); a stage is free for the next
// multicast only when the consumers of every block have released it, so consumers arrive on the
// `empty` barrier of each block of the cluster.
__device__ __forceinline__ void tma_load_2d_multicast(u32 dst, const void* map, u32 bar, int k, int row, u16 mask) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%3, %4}], [%2], %5;\n"
                 :: "r"(dst), "l"(map), "r"(bar), "r"(k), "r"(row), "h"(mask) : "memory");
}
__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
// Arrive on the mbarrier at the same smem offset in block `rank` of the cluster.
__device__ __forceinline__ void mbar_arrive_in(u32 bar, u32 rank) {
    u32 remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(bar), "r"(rank));
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" :: "r"(remote) : "memory");
}
// Every thread of every block of the cluster.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// Sync of the consumer warpgroups only (the producer does not take part).
__device__ __forceinline__ void math_barrier() { asm volatile("bar.sync 1, %0;\n" :: "n"(GEMM_MATH_THREADS) : "memory"); }

"#;

const GEMM_WGMMA_KERNEL: &str = r#"
// X, W, W2: CUtensorMap addresses (W2: the up projection's, SwiGLU only). Boxes: 64 k x
// GEMM_A_ROWS_OWN rows of X (whose rows hold ACT_PARTS x K values: part p at column p * K),
// 64 x GEMM_BN rows of W, or 64 x GEMM_BN / 2 of each of W and W2 with SwiGLU.
extern "C" __global__ void CLUSTER_ATTR __launch_bounds__(GEMM_THREADS, 1)
prefill_gemm(const void* __restrict__ X, const void* __restrict__ W, const void* __restrict__ W2, int M, int N, int K,
             int epilogue, float* __restrict__ partials, u32* __restrict__ counters,
             float* __restrict__ Yf, u16* __restrict__ Yb) {
    prefill_entry();
    const int splits = gridDim.z;  // split-K
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ __align__(8) u64 bars[2 * GEMM_STAGES];  // full[s] at s, empty[s] at GEMM_STAGES + s
    __shared__ u32 is_last;
    // Tiles must start on 1024-byte boundaries; GEMM_DYN_SMEM has 1024 bytes of slack for this.
    const u32 raw = smem_addr(smem_raw);
    const u32 ring = (raw + 1023u) & ~1023u;
    const u32 full0 = smem_addr(bars), empty0 = full0 + 8u * GEMM_STAGES;
    const bool swiglu = epilogue == EPI_SWIGLU_BF16;
    const int m0 = blockIdx.y * GEMM_BM;
    const int n0 = blockIdx.x * (swiglu ? GEMM_BN / 2 : GEMM_BN);
    const int wg = threadIdx.x >> 7;
    int kt0, kt1;
    gemm_split_range(K / GEMM_BK, splits, kt0, kt1);
    const int KT = kt1 - kt0;
    const u32 rank = GEMM_CLUSTER > 1 ? cluster_rank() : 0u;
    if (threadIdx.x == 0) {
        for (int s = 0; s < GEMM_STAGES; ++s) {
            mbar_init(full0 + 8u * s, 1u);
            mbar_init(empty0 + 8u * s, GEMM_CONSUMERS * GEMM_CLUSTER);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    // No block multicasts into, or arrives on, a barrier of another before it is initialised.
    if constexpr (GEMM_CLUSTER > 1) cluster_sync();
    else __syncthreads();

    if (wg == GEMM_CONSUMERS) {
        // Producer: one thread keeps the ring full. A fresh barrier counts as having completed
        // the phase before its first, so the first pass over the ring does not wait.
        if (threadIdx.x == GEMM_MATH_THREADS) {
            for (int kt = 0; kt < KT; ++kt) {
                const int s = kt % GEMM_STAGES;
                const u32 parity = (u32)(kt / GEMM_STAGES) & 1u;
                const u32 full = full0 + 8u * s;
                mbar_wait(empty0 + 8u * s, parity ^ 1u);
                mbar_arrive_expect_tx(full, GEMM_STAGE_BYTES);
                const u32 st = ring + s * GEMM_STAGE_BYTES;
                const int k = (kt0 + kt) * GEMM_BK;
                const u32 own = rank * GEMM_A_ROWS_OWN;  // this block's rows of the activation tile
#pragma unroll
                for (int part = 0; part < ACT_PARTS; ++part) {
                    if constexpr (GEMM_CLUSTER > 1)
                        tma_load_2d_multicast(st + part * GEMM_A_BYTES + own * 128u, X, full, part * K + k,
                                              m0 + (int)own, (u16)((1u << GEMM_CLUSTER) - 1u));
                    else
                        tma_load_2d(st + part * GEMM_A_BYTES, X, full, part * K + k, m0);
                }
                const u32 wt = st + ACT_PARTS * GEMM_A_BYTES;
                if (swiglu) {
                    tma_load_2d(wt, W, full, k, n0);
                    tma_load_2d(wt + GEMM_W_BYTES / 2, W2, full, k, n0);
                } else {
                    tma_load_2d(wt, W, full, k, n0);
                }
            }
        }
    } else {
        float* stage = reinterpret_cast<float*>(smem_raw + (ring - raw));  // the ring, reused by the epilogue
        gemm_consume(ring, stage, full0, empty0, KT, M, N, m0, n0, wg, swiglu, epilogue, splits, partials, counters, Yf, Yb, is_last);
    }
    // A block leaves only when no other block of its cluster can still multicast into it or
    // arrive on its barriers.
    if constexpr (GEMM_CLUSTER > 1) {
        __syncwarp();  // the barrier is .aligned: whole warps
        cluster_sync();
    }
}
"#;

/// The math warpgroups of the wgmma GEMM: the k loop over the ring, split-K
/// and the epilogue from registers.
const GEMM_WGMMA_CONSUME: &str = r#"
// Row stride of the staged epilogue tile in floats: 8 mod 32, so the float2 fragment writes of 16
// lanes (4 rows x 4 column pairs) fall in distinct banks.
constexpr int GEMM_EPI_LD = GEMM_BN + 8;
static_assert(GEMM_BM * GEMM_EPI_LD * 4 <= GEMM_STAGES * GEMM_STAGE_BYTES, "the staged tile fits in the ring");
constexpr int GEMM_EPI_ROWS = 16;  // rows per math warp (GEMM_BM / (GEMM_MATH_THREADS / 32))
static_assert(GEMM_EPI_ROWS * GEMM_MATH_THREADS / 32 == GEMM_BM, "every tile row has one warp");

// EPI_ADD_F32 from the staged tile: Yf[m][n] += tile. Warp w takes tile rows [16 w, 16 w + 16), a
// lane 4 adjacent columns; the residual loads of 8 rows are all issued before their sums.
__device__ __forceinline__ void gemm_add_rows(const float* stage, int M, int N, int m0, int n0, int ct,
                                              float* __restrict__ Yf) {
    const int lane = ct & 31, wr = (ct >> 5) * GEMM_EPI_ROWS;
    constexpr int CI = (GEMM_BN + 127) / 128;  // 4-column slots of a lane per row
    const bool vec = (N & 3) == 0;             // rows 16-byte aligned
#pragma unroll
    for (int i0 = 0; i0 < GEMM_EPI_ROWS; i0 += 8) {
        float4 res[8][CI];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int m = m0 + wr + i0 + i;
#pragma unroll
            for (int q = 0; q < CI; ++q) {
                const int c = 4 * lane + 128 * q, n = n0 + c;
                res[i][q] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (m >= M || c >= GEMM_BN || n >= N) continue;
                const float* y = Yf + (size_t)m * N + n;
                if (vec) {
                    res[i][q] = *reinterpret_cast<const float4*>(y);
                } else {
                    res[i][q].x = y[0];
                    if (n + 1 < N) res[i][q].y = y[1];
                    if (n + 2 < N) res[i][q].z = y[2];
                    if (n + 3 < N) res[i][q].w = y[3];
                }
            }
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int m = m0 + wr + i0 + i;
            if (m >= M) break;
#pragma unroll
            for (int q = 0; q < CI; ++q) {
                const int c = 4 * lane + 128 * q, n = n0 + c;
                if (c >= GEMM_BN || n >= N) continue;
                const float4 t = *reinterpret_cast<const float4*>(stage + (wr + i0 + i) * GEMM_EPI_LD + c);
                const float4 v = make_float4(res[i][q].x + t.x, res[i][q].y + t.y, res[i][q].z + t.z, res[i][q].w + t.w);
                float* y = Yf + (size_t)m * N + n;
                if (vec) {
                    *reinterpret_cast<float4*>(y) = v;
                } else {
                    y[0] = v.x;
                    if (n + 1 < N) y[1] = v.y;
                    if (n + 2 < N) y[2] = v.z;
                    if (n + 3 < N) y[3] = v.w;
                }
            }
        }
    }
}

// Consumer warpgroup wg: rows [64 wg, 64 wg + 64) of the block tile, all GEMM_BN columns.
__device__ __forceinline__ void gemm_consume(u32 ring, float* stage, u32 full0, u32 empty0, int KT, int M, int N, int m0, int n0,
                                             int wg, bool swiglu, int epilogue, int splits,
                                             float* __restrict__ partials, u32* __restrict__ counters,
                                             float* __restrict__ Yf, u16* __restrict__ Yb, u32& is_last) {
    float d[GEMM_BN / 2];
#pragma unroll
    for (int e = 0; e < GEMM_BN / 2; ++e) d[e] = 0.0f;
    // A warpgroup whose 64 rows all lie past the prompt (rows 576..639 of the last row tile at
    // T = 520) keeps the ring protocol but skips its math (its d stays 0, and no row of it is
    // stored). That halves the tensor work of the last row tile's blocks, which the scheduler
    // dispatches last: at T = 520 they are most of the wide GEMMs' third wave.
    const bool rows_live = m0 + wg * 64 < M;
    for (int kt = 0; kt < KT; ++kt) {
        const int s = kt % GEMM_STAGES;
        mbar_wait(full0 + 8u * s, (u32)(kt / GEMM_STAGES) & 1u);
        const u32 st = ring + s * GEMM_STAGE_BYTES;
        if (rows_live) {
            const u64 db = wgmma_desc(st + ACT_PARTS * GEMM_A_BYTES);
            wgmma_fence();
#pragma unroll
            for (int part = 0; part < ACT_PARTS; ++part) {
                const u64 da = wgmma_desc(st + part * GEMM_A_BYTES + wg * 64 * 128);
#pragma unroll
                for (int ks = 0; ks < 4; ++ks) wgmma_m64k16(d, da + 2 * ks, db + 2 * ks);
            }
            wgmma_commit();
        }
        // One group stays in flight: once the previous stage's group is done, that stage is free
        // (in every block of the cluster, which all received it).
        wgmma_wait<1>();
        if (kt > 0 && (threadIdx.x & 127) == 0) {
            const u32 empty = empty0 + 8u * ((kt - 1) % GEMM_STAGES);
            if constexpr (GEMM_CLUSTER > 1) {
#pragma unroll
                for (u32 r = 0; r < GEMM_CLUSTER; ++r) mbar_arrive_in(empty, r);
            } else {
                mbar_arrive(empty);
            }
        }
    }
    wgmma_wait<0>();

    // Fragment of m64nNk16: warp q of the warpgroup holds rows 16q + lane/4 (+8), columns
    // 8j + 2(lane%4) (+1) in d[4j .. 4j+3] -- the mma.sync C layout repeated over N/8 groups.
    const int ct = threadIdx.x;  // 0 .. GEMM_MATH_THREADS-1
    if (splits > 1) {
        // Split-K: each split stores its fragments (the same register order in every split),
        // the last to arrive at the tile's counter sums them in split order (deterministic).
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        float* mine = partials + ((size_t)tile * splits + blockIdx.z) * (GEMM_BM * GEMM_BN);
#pragma unroll
        for (int e = 0; e < GEMM_BN / 2; ++e) __stcg(mine + e * GEMM_MATH_THREADS + ct, d[e]);
        math_barrier();
        if (ct == 0) is_last = tile_arrive_is_last(counters + tile, (u32)splits) ? 1u : 0u;
        math_barrier();
        if (!is_last) return;  // to the kernel's exit (the cluster barrier)
        __threadfence();
        // Split by split, so each split's loads are all in flight at once (a chain of
        // dependent L2 round trips per register otherwise).
#pragma unroll
        for (int e = 0; e < GEMM_BN / 2; ++e) d[e] = 0.0f;
        for (int z = 0; z < splits; ++z) {
            const float* part = partials + ((size_t)tile * splits + z) * (GEMM_BM * GEMM_BN) + ct;
#pragma unroll
            for (int e = 0; e < GEMM_BN / 2; ++e) d[e] += __ldcg(part + e * GEMM_MATH_THREADS);
        }
    }
    if (epilogue == EPI_ADD_F32) {
        // Adding into the residual goes through shared memory: the fragments into a staged f32 tile,
        // then each warp reads, adds and writes whole rows with 16-byte accesses. Straight from the
        // fragments, a warp instruction touches 8 rows x 32 bytes (8 L2 requests) and the loads wait
        // on all of them; per-block %globaltimer stamps on the H100 showed that epilogue taking
        // 10-15 us of a 30 us split-K GEMM. (Plain stores gain nothing from staging: measured slower.)
        // The ring is free once every consumer warpgroup's last wgmma has completed (the producer
        // issued no copy past the last stage consumed).
        math_barrier();
        const int lane = ct & 31;
        const int r = wg * 64 + ((ct >> 5) & 3) * 16 + (lane >> 2);  // tile row of d[4j], d[4j+1]
        const int cq = (lane & 3) * 2;
#pragma unroll
        for (int j = 0; j < GEMM_BN / 8; ++j) {
            *reinterpret_cast<float2*>(stage + r * GEMM_EPI_LD + 8 * j + cq) = make_float2(d[4 * j], d[4 * j + 1]);
            *reinterpret_cast<float2*>(stage + (r + 8) * GEMM_EPI_LD + 8 * j + cq) = make_float2(d[4 * j + 2], d[4 * j + 3]);
        }
        math_barrier();
        gemm_add_rows(stage, M, N, m0, n0, ct, Yf);
        return;
    }
    // Plain stores straight from the fragments.
    const int lane = ct & 31;
    const int r0 = m0 + wg * 64 + ((ct >> 5) & 3) * 16 + (lane >> 2);
    const int cq = (lane & 3) * 2;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int m = r0 + 8 * h;
        if (m >= M) continue;
        if (swiglu) {
            // Gate columns in groups j < GEMM_BN / 16, the matching up columns GEMM_BN / 16 groups on.
            u16* row = Yb + (size_t)m * ACT_PARTS * N;
#pragma unroll
            for (int j = 0; j < GEMM_BN / 16; ++j) {
                const int n = n0 + 8 * j + cq;
                if (n >= N) continue;
                const float* g = d + 4 * j + 2 * h;
                const float* u = d + 4 * (j + GEMM_BN / 16) + 2 * h;
                store_act2(row, n, N, silu_f(g[0]) * u[0], silu_f(g[1]) * u[1]);
            }
            continue;
        }
#pragma unroll
        for (int j = 0; j < GEMM_BN / 8; ++j) {
            const int n = n0 + 8 * j + cq;
            if (n >= N) continue;
            const float v0 = d[4 * j + 2 * h], v1 = d[4 * j + 2 * h + 1];
            if (epilogue == EPI_STORE_BF16) store_act2(Yb + (size_t)m * ACT_PARTS * N, n, N, v0, v1);
            else if (epilogue == EPI_STORE_F32) *reinterpret_cast<float2*>(Yf + (size_t)m * N + n) = make_float2(v0, v1);
        }
    }
}
"#;
