//! Build script: gives the shared library its SONAME and generates the C header.
//!
//! The header is always generated into `$OUT_DIR/cfutures.h`. It is also written to:
//! - `include/cfutures.h` when `CFUTURES_UPDATE_HEADER=1` (how the committed copy is
//!   refreshed after an API change);
//! - the path in `CFUTURES_HEADER_OUT`, when set (CMake uses this so that CTest can
//!   compare the committed header against what the sources generate).

use std::{env, fs, path::PathBuf};

fn main() {
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    let minor = env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    let patch = env::var("CARGO_PKG_VERSION_PATCH").unwrap();

    // A cdylib gets no SONAME by default; give it one with the major version, so that
    // programs linked against libcfutures.so.0 keep working across compatible updates.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcfutures.so.{major}");
    }

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=cbindgen_mpi.toml");
    println!("cargo:rerun-if-env-changed=CFUTURES_MPI_HEADER_OUT");
    println!("cargo:rerun-if-env-changed=CFUTURES_UPDATE_HEADER");
    println!("cargo:rerun-if-env-changed=CFUTURES_HEADER_OUT");

    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable");
    config.after_includes = Some(version_macros(&major, &minor, &patch));

    let bindings = match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            // A parse error is a source error: report it, do not hide it.
            panic!("cbindgen could not generate the header: {e}");
        }
    };

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("cfutures.h");
    bindings.write_to_file(&out);
    if env::var("CFUTURES_UPDATE_HEADER").as_deref() == Ok("1") {
        bindings.write_to_file(crate_dir.join("include").join("cfutures.h"));
    }
    if let Ok(path) = env::var("CFUTURES_HEADER_OUT") {
        if !path.is_empty() {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).ok();
            }
            bindings.write_to_file(path);
        }
    }
    mpi_header(&crate_dir);
}

/// `include/cfutures_mpi.h` from `src/mpi.rs` alone (with or without the `mpi` feature:
/// parsing needs no MPI), written as `cfutures.h` is: to `$OUT_DIR`, to `include/` with
/// `CFUTURES_UPDATE_HEADER=1`, and to `CFUTURES_MPI_HEADER_OUT` when set.
fn mpi_header(crate_dir: &std::path::Path) {
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen_mpi.toml"))
        .expect("cbindgen_mpi.toml is readable");
    let bindings = cbindgen::Builder::new()
        .with_src(crate_dir.join("src").join("mpi.rs"))
        .with_config(config)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate cfutures_mpi.h: {e}"));
    bindings.write_to_file(PathBuf::from(env::var("OUT_DIR").unwrap()).join("cfutures_mpi.h"));
    if env::var("CFUTURES_UPDATE_HEADER").as_deref() == Ok("1") {
        bindings.write_to_file(crate_dir.join("include").join("cfutures_mpi.h"));
    }
    if let Ok(path) = env::var("CFUTURES_MPI_HEADER_OUT") {
        if !path.is_empty() {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).ok();
            }
            bindings.write_to_file(path);
        }
    }
}

fn version_macros(major: &str, minor: &str, patch: &str) -> String {
    format!(
        r#"
/** Major version of the header (the library's is `cf_version()`). */
#define CF_VERSION_MAJOR {major}
/** Minor version of the header. */
#define CF_VERSION_MINOR {minor}
/** Patch version of the header. */
#define CF_VERSION_PATCH {patch}
/** The header's version as a string, "MAJOR.MINOR.PATCH".
 *  Check that header and library match with
 *  `assert(strcmp(cf_version(), CF_VERSION) == 0)`. */
#define CF_VERSION "{major}.{minor}.{patch}"
/** The header's version as one number, MAJOR * 10000 + MINOR * 100 + PATCH. */
#define CF_VERSION_NUMBER ({major} * 10000 + {minor} * 100 + {patch})
/** True when the header's version is at least MAJOR.MINOR.PATCH. */
#define CF_VERSION_CHECK(major, minor, patch) \
    (CF_VERSION_NUMBER >= ((major) * 10000 + (minor) * 100 + (patch)))

/** An initialiser for `cf_task`: no function yet, no argument, nothing to free, no time
 *  limit. Set `fn` (required) and what else the task needs:
 *  `cf_task t = CF_TASK_INIT; t.fn = work; t.arg = p; t.arg_free = free;` */
#define CF_TASK_INIT {{NULL, NULL, NULL, NULL, CF_FOREVER}}

"#
    )
}
