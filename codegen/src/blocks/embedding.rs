//! Embedding lookup: one bf16 row to f32 in shared memory (every block, so
//! layer 0's input norm needs no sync); block 0 also seeds the residual.

pub const EMBEDDING: &str = r#"// ---- embedding ----
__device__ void embedding_to_smem(float* xs, const u16* table, u32 token, float* resid, bool write_resid) {
    const u16* row = table + (size_t)token * HIDDEN;
    for (int i = threadIdx.x; i < HIDDEN; i += THREADS) {
        const float v = bf16_to_f32(row[i]);
        xs[i] = v;
        if (write_resid) resid[i] = v;
    }
    __syncthreads();
}
"#;
