//! `silt-loadtest suite`: the standard comparison, written into BENCHMARKS.md.

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct SuiteArgs {}

pub(crate) async fn run(_: &SuiteArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
