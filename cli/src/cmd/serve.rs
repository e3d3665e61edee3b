//! `lucebox serve` (stub: to be implemented).

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`lucebox serve` is not implemented yet")
}
