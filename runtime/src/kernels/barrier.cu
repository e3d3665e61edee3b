// Grid-barrier kernels (GRID_BLOCKS, u32 and the codegen's SYNC block are put
// in front of this text by `kernels::barrier_source`).

// `rounds` bare barriers: the cost per barrier.
extern "C" __global__ void barrier_only(unsigned long long* counter, u32 rounds) {
    grid_barrier_init(counter);
    for (u32 r = 0; r < rounds; ++r) grid_barrier(counter);
}

// Each round every block publishes a value, meets the grid, and checks its
// neighbour's value: a barrier that lets any block through early is caught.
// `base` differs per launch, so stale values from an earlier launch fail too.
extern "C" __global__ void barrier_checked(unsigned long long* counter, u32* slots,
                                          u32* errors, u32 rounds, u32 base) {
    grid_barrier_init(counter);
    for (u32 r = 0; r < rounds; ++r) {
        const u32 v = base + r + 1u;
        if (threadIdx.x == 0) ((volatile u32*)slots)[blockIdx.x] = v;
        grid_barrier(counter);
        if (threadIdx.x == 0) {
            const u32 got = ((volatile u32*)slots)[(blockIdx.x + 1u) % GRID_BLOCKS];
            if (got != v) atomicAdd(errors, 1u);
        }
        grid_barrier(counter);
    }
}
