//! GPU-side timing with CUDA events, and summary statistics of repeated runs.

use cudarc::driver::CudaEvent;
use cudarc::driver::sys::CUevent_flags;
use serde::{Deserialize, Serialize};

use crate::device::Gpu;
use crate::error::{Result, RuntimeError};

/// A pair of timing events around work queued on the runtime stream.
pub struct GpuTimer {
    start: CudaEvent,
    end: CudaEvent,
}

impl GpuTimer {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let mk = || {
            gpu.context()
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| RuntimeError::driver("cuEventCreate", e))
        };
        Ok(Self {
            start: mk()?,
            end: mk()?,
        })
    }

    pub fn start(&self, gpu: &Gpu) -> Result<()> {
        self.start
            .record(gpu.stream())
            .map_err(|e| RuntimeError::driver("cuEventRecord", e))
    }

    /// Records the end, waits for it and returns the elapsed milliseconds.
    pub fn stop_ms(&self, gpu: &Gpu) -> Result<f64> {
        self.end
            .record(gpu.stream())
            .map_err(|e| RuntimeError::driver("cuEventRecord", e))?;
        self.end
            .synchronize()
            .map_err(|e| RuntimeError::driver("cuEventSynchronize", e))?;
        self.start
            .elapsed_ms(&self.end)
            .map(f64::from)
            .map_err(|e| RuntimeError::driver("cuEventElapsedTime", e))
    }

    /// Times `work` (which queues GPU work) on the GPU clock, in milliseconds.
    pub fn time_ms(&self, gpu: &Gpu, work: impl FnOnce() -> Result<()>) -> Result<f64> {
        self.start(gpu)?;
        work()?;
        self.stop_ms(gpu)
    }
}

/// Median, min and max of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    /// `None` for an empty sample or one containing NaN.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        Some(Self {
            median,
            min: s[0],
            max: s[n - 1],
            runs: n,
        })
    }

    /// Applies `f` to every statistic (e.g. ms to tok/s; min and max swap
    /// for decreasing `f`).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Self {
        let (a, b) = (f(self.min), f(self.max));
        Self {
            median: f(self.median),
            min: a.min(b),
            max: a.max(b),
            runs: self.runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Stats::of(&[5.0, 1.0, 3.0]).expect("stats");
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 3));
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0]).expect("stats");
        assert_eq!(s.median, 2.5);
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[1.0, f64::NAN]).is_none());
        let inv = Stats::of(&[1.0, 2.0, 4.0])
            .expect("stats")
            .map(|ms| 1000.0 / ms);
        assert_eq!((inv.min, inv.max, inv.median), (250.0, 1000.0, 500.0));
    }
}
