//! Shared code of the `lucebox` and `lucebox-gen` binaries.

pub mod cmd;
pub mod serve;
