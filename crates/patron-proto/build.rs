//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so no system `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "patron/common/v1/common.proto",
        "patron/customers/v1/customers.proto",
        "patron/scoring/v1/scoring.proto",
        "patron/segmentation/v1/segmentation.proto",
        "patron/loyalty/v1/loyalty.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("patron_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
