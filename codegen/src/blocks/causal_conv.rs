//! Causal depthwise conv step (decode): fused into the in_proj_qkv epilogue,
//! because the conv is per channel and the channel's row is already in a
//! register when its dot product finishes.

pub const CAUSAL_CONV_STEP: &str = r#"// ---- causal_conv_step ----
// y = silu(sum_j w[c,j] * x_{t-K+1+j}); tap K-1 is the current input. The
// state keeps the K-1 previous inputs, oldest first, and is shifted in place.
// The taps are loaded apart from the step so a caller can issue the loads
// before the channel's input is ready.
struct ConvTaps {
    float w[CONV_K];
    float s[CONV_K - 1];
};
__device__ __forceinline__ ConvTaps load_conv_taps(const float* w /*[CONV_K]*/, const float* state /*[CONV_K-1]*/) {
    ConvTaps t;
#pragma unroll
    for (int j = 0; j < CONV_K; ++j) t.w[j] = w[j];
#pragma unroll
    for (int j = 0; j < CONV_K - 1; ++j) t.s[j] = ld_shared_f32(state + j);
    return t;
}
__device__ __forceinline__ float causal_conv_step(float x, const ConvTaps& t, float* state /*[CONV_K-1]*/) {
    float y = t.w[CONV_K - 1] * x;
#pragma unroll
    for (int j = 0; j < CONV_K - 1; ++j) y = fmaf(t.w[j], t.s[j], y);
#pragma unroll
    for (int j = 0; j < CONV_K - 2; ++j) state[j] = t.s[j + 1];
    state[CONV_K - 2] = x;
    return silu_f(y);
}
"#;
