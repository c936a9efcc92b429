//! Generates the gRPC code from `proto/citychain/v1/` with a vendored protoc, so no system
//! protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos: Vec<std::path::PathBuf> = [
        "citychain/v1/city.proto",
        "citychain/v1/shardstore.proto",
        "citychain/v1/consensus.proto",
        "citychain/v1/repair.proto",
        "citychain/v1/crosscity.proto",
    ]
    .iter()
    .map(|p| proto_dir.join(p))
    .collect();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out_dir.join("citychain_descriptor.bin"))
        .compile_with_config(config, &protos, &[proto_dir])?;
    Ok(())
}
