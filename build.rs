//! Compiles `proto/tidemark/v1/*.proto` with a pure-Rust protobuf compiler (protox),
//! so `cargo build` needs no system `protoc`.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos: Vec<PathBuf> = fs::read_dir("proto/tidemark/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let mut protos: Vec<PathBuf> = protos
        .into_iter()
        .filter(|p| p.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();

    let fds = protox::compile(&protos, ["proto"])?;
    let descriptor = prost::Message::encode_to_vec(&fds);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("tidemark_descriptor.bin"), &descriptor)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Well-known types from pbjson-types carry the proto3 JSON mapping too.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    // Standard proto3 JSON mapping (serde) for every tidemark.v1 message.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor)?
        .out_dir(&out_dir)
        .build(&[".tidemark.v1"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
