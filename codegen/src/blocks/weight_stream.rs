//! Weight streaming through per-warp shared-memory rings (`prefetch:
//! shared_ring`, sm_90+).
//!
//! Matvec row ownership is static, so the sequence of weight slices a warp
//! reads is known for the whole token and the next. Lane 0 of each warp keeps
//! up to `WS_SLOTS` of its future items in flight with bulk async copies
//! (`cp.async.bulk`, completion counted in bytes on one mbarrier per slot)
//! and tops its ring up whenever the warp frees an item. The copies therefore
//! run ahead through grid barriers, the recurrence and attention (which read
//! no weights), and the dot products read shared memory instead of waiting
//! on HBM. The order of items is the kernel's token program (every layer's
//! matvecs, then the LM head on steps that produce a token); the kernel body
//! defines `ws_issue_next` (the cursor over it), this block the ring.

pub const WEIGHT_STREAM: &str = r#"// ---- weight stream: each warp's matvec rows flow through its own shared-memory ring ----
constexpr int WS_SLOTS = 8;  // items in flight per warp (one mbarrier each)

// Per-warp ring state. Written by lane 0 only; the other lanes read
// `consumed` and `start` after a __syncwarp.
struct WarpStream {
    u32 issued, consumed;  // items
    u32 head, tail;        // ring bytes, monotonic (head - tail = bytes held)
    u32 step;              // cursor: the token step, ...
    int layer, phase, k;   // ... layer (N_LAYERS: the LM head), phase, item
    u32 start[WS_SLOTS];   // ring offset of each slot's item
    u32 end[WS_SLOTS];     // head after the item: the tail once it is freed
};
__device__ __forceinline__ WarpStream& ws_state() {
    __shared__ WarpStream s[WARPS];
    return s[threadIdx.x >> 5];
}
__device__ __forceinline__ unsigned long long* ws_bars() {
    __shared__ __align__(8) unsigned long long bars[WARPS * WS_SLOTS];
    return bars + (threadIdx.x >> 5) * WS_SLOTS;
}
__device__ __forceinline__ char* ws_ring() {
    extern __shared__ __align__(16) unsigned char ws_dynamic_smem[];  // the kernel's `smem`
    return reinterpret_cast<char*>(ws_dynamic_smem) + WS_RING_OFFSET + (threadIdx.x >> 5) * WS_RING_BYTES;
}
// What the cursor needs of the launch (set once at kernel start): the
// weight table and which steps run the layers and the LM head.
struct WsLaunch {
    const void* const* weights;
    const u16* lm_head;
    u32 n_input, max_new_tokens, flags;
};
__device__ __forceinline__ WsLaunch& ws_launch() {
    __shared__ WsLaunch l;
    return l;
}

__device__ __forceinline__ void mbar_init(unsigned long long* bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(smem_addr(bar)), "r"(count) : "memory");
}
// Arrive once and expect `bytes` of async copies before the phase completes.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned long long* bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(unsigned long long* bar, u32 parity) {
    u32 done;
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.b32 %0, 1, 0, p;\n}"
                 : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
    return done != 0;
}
// Global -> shared bulk copy; weights are read once per token, so they are
// marked first to leave L2 (activations, state and the KV cache stay).
__device__ __forceinline__ void bulk_copy_weights(void* dst, const void* src, u32 bytes, unsigned long long* bar) {
    asm volatile("{\n\t.reg .b64 pol;\n\tcreatepolicy.fractional.L2::evict_first.b64 pol, 1.0;\n\t"
                 "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], pol;\n}"
                 :: "r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
}

enum WsIssue { WS_FULL, WS_ISSUED, WS_PHASE_DONE };

// Issue `item` (R rows; a warp of a KSPLIT team takes its contiguous K
// slice of each row) as the warp's next ring entry.
template <int R, int K, int KSPLIT, class RowPtr>
__device__ __forceinline__ WsIssue ws_try_issue_item(WarpStream& s, int item, RowPtr row_ptr) {
    constexpr int CHUNKS = K / 8, CPW = (CHUNKS + KSPLIT - 1) / KSPLIT;
    const int wt = (threadIdx.x >> 5) % KSPLIT;
    if (s.issued - s.consumed >= (u32)WS_SLOTS) return WS_FULL;
    const int c0 = wt * CPW;
    const u32 row_bytes = CHUNKS > c0 ? (u32)min(CPW, CHUNKS - c0) * 16u : 0u;
    const u32 bytes = R * row_bytes;
    u32 at = s.head;
    if (at % WS_RING_BYTES + bytes > (u32)WS_RING_BYTES) at += WS_RING_BYTES - at % WS_RING_BYTES;  // no wrap inside an item
    if (at + bytes - s.tail > (u32)WS_RING_BYTES) return WS_FULL;
    const u32 slot = s.issued % WS_SLOTS;
    unsigned long long* bar = ws_bars() + slot;
    char* dst = ws_ring() + at % WS_RING_BYTES;
    s.start[slot] = at % WS_RING_BYTES;
    s.end[slot] = at + bytes;
    s.head = at + bytes;
    mbar_arrive_expect_tx(bar, bytes);
    if (row_bytes > 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) bulk_copy_weights(dst + r * row_bytes, row_ptr(item, r) + c0 * 8, row_bytes, bar);
    }
    ++s.issued;
    ++s.k;
    return WS_ISSUED;
}

// The warp's item `s.k` of a matvec phase (matvec_phase_pre's item map).
template <int R, int K, int KSPLIT, class RowPtr>
__device__ __forceinline__ WsIssue ws_try_issue(WarpStream& s, int n_items, RowPtr row_ptr) {
    constexpr int TEAMS = WARPS / KSPLIT;
    const int team = (threadIdx.x >> 5) / KSPLIT;
    const int item = team * GRID_BLOCKS + blockIdx.x + s.k * GRID_BLOCKS * TEAMS;
    if (item >= n_items) return WS_PHASE_DONE;
    return ws_try_issue_item<R, K, KSPLIT>(s, item, row_ptr);
}

// Defined with the layer programs: issue the warp's next item, false when
// the ring is full.
__device__ __noinline__ bool ws_issue_next(WarpStream& s);

// Lane 0: issue items until the ring is full. Not inlined: one copy of the
// cursor serves every matvec call site (and keeps their registers free).
__device__ __noinline__ void ws_fill(WarpStream& s) {
    while (ws_issue_next(s)) { }
}

// Kernel start, every thread: barriers, cursor at step 0, first items.
__device__ __forceinline__ void ws_start(const void* const* Wt, const DecodeParams& p) {
    if (threadIdx.x == 0)
        ws_launch() = WsLaunch{Wt, reinterpret_cast<const u16*>(Wt[W_LM_HEAD]), p.n_input, p.max_new_tokens, p.flags};
    if ((threadIdx.x & 31) == 0) {
        WarpStream& s = ws_state();
        s.issued = s.consumed = s.head = s.tail = 0;
        s.step = 0;
        // After prefill, step 0 starts at the final norm (FLAG_RESID_READY).
        s.layer = (p.flags & FLAG_RESID_READY) ? N_LAYERS : 0;
        s.phase = s.k = 0;
        for (int i = 0; i < WS_SLOTS; ++i) mbar_init(ws_bars() + i, 1);
        // Make the initialised barriers visible to the async (copy) proxy.
        asm volatile("fence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) ws_fill(ws_state());
    __syncwarp();
}

// The warp's next item, once its bytes have landed: R rows of the warp's
// K slice, back to back. Every release tops the ring up, so the item has
// been issued (an empty ring always takes the next item); with
// TOP_UP_EMPTY an empty ring is filled first anyway (not in the LM head,
// where the call would spill its candidate registers).
template <bool TOP_UP_EMPTY = true>
__device__ __forceinline__ const uint4* ws_acquire() {
    WarpStream& s = ws_state();
    if (TOP_UP_EMPTY && (threadIdx.x & 31) == 0 && s.issued == s.consumed) ws_fill(s);
    __syncwarp();
    const u32 c = s.consumed;
    unsigned long long* bar = ws_bars() + c % WS_SLOTS;
    while (!mbar_try_wait(bar, (c / WS_SLOTS) & 1u)) { }
    return reinterpret_cast<const uint4*>(ws_ring() + s.start[c % WS_SLOTS]);
}

// Lane 0: free the oldest item's bytes.
__device__ __forceinline__ void ws_free_oldest(WarpStream& s) {
    s.tail = s.end[s.consumed % WS_SLOTS];
    ++s.consumed;
    // The freed bytes were read through the generic proxy; order those reads
    // before the async proxy overwrites them.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// Every lane is done with the acquired item: free it. The ring is topped up
// at the next grid barrier (while the warp would wait anyway), not here on
// the phase's critical path.
__device__ __forceinline__ void ws_release() {
    __syncwarp();
    if ((threadIdx.x & 31) == 0) ws_free_oldest(ws_state());
    __syncwarp();
}

// Lane 0 of every warp tops its ring up: the grid barrier's work between
// arriving and waiting.
struct WsTopUp {
    __device__ void operator()() const {
        if ((threadIdx.x & 31) == 0) ws_fill(ws_state());
    }
};

// The warp's LM head item `s.k` (lm_head_logits' item map, one warp per
// item), from the cached LM head pointer.
__device__ __forceinline__ WsIssue ws_try_issue_lm(WarpStream& s) {
    const int item = blockIdx.x * WARPS + (threadIdx.x >> 5) + s.k * GRID_BLOCKS * WARPS;
    if (item >= VOCAB / MV_R) return WS_PHASE_DONE;
    const u16* lm = ws_launch().lm_head;
    return ws_try_issue_item<MV_R, HIDDEN, 1>(s, item, [lm](int it, int r) {
        return lm + (size_t)(it * MV_R + r) * HIDDEN;
    });
}

// The LM head's items (the cursor's layer N_LAYERS), inline: the LM head
// loop keeps its candidate lists in registers, which a call would spill.
// Stops at the end of the phase; ws_top_up after the loop goes on.
__device__ __forceinline__ void ws_release_lm() {
    __syncwarp();
    if ((threadIdx.x & 31) == 0) {
        WarpStream& s = ws_state();
        ws_free_oldest(s);
        while (s.layer == N_LAYERS && ws_try_issue_lm(s) == WS_ISSUED) { }
    }
    __syncwarp();
}

// Top the ring up (after a loop that used ws_release_lm).
__device__ __forceinline__ void ws_top_up() {
    WsTopUp{}();
    __syncwarp();
}

// Kernel end: wait for copies still in flight (items issued for tokens that
// will not run) before the block's shared memory goes away.
__device__ __forceinline__ void ws_drain() {
    if ((threadIdx.x & 31) == 0) {
        WarpStream& s = ws_state();
        for (u32 c = s.consumed; c != s.issued; ++c) {
            while (!mbar_try_wait(ws_bars() + c % WS_SLOTS, (c / WS_SLOTS) & 1u)) { }
        }
    }
    __syncwarp();
}

// Partial dot products of R rows held in the ring (row r at w + r * n, n
// chunks of this warp's K slice) with xs.
template <int R, int K, int KSPLIT>
__device__ __forceinline__ void matvec_rows_partial_ring(const uint4* __restrict__ w, const float* __restrict__ xs,
                                                          int wt, float (&acc)[R]) {
    constexpr int CHUNKS = K / 8, CPW = (CHUNKS + KSPLIT - 1) / KSPLIT;
    const int c0 = wt * CPW;
    const int n = CHUNKS > c0 ? min(CPW, CHUNKS - c0) : 0;
    const int lane = threadIdx.x & 31;
    const float4* x4 = reinterpret_cast<const float4*>(xs) + 2 * c0;
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    // Shared-memory latency needs less unrolling than HBM; 4 spills on sm_90.
#pragma unroll 2
    for (int j = lane; j < n; j += 32) {
        uint4 v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = w[r * n + j];
        const float4 a = x4[2 * j], b = x4[2 * j + 1];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += dot_bf16x8(v[r], a, b);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
}
"#;

/// Stand-ins when the ring is off, so the matvec and the kernel entry can
/// call the stream unconditionally behind `if constexpr (WEIGHT_STREAM)`.
pub const WEIGHT_STREAM_OFF: &str = r#"// ---- weight stream: off in this schedule (weights load straight from global memory) ----
__device__ __forceinline__ void ws_start(const void* const*, const DecodeParams&) { }
__device__ __forceinline__ void ws_drain() { }
template <bool TOP_UP_EMPTY = true>
__device__ __forceinline__ const uint4* ws_acquire() { return nullptr; }
__device__ __forceinline__ void ws_release() { }
__device__ __forceinline__ void ws_release_lm() { }
struct WsTopUp {
    __device__ void operator()() const { }
};
__device__ __forceinline__ void ws_top_up() { }
template <int R, int K, int KSPLIT>
__device__ __forceinline__ void matvec_rows_partial_ring(const uint4*, const float*, int, float (&acc)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
}
"#;
