//! The floodgate wire API, generated at build time from the `.proto` files in this crate
//! (`floodgate/v1/*.proto`, import paths relative to `proto/`).
//!
//! Layout:
//! - [`v1`]: package `floodgate.v1` — messages, `*_client` and `*_server` modules.
//! - [`envoy`]: the vendored Envoy rate limit service subset (`envoy.service.ratelimit.v3`
//!   and the messages it uses), upstream package names and field numbers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
#![allow(missing_docs)]

/// Package `floodgate.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, unreachable_pub)]
    tonic::include_proto!("floodgate.v1");
}

/// The Envoy RLS v3 subset under its upstream packages (`proto/envoy/README.md`).
pub mod envoy {
    #![allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)]
    /// `envoy.service.*`.
    pub mod service {
        /// `envoy.service.ratelimit.*`.
        pub mod ratelimit {
            /// Package `envoy.service.ratelimit.v3`: `RateLimitService/ShouldRateLimit`.
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
    /// `envoy.extensions.*`.
    pub mod extensions {
        /// `envoy.extensions.common.*`.
        pub mod common {
            /// `envoy.extensions.common.ratelimit.*`.
            pub mod ratelimit {
                /// Package `envoy.extensions.common.ratelimit.v3`: `RateLimitDescriptor`.
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    /// `envoy.config.*`.
    pub mod config {
        /// `envoy.config.core.*`.
        pub mod core {
            /// Package `envoy.config.core.v3`: `HeaderValue`.
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    /// `envoy.type.*`.
    pub mod r#type {
        /// Package `envoy.type.v3`: `RateLimitUnit`.
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

/// Encoded `FileDescriptorSet` of every floodgate proto, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/floodgate_descriptor.bin"));

pub use prost_types;
