//! The library's version.

use std::ffi::c_char;

/// The library's version, `"MAJOR.MINOR.PATCH"`: a static string, never NULL, not to be
/// freed. Compare it with the header's `CF_VERSION` to check that the program runs
/// against the library it was compiled for:
/// `assert(strcmp(cf_version(), CF_VERSION) == 0)`.
#[unsafe(no_mangle)]
pub extern "C" fn cf_version() -> *const c_char {
    ffi_boundary! { concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast() }
}
