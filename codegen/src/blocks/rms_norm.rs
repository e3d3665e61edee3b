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

// With PROLOGUE_BATCHED (sm_90) a thread issues all of its loads of an
// N-vector at once: a phase prologue costs one round trip to L2, not one per
// element (a load after a store through a generic pointer must wait for the
// store). Without, the plain loops (the batched form spills registers in the
// sm_86 megakernel).
template <int N>
struct PerThread { static constexpr int V = (N + THREADS - 1) / THREADS; };
constexpr int MAX_HELD = 6;  // beyond this, batches of MAX_HELD (more spills the megakernel on sm_90)

// xs[i] = src[i] (src null: xs already holds the values), MAX_HELD loads in
// flight per thread; returns this thread's sum of squares.
template <int N>
__device__ __forceinline__ float stage_vec_batched(float* xs, const float* src) {
    float ss = 0.0f;
    for (int i0 = 0; i0 < N; i0 += MAX_HELD * THREADS) {
        float v[MAX_HELD];
#pragma unroll
        for (int k = 0; k < MAX_HELD; ++k) {
            const int i = i0 + threadIdx.x + k * THREADS;
            v[k] = i < N ? (src ? ld_shared_f32(src + i) : xs[i]) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < MAX_HELD; ++k) {
            const int i = i0 + threadIdx.x + k * THREADS;
            if (i < N) xs[i] = v[k];
            ss = fmaf(v[k], v[k], ss);
        }
    }
    return ss;
}

// xs[i] = src[i] / sqrt(mean(src^2) + eps) * (1 + w[i])   (Qwen3_5RMSNorm)
// `src` is f32 produced by other blocks (read at L2), or null with `xs`
// already filled (the embedding row).
template <int N>
__device__ void rms_norm_to_smem(float* xs, const float* src, const float* w, float* red) {
    constexpr int V = PerThread<N>::V;
    if constexpr (!PROLOGUE_BATCHED) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < N; i += THREADS) {
            const float v = src ? ld_shared_f32(src + i) : xs[i];
            xs[i] = v;
            ss = fmaf(v, v, ss);
        }
        ss = block_sum(ss, red);
        const float inv = rsqrtf(ss / (float)N + RMS_EPS);
        for (int i = threadIdx.x; i < N; i += THREADS) xs[i] = xs[i] * inv * (1.0f + w[i]);
    } else if constexpr (V <= MAX_HELD) {
        float v[V], wv[V];
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const int i = threadIdx.x + k * THREADS;
            v[k] = i < N ? (src ? ld_shared_f32(src + i) : xs[i]) : 0.0f;
            wv[k] = i < N ? w[i] : 0.0f;
        }
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < V; ++k) ss = fmaf(v[k], v[k], ss);
        ss = block_sum(ss, red);
        const float inv = rsqrtf(ss / (float)N + RMS_EPS);
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const int i = threadIdx.x + k * THREADS;
            if (i < N) xs[i] = v[k] * inv * (1.0f + wv[k]);
        }
    } else {
        const float ss = block_sum(stage_vec_batched<N>(xs, src), red);
        const float inv = rsqrtf(ss / (float)N + RMS_EPS);
        for (int i = threadIdx.x; i < N; i += THREADS) xs[i] = xs[i] * inv * (1.0f + w[i]);
    }
    __syncthreads();
}

// Copy an f32 activation vector produced by other blocks into shared memory,
// MAX_HELD loads in flight per thread.
template <int N>
__device__ void load_vec_to_smem(float* xs, const float* src) {
    if constexpr (PROLOGUE_BATCHED) {
        stage_vec_batched<N>(xs, src);  // the unused sum of squares compiles away
    } else {
        for (int i = threadIdx.x; i < N; i += THREADS) xs[i] = ld_shared_f32(src + i);
    }
    __syncthreads();
}
"#;
