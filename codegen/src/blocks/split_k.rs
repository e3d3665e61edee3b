//! What the decode megakernel's split-K phases share: a phase that splits a
//! projection over its input dimension (`decode.mlp = fused_split_k`,
//! `decode.gdn_out = with_recurrence`) multiplies staged weight rows by
//! per-row coefficients and adds the partial outputs into the residual with
//! float reductions.

/// What the split-K phases share (`decode.mlp = fused_split_k`,
/// `decode.gdn_out = with_recurrence`): a warp's staged weight rows combined
/// with per-row coefficients, and float reductions into global memory.
pub const SPLIT_K_SHARES: &str = r#"// ---- split-K shares: staged rows combined, float reductions ----
// o[e] = sum over the N staged rows j of coef[j] * row j's 8 bf16 at this
// lane's chunk of step `it` (stage layout [(it * N + j) * 32 + lane], 16 B each).
template <int N>
__device__ __forceinline__ void combine_staged_rows(const uint4* stage, int it, const float (&coef)[N], float (&o)[8]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
        float w[8];
        unpack_bf16x8(stage[(it * N + j) * 32 + lane], w);
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = fmaf(coef[j], w[e], o[e]);
    }
}
// 4 floats added without a reply (one vector reduction on sm_90).
__device__ __forceinline__ void red_add_f32x4(float* p, const float4 v) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};"
                 :: "l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
#else
    atomicAdd(p, v.x); atomicAdd(p + 1, v.y); atomicAdd(p + 2, v.z); atomicAdd(p + 3, v.w);
#endif
}
"#;
