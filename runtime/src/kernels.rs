//! CUDA sources of the runtime's own kernels (probe, grid barrier,
//! bandwidth), used by `lucebox doctor` and `lucebox check`.

/// The grid barrier and tile counters of the generated kernels, taken from
/// the codegen itself so `lucebox doctor` measures exactly the barrier the
/// megakernel uses.
pub use lucebox_codegen::blocks::sync::SYNC;
/// `probe_axpb`: y = fma(a, bf16 x, b).
pub const PROBE: &str = include_str!("kernels/probe.cu");
const BARRIER: &str = include_str!("kernels/barrier.cu");
/// `read_bandwidth`: 16-byte streaming loads, per-block sums.
pub const BANDWIDTH: &str = include_str!("kernels/bandwidth.cu");

/// `barrier_only` and `barrier_checked` for a grid of `grid_blocks` blocks.
pub fn barrier_source(grid_blocks: u32) -> String {
    // SYNC expects the prelude's `u32`.
    format!(
        "constexpr unsigned long long GRID_BLOCKS = {grid_blocks}ull;\ntypedef unsigned int u32;\n{SYNC}\n{BARRIER}"
    )
}
