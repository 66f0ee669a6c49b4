//! Helpers shared by the `extern "C"` modules: the panic boundary, handle conversions,
//! argument checks.

#[macro_use]
pub(crate) mod boundary;
pub(crate) mod handle;
