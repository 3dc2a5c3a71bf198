//! The floodgate wire API, generated at build time from the `.proto` files in this crate
//! (`floodgate/v1/*.proto`, import paths relative to `proto/`).
//!
//! Layout:
//! - [`v1`]: package `floodgate.v1` — messages, `*_client` and `*_server` modules.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
#![allow(missing_docs)]

/// Package `floodgate.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, unreachable_pub)]
    tonic::include_proto!("floodgate.v1");
}

/// Encoded `FileDescriptorSet` of every floodgate proto, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/floodgate_descriptor.bin"));

pub use prost_types;
