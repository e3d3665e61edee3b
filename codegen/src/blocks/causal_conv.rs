//! Causal depthwise conv step (decode): fused into the in_proj_qkv epilogue,
//! because the conv is per channel and the channel's row is already in a
//! register when its dot product finishes.

pub const CAUSAL_CONV_STEP: &str = r#"// ---- causal_conv_step ----
// y = silu(sum_j w[c,j] * x_{t-K+1+j}); tap K-1 is the current input. The
// state keeps the K-1 previous inputs, oldest first, and is shifted in place.
__device__ __forceinline__ float causal_conv_step(float x, const float* w /*[CONV_K]*/, float* state /*[CONV_K-1]*/) {
    float y = w[CONV_K - 1] * x;
#pragma unroll
    for (int j = 0; j < CONV_K - 1; ++j) y = fmaf(w[j], ld_shared_f32(state + j), y);
#pragma unroll
    for (int j = 0; j < CONV_K - 2; ++j) state[j] = ld_shared_f32(state + j + 1);
    state[CONV_K - 2] = x;
    return silu_f(y);
}
"#;
