//! Schedule errors: each names the field and the limit it breaks.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{0}` is not a CUDA architecture (expected e.g. sm_86, sm_90a, 8.6)")]
    BadArch(String),
    #[error("unknown target `{target}`; known targets: {known}")]
    UnknownTarget { target: String, known: String },
    #[error("unknown preset `{preset}`; known presets: {known}")]
    UnknownPreset { preset: String, known: String },
    #[error("schedule patch {0}")]
    BadPatch(String),
    #[error("invalid schedule: `{field}` = {value}: {limit}")]
    Invalid {
        field: &'static str,
        value: String,
        limit: String,
    },
}
