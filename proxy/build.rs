//! Links the release binary with the code the proxy runs — at start-up and per request — placed
//! together, in the order `code-order.txt` lists it (written by `cargo xtask bench --code-order`).
//!
//! A process's resident memory counts every page of its binary it touched, and the kernel maps a
//! touched page's neighbours with it; in the compiler's order that code is spread over most of the
//! binary. Measured with the mission chain: 11.4 MiB of the binary resident without the order,
//! 7.2 MiB with it, RSS 21.1 -> 17.3 MiB (docs/performance.md, twelfth pass).
//!
//! Only for release builds for x86_64 Linux with Rust's own linker (rust-lld, the default there
//! when the toolchain ships it): the option is lld's (mold's too, not GNU ld's). A configured
//! linker, or `SWITCHYARD_NO_CODE_ORDER=1`, leaves the order to the compiler.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=code-order.txt");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_NO_CODE_ORDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if !wants_code_order() {
        return;
    }
    let order =
        Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("code-order.txt");
    if !order.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=switchyard=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Names the list has and this build does not (code changed since it was written) are
    // skipped without a warning each.
    println!("cargo:rustc-link-arg-bin=switchyard=-Wl,--no-warn-symbol-ordering");
}

fn wants_code_order() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let target = var("TARGET") == "x86_64-unknown-linux-gnu";
    let opted_out = !var("SWITCHYARD_NO_CODE_ORDER").is_empty();
    // A linker chosen in the config or the flags may not be lld.
    let linker_chosen = env::var_os("RUSTC_LINKER").is_some()
        || ["linker", "link-self-contained", "fuse-ld"]
            .iter()
            .any(|flag| var("CARGO_ENCODED_RUSTFLAGS").contains(flag));
    release && target && !opted_out && !linker_chosen && has_rust_lld()
}

/// Whether the toolchain ships rust-lld, which it links with by default on x86_64 Linux (a
/// toolchain built without it links with the system's `ld`, which has no such option).
fn has_rust_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(printed) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&printed.stdout).trim().to_owned();
    let host = env::var("HOST").unwrap_or_default();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld/ld.lld")
        .exists()
}
