//! RMSNorm of a residual vector into shared memory, computed redundantly by
//! every block (a 4-20 KB read from L2 is cheaper than another sync point).

pub const RMS_NORM: &str = r#"// ---- rms_norm: block-redundant zero-centred RMSNorm ----
// Block-wide sum; `red` holds WARPS floats. All threads get the result.
__device__ __forceinline__ float block_sum(float v, float* red) {
    v = warp_sum(v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < WARPS ? red[lane] : 0.0f;
    return warp_sum(t);
}

// xs[i] = src[i] / sqrt(mean(src^2) + eps) * (1 + w[i])   (Qwen3_5RMSNorm)
// `src` is f32 produced by other blocks (read at L2), or null with `xs`
// already filled (the embedding row).
__device__ void rms_norm_to_smem(float* xs, const float* src, const float* w, int n, float* red) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += THREADS) {
        const float v = src ? ld_shared_f32(src + i) : xs[i];
        xs[i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)n + RMS_EPS);
    for (int i = threadIdx.x; i < n; i += THREADS) xs[i] = xs[i] * inv * (1.0f + w[i]);
    __syncthreads();
}

// Copy an f32 activation vector produced by other blocks into shared memory.
__device__ void load_vec_to_smem(float* xs, const float* src, int n) {
    for (int i = threadIdx.x; i < n; i += THREADS) xs[i] = ld_shared_f32(src + i);
    __syncthreads();
}
"#;
