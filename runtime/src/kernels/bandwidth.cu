// Device read bandwidth: every thread streams 16-byte loads over the buffer
// (grid-stride, 4 loads in flight) and sums the 32-bit words, so the result
// proves every byte was read and the compiler cannot drop the loads.
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u64 sum4(uint4 v) {
    return (u64)v.x + (u64)v.y + (u64)v.z + (u64)v.w;
}

extern "C" __global__ void read_bandwidth(const uint4* __restrict__ data, u64 n_vec,
                                          u64* __restrict__ block_sums) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u64 acc = 0;
    for (; i + 3 * stride < n_vec; i += 4 * stride) {
        const uint4 a = __ldcs(data + i);
        const uint4 b = __ldcs(data + i + stride);
        const uint4 c = __ldcs(data + i + 2 * stride);
        const uint4 d = __ldcs(data + i + 3 * stride);
        acc += sum4(a) + sum4(b) + sum4(c) + sum4(d);
    }
    for (; i < n_vec; i += stride) acc += sum4(__ldcs(data + i));
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    __shared__ u64 warp_sums[32];
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        u64 total = 0;
        for (u32 w = 0; w < (blockDim.x + 31u) / 32u; ++w) total += warp_sums[w];
        block_sums[blockIdx.x] = total;
    }
}
