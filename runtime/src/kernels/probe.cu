// Probe: y[i] = fma(a, bf16(x[i]), b). Exercises bf16 loads (by bit
// pattern, as the generated code does: NVRTC ships no headers) and exact
// single-rounding fma, so the CPU check can demand bit equality.
typedef unsigned int u32;

__device__ __forceinline__ float bf16_bits_to_f32(unsigned short h) {
    return __uint_as_float(((u32)h) << 16);
}

extern "C" __global__ void probe_axpb(const unsigned short* __restrict__ x,
                                      float* __restrict__ y, u32 n, float a, float b) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = __fmaf_rn(a, bf16_bits_to_f32(x[i]), b);
    }
}
