//! `prismwatch bench`: throughput, latency and memory of the processor against a local
//! nats-server. (filled in below)

use clap::Args;

use crate::config::Config;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Points per scenario.
    #[arg(long, default_value_t = 400_000)]
    pub points: usize,
}

pub async fn run(_cfg: Config, _args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
