// ---- sync: grid barrier and tile counters ----
// COPY of lucebox-codegen's `sync` block (codegen/src/blocks/sync.rs, SYNC),
// so `lucebox doctor` measures exactly the barrier the megakernel uses. Once
// the codegen crate is on main, the runtime takes the text from there
// (lucebox_codegen::blocks::sync::SYNC) and this file goes away.
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
