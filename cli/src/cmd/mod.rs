//! One module per `lucebox` subcommand.

pub mod bench;
pub mod check;
pub mod doctor;
pub mod logits;
pub mod profile;
pub mod run;
pub mod serve;
pub mod synth;
