//! Synchronisation: a grid barrier on a monotonic 64-bit counter (reusable
//! across launches without any host memset: each arrival computes its
//! target from the count it observed), and per-tile "last arriving" counters
//! that reset themselves.

pub const SYNC: &str = r#"// ---- sync: grid barrier and tile counters ----
__device__ __forceinline__ unsigned long long ld_acquire_u64(const unsigned long long* p) {
    unsigned long long v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// All GRID_BLOCKS blocks meet. The counter only ever grows (2^64 arrivals
// never wrap), so the barrier needs no reset between barriers or launches:
// an arrival that sees `old` waits for the next multiple of GRID_BLOCKS.
// Requires every block to be co-resident (cooperative launch).
__device__ __forceinline__ void grid_barrier(unsigned long long* counter) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();  // publish this block's writes before arriving
        const unsigned long long old = atomicAdd(counter, 1ull);
        const unsigned long long target = (old / GRID_BLOCKS + 1ull) * GRID_BLOCKS;
        while (ld_acquire_u64(counter) < target) { }
        __threadfence();
    }
    __syncthreads();
}

// Named barrier for the KSPLIT warps of one matvec team (id 0 is __syncthreads).
__device__ __forceinline__ void team_sync(int team, int threads) {
    asm volatile("bar.sync %0, %1;" :: "r"(team + 1), "r"(threads) : "memory");
}
"#;

/// The last-arrival tile counter, shared by the decode megakernel and the
/// prefill GEMM's split-K reduction.
pub const TILE_COUNTER: &str = r#"// ---- tile counter: the last of `expected` arrivals ----
// Called by one thread after its tile's results are written. Returns true in
// exactly one of `expected` arrivals (the last); that arrival resets the
// counter to 0 so the next use (after a grid barrier) starts clean.
__device__ __forceinline__ bool tile_arrive_is_last(u32* counter, u32 expected) {
    __threadfence();
    const u32 ticket = atomicAdd(counter, 1u);
    if (ticket + 1u == expected) {
        atomicExch(counter, 0u);
        __threadfence();
        return true;
    }
    return false;
}
"#;
