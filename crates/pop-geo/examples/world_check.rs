//! Loads the shipped world index, reports load time, and checks the world gazetteer:
//! `cargo run --release -p pop-geo --example world_check [-- --misses]` (`--misses` prints
//! the `world-gazetteer-exceptions.csv` rows for the places the data does not confirm).

use dag_core::{CityId, Position};
use std::time::Instant;

fn main() {
    let t = Instant::now();
    let world = pop_geo::shipped::world().expect("world loads");
    let load = t.elapsed();
    let places = pop_geo::shipped::world_gazetteer().expect("gazetteer parses");
    let print = std::env::args().any(|a| a == "--misses");
    let mut misses = 0;
    for p in &places {
        let claimed = CityId::new(p.region_id.as_str()).expect("valid id");
        let pos = Position::from_degrees(p.lat, p.lon).expect("valid position");
        if world.check(&claimed, pos).is_err() {
            misses += 1;
            if print {
                let found = world
                    .lookup(p.lat, p.lon)
                    .map_or("none".to_string(), |r| r.id().to_string());
                println!("{},{},{}", p.region_id, p.geonameid, found);
            }
        }
    }
    eprintln!(
        "{} regions, {} polygons, loaded in {:.0} ms; gazetteer {} places, {} not confirmed",
        world.len(),
        world.polygon_count(),
        load.as_secs_f64() * 1e3,
        places.len(),
        misses
    );
}
