//! Compiles the `.proto` contracts with protox (a pure-Rust protobuf compiler: no
//! `protoc` needed) and generates the Rust messages with prost into `OUT_DIR`.

use std::error::Error;

const INCLUDE: &str = "proto";
const PROTOS: [&str; 2] = [
    "proto/renkei/event/v1/event.proto",
    "proto/renkei/adapter/v1/adapter.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={INCLUDE}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, [INCLUDE])?;
    prost_build::Config::new()
        // A canonical event is ~1 KiB inline; boxing it keeps the oneof (and every
        // IngestRequest without an event) small.
        .boxed(".renkei.adapter.v1.IngestRequest.normalized.event")
        .compile_fds(descriptors)?;
    Ok(())
}
