//! Criterion benchmarks of City Chain's hot paths live in `benches/benches/<area>.rs`
//! (run `cargo bench -p benches --bench <area>`); this library is intentionally empty.
