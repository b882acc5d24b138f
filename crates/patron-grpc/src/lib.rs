//! Shared gRPC plumbing for every Patron service: the one mapping from domain and storage errors
//! to wire statuses, opaque page tokens, paging limits, protobuf time conversions and the
//! per-request deadline layer.

pub mod admission;
pub mod auth;
pub mod deadline;
pub mod error;
pub mod methods;
pub mod observe;
pub mod paging;
pub mod time;
pub mod trace;
pub mod wire;

pub use error::{
    ApiError, ApiResult, ERROR_DOMAIN, Reason, Respond, check_resource_id, error_details,
    parse_customer_id,
};
pub use paging::{PageToken, page_size};
