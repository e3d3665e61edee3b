//! CUDA compute capability.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ScheduleError;

/// A compute capability, e.g. sm_86. `arch_specific` selects the `a` targets
/// (sm_90a, sm_120a) whose instructions (wgmma, setmaxnreg) do not run on
/// later chips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
    #[serde(default)]
    pub arch_specific: bool,
}

impl Arch {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            arch_specific: false,
        }
    }
    /// `sm_86`, `sm_90a`.
    pub fn sm_name(&self) -> String {
        format!(
            "sm_{}{}{}",
            self.major,
            self.minor,
            if self.arch_specific { "a" } else { "" }
        )
    }
    /// `compute_86` / `compute_90a` (the virtual arch NVRTC wants).
    pub fn compute_name(&self) -> String {
        format!(
            "compute_{}{}{}",
            self.major,
            self.minor,
            if self.arch_specific { "a" } else { "" }
        )
    }
    /// Integer form, 86 for sm_86.
    pub fn number(&self) -> u32 {
        self.major * 10 + self.minor
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sm_name())
    }
}

impl FromStr for Arch {
    type Err = ScheduleError;
    /// Accepts `sm_86`, `sm86`, `86`, `8.6`, `sm_90a`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::BadArch(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        let t = t
            .strip_prefix("sm_")
            .or_else(|| t.strip_prefix("sm"))
            .unwrap_or(&t);
        let (t, arch_specific) = match t.strip_suffix('a') {
            Some(rest) => (rest, true),
            None => (t, false),
        };
        let (major, minor) = if let Some((a, b)) = t.split_once('.') {
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
        } else {
            let n: u32 = t.parse().map_err(|_| bad())?;
            if !(10..=999).contains(&n) {
                return Err(bad());
            }
            (n / 10, n % 10)
        };
        Ok(Self {
            major,
            minor,
            arch_specific,
        })
    }
}
