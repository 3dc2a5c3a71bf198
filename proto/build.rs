//! Compiles `floodgate/v1/*.proto` and the vendored Envoy RLS v3 subset (`envoy/...`) with
//! protox (pure Rust, no system `protoc`) and generates the prost messages and tonic services,
//! plus a descriptor set for gRPC reflection.
use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "floodgate/v1/common.proto",
    "floodgate/v1/rate_limiter.proto",
    "floodgate/v1/admin.proto",
    "floodgate/v1/circuit_breakers.proto",
    "floodgate/v1/dead_letters.proto",
    "envoy/type/v3/ratelimit_unit.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
    "envoy/service/ratelimit/v3/rls.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("floodgate_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
