//! `r1host plugin …`: tools for reward-plugin authors (filled in by the plugin work).

#[derive(Debug, clap::Args)]
pub struct PluginArgs {}

pub fn run(_args: PluginArgs) -> anyhow::Result<()> {
    anyhow::bail!("plugin commands are not built yet")
}
