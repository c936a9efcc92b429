//! `city-node regions …`: validating a city's own boundary file against the world index.

use anyhow::{Context, bail};
use clap::Subcommand;
use std::path::PathBuf;

/// Region data commands.
#[derive(Subcommand, Debug)]
pub(crate) enum RegionsCmd {
    /// Validate a GeoJSON FeatureCollection of municipal boundaries: every problem names the
    /// feature and the reason; on success, print each region and the world subdivision it
    /// lies in, and optionally write it in the compact `.pgeo` form.
    Import {
        /// The GeoJSON file.
        file: PathBuf,
        /// Level of the regions (1 = first-level subdivisions, 2 = municipalities on top).
        #[arg(long, default_value_t = 2)]
        level: u8,
        /// Write the validated regions here as `.pgeo`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: RegionsCmd) -> anyhow::Result<()> {
    match cmd {
        RegionsCmd::Import { file, level, out } => {
            if level == 0 {
                bail!("--level must be at least 1");
            }
            let world = pop_geo::shipped::world().context("loading the shipped world index")?;
            let report = pop_geo::validate_import(&file, level, &world)?;
            for r in &report.regions {
                println!(
                    "{}\t{}\t{} polygon(s)\tinside ({:.5}, {:.5})\tin {}",
                    r.id,
                    r.name,
                    r.polygons,
                    r.inside.0,
                    r.inside.1,
                    r.subdivision.as_deref().unwrap_or("no world subdivision")
                );
            }
            println!(
                "{}: {} region(s) valid",
                file.display(),
                report.regions.len()
            );
            if let Some(out) = out {
                std::fs::write(&out, &report.compact)
                    .with_context(|| format!("writing {}", out.display()))?;
                println!("wrote {} ({} bytes)", out.display(), report.compact.len());
            }
            Ok(())
        }
    }
}
