//! CUDA sources of the runtime's own kernels (probe, grid barrier,
//! bandwidth), used by `lucebox doctor` and `lucebox check`.

/// The codegen's grid barrier (see `kernels/sync.cuh` for provenance).
pub const SYNC: &str = include_str!("kernels/sync.cuh");
/// `probe_axpb`: y = fma(a, bf16 x, b).
pub const PROBE: &str = include_str!("kernels/probe.cu");
const BARRIER: &str = include_str!("kernels/barrier.cu");
/// `read_bandwidth`: 16-byte streaming loads, per-block sums.
pub const BANDWIDTH: &str = include_str!("kernels/bandwidth.cu");

/// `barrier_only` and `barrier_checked` for a grid of `grid_blocks` blocks.
pub fn barrier_source(grid_blocks: u32) -> String {
    format!("constexpr unsigned long long GRID_BLOCKS = {grid_blocks}ull;\n{SYNC}\n{BARRIER}")
}
