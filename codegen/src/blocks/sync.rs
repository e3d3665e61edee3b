//! Synchronisation: a grid barrier on a monotonic 64-bit counter (reusable
//! across launches without any host memset: each block derives its targets
//! from the count it reads at kernel start), and per-tile "last arriving"
//! counters that reset themselves.

pub const SYNC: &str = r#"// ---- sync: grid barrier and tile counters ----
__device__ __forceinline__ unsigned long long ld_acquire_u64(const unsigned long long* p) {
    unsigned long long v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ u32 ld_acquire_u32(const u32* p) {
    u32 v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// Per-head ready counters (decode): lane 0 polls (acquire) until counter `a`
// reaches a_target and, when `b` is given, `b` reaches b_target; the warp
// barrier then orders the other lanes' reads after it.
__device__ __forceinline__ void wait_ready(const u32* a, u32 a_target, const u32* b, u32 b_target) {
    if ((threadIdx.x & 31) == 0) {
        while (ld_acquire_u32(a) < a_target || (b != nullptr && ld_acquire_u32(b) < b_target)) { }
    }
    __syncwarp();
}

// The counter value this block's next grid barrier completes at; only
// thread 0 reads or writes it.
__device__ __forceinline__ unsigned long long& grid_barrier_target() {
    __shared__ unsigned long long target;
    return target;
}

// Called by every block at kernel start, before its first grid_barrier. The
// counter only ever grows by GRID_BLOCKS per barrier (2^64 arrivals never
// wrap), so it needs no reset between barriers or launches: at launch it is
// a multiple of GRID_BLOCKS, and a block reading it late still sees less than
// one barrier's arrivals on top (the first barrier needs this block too).
__device__ __forceinline__ void grid_barrier_init(const unsigned long long* counter) {
    if (threadIdx.x == 0) grid_barrier_target() = ld_acquire_u64(counter) / GRID_BLOCKS * GRID_BLOCKS;
}

// All GRID_BLOCKS blocks meet. Arrival is a fire-and-forget release add (the
// block already knows its target), so the last block to arrive starts polling
// without waiting for an atomic's reply. Requires every block to be
// co-resident (cooperative launch).
// Thread 0's part: arrive, then wait for the block's next target.
__device__ __forceinline__ void grid_barrier_arrive(unsigned long long* counter) {
    grid_barrier_target() += GRID_BLOCKS;
    asm volatile("red.release.gpu.global.add.u64 [%0], 1;" :: "l"(counter) : "memory");
}
__device__ __forceinline__ void grid_barrier_wait(const unsigned long long* counter) {
    const unsigned long long target = grid_barrier_target();
    while (ld_acquire_u64(counter) < target) { }
}
// `while_waiting()` runs on every thread between the block's arrival and its
// wait (the decode megakernel tops up its weight rings there, so the copies
// are issued while the grid catches up).
struct NoBarrierWork {
    __device__ void operator()() const { }
};
template <class WhileWaiting = NoBarrierWork>
__device__ __forceinline__ void grid_barrier(unsigned long long* counter, WhileWaiting while_waiting = {}) {
    __syncthreads();
    if (threadIdx.x == 0) grid_barrier_arrive(counter);
    while_waiting();
    if (threadIdx.x == 0) grid_barrier_wait(counter);
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
