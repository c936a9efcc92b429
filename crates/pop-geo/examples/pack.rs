//! Packs GeoJSON FeatureCollections into one compact `.pgeo` region file (the form the
//! shipped world index is stored in): `cargo run --release -p pop-geo --example pack --
//! OUT.pgeo IN.geojson [IN2.geojson …]`. Used by `data/reduce.sh`.

use pop_geo::RegionIndex;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, inputs)) = args.split_first() else {
        eprintln!("usage: pack OUT.pgeo IN.geojson [IN2.geojson …]");
        return ExitCode::from(2);
    };
    let mut builder = RegionIndex::builder();
    for input in inputs {
        builder = match builder.add_path(input) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    }
    let bytes = builder.to_compact();
    if let Err(e) = std::fs::write(out, &bytes) {
        eprintln!("cannot write {out}: {e}");
        return ExitCode::FAILURE;
    }
    println!("{out}: {} regions, {} bytes", builder.len(), bytes.len());
    ExitCode::SUCCESS
}
