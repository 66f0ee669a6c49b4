//! cfutures: Python's `concurrent.futures` for C and C++.
//!
//! The C API lives in the `pub mod`s below (each `extern "C"` function is written out by
//! hand with the panic boundary inside its body); the engine lives in the private `rt`
//! module, which holds no raw pointers from C and no `extern "C"`.
#![deny(unsafe_op_in_unsafe_fn)]
#![allow(
    non_camel_case_types,
    reason = "the C API's type names are cf_snake_case"
)]
#![allow(
    clippy::missing_safety_doc,
    reason = "every exported function has the same safety contract, stated once in the header \
              preamble: each pointer is NULL or valid for its documented use"
)]

#[macro_use]
mod ffi;
mod rt;

pub mod binding;
pub mod executor;
pub mod future;
pub mod map;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod status;
pub mod task;
pub mod then;
pub mod version;
pub mod wait;
