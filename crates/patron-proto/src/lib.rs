//! Generated code for Patron's gRPC API. Nothing here knows the domain: conversions live in the
//! service crates.
#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

/// The encoded `FileDescriptorSet` of every Patron proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/patron_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("patron.common.v1");
    }
}

pub mod customers {
    pub mod v1 {
        tonic::include_proto!("patron.customers.v1");
    }
}

pub mod scoring {
    pub mod v1 {
        tonic::include_proto!("patron.scoring.v1");
    }
}

pub mod segmentation {
    pub mod v1 {
        tonic::include_proto!("patron.segmentation.v1");
    }
}

pub mod loyalty {
    pub mod v1 {
        tonic::include_proto!("patron.loyalty.v1");
    }
}
