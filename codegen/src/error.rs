//! Codegen errors.

use lucebox_schedules::ScheduleError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("model config cannot be lowered: {0}")]
    Config(String),
    #[error("formatting generated code failed")]
    Fmt(#[from] std::fmt::Error),
}
