//! Shared code of the `lucebox` and `lucebox-gen` binaries.

pub mod backend;
pub mod cmd;
pub mod serve;
