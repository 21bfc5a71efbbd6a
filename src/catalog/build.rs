//! `blackout catalog`: build target catalogs from public registry data.

/// Subcommands of `blackout catalog`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CatalogCommand {}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {}

pub fn run(_cmd: &CatalogCommand) -> Result<(), BuildError> {
    unimplemented!("placeholder: the catalog helper replaces this module")
}
