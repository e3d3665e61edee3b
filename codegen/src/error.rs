//! Codegen errors.

use lucebox_schedules::ScheduleError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("model config cannot be lowered: {0}")]
    Config(String),
    #[error("{kind} kernels: {why}")]
    NotGenerated {
        kind: &'static str,
        why: &'static str,
    },
    #[error("formatting generated code failed")]
    Fmt(#[from] std::fmt::Error),
}
