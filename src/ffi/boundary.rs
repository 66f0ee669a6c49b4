//! The panic boundary: every exported function body runs inside `ffi_boundary!`, so that
//! no Rust panic ever unwinds into C. A caught panic becomes `CF_PANIC` for functions
//! returning `cf_status` and the documented default (false, 0, NULL, nothing) otherwise.

use crate::status::{CF_PANIC, cf_status};

/// The value an exported function returns when its body panicked.
pub(crate) trait PanicDefault {
    fn panic_default() -> Self;
}

impl PanicDefault for cf_status {
    fn panic_default() -> Self {
        CF_PANIC
    }
}
impl PanicDefault for bool {
    fn panic_default() -> Self {
        false
    }
}
impl PanicDefault for usize {
    fn panic_default() -> Self {
        0
    }
}
impl PanicDefault for () {
    fn panic_default() -> Self {}
}
impl<T> PanicDefault for *mut T {
    fn panic_default() -> Self {
        std::ptr::null_mut()
    }
}
impl<T> PanicDefault for *const T {
    fn panic_default() -> Self {
        std::ptr::null()
    }
}

/// Runs the body under `catch_unwind`; a panic returns `PanicDefault::panic_default()`.
/// `return` inside the body returns from the exported function as usual.
macro_rules! ffi_boundary {
    ($($body:tt)*) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || { $($body)* },
        )) {
            Ok(value) => value,
            Err(_) => $crate::ffi::boundary::PanicDefault::panic_default(),
        }
    }};
}

/// Returns `CF_INVALID_ARGUMENT` from the enclosing function when `$ptr` is NULL.
macro_rules! try_nonnull {
    ($ptr:expr) => {
        if $ptr.is_null() {
            return $crate::status::CF_INVALID_ARGUMENT;
        }
    };
}

/// Unwraps a `Result<T, cf_status>`, returning the status from the enclosing function.
macro_rules! try_status {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return status,
        }
    };
}
