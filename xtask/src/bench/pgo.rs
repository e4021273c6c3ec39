//! `cargo xtask bench --pgo`: writes `proxy/pgo.profdata`, the profile that guides the release
//! build's optimizer (profile-guided optimization; `.cargo/pgo-rustc` passes it to rustc).
//!
//! Why: without a profile the compiler guesses which branches are taken and what is worth
//! inlining, and lays cold code between hot code; the proxy's request path then fetched ~1,400
//! lines of code into the instruction cache a request against nginx's ~800 (callgrind's cache
//! simulation), and ran its instructions at a lower rate than nginx. With the profile, user CPU
//! a request fell ~16% without plugins and with the program (docs/performance.md, twenty-third pass).
//!
//! How: the proxy is built instrumented (in `target/pgo-generate`, so the release build stays),
//! each of the load benchmark's Switchyard rows is started, served and stopped with it, and
//! LLVM's `llvm-profdata` — of the major version the toolchain's LLVM has — merges the counts.
//! Only functions that ran are kept (`--sparse`). A function changed since is compiled without
//! its counts, so a stale profile only loses some of its effect; run this again after large
//! changes to the request path. Cargo does not see the profile's contents, so the release
//! build is cleaned afterwards and builds again with the new one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Stage, training};

/// Programs the training drives, by Debian package (llvm-profdata is added by version).
const PACKAGES: &[(&str, &str)] = &[("/usr/sbin/nginx", "nginx"), ("/usr/bin/wrk", "wrk")];

/// How long a row has to write its counts after SIGTERM.
const STOP: Duration = Duration::from_secs(30);

pub fn run() -> Result<()> {
    let major = rustc_llvm_major()?;
    // Where Debian's `llvm-N` installs it.
    let profdata = format!("/usr/bin/llvm-profdata-{major}");
    let package = format!("llvm-{major}");
    let mut packages = PACKAGES.to_vec();
    packages.push((profdata.as_str(), package.as_str()));
    crate::install_packages(&packages);
    super::require(&packages)?;

    let root = crate::root();
    let counts = root.join("target/pgo-counts");
    let _ = std::fs::remove_dir_all(&counts);
    std::fs::create_dir_all(&counts)?;
    let target_dir = root.join("target/pgo-generate");
    crate::run(
        crate::cargo()
            .env("SWITCHYARD_PGO", format!("generate:{}", counts.display()))
            .args([
                "build",
                "--release",
                "--package",
                "switchyard",
                "--target-dir",
            ])
            .arg(&target_dir),
    )?;

    crate::build_plugins()?;
    let mut stage = Stage::new(&root.join("target/bench/pgo"))?;
    stage.setup.switchyard = target_dir.join("release/switchyard");
    let file = counts.join("%p-%m.profraw");
    training::each_row(
        &stage,
        |_| {
            vec![
                "env".to_owned(),
                format!("LLVM_PROFILE_FILE={}", file.display()),
            ]
        },
        |proxy, running| {
            running.stop(STOP)?;
            println!("{}: counted", proxy.name);
            Ok(())
        },
    )?;
    drop(stage);

    let raw = raw_profiles(&counts)?;
    let out = root.join("proxy/pgo.profdata");
    crate::run(
        Command::new(&profdata)
            .args(["merge", "--sparse", "-o"])
            .arg(&out)
            .args(&raw),
    )?;
    println!(
        "{}: merged from {} runs; cleaning the release build, which builds again with it",
        out.display(),
        raw.len()
    );
    crate::run(crate::cargo().args(["clean", "--release"]))
}

/// The major version of the LLVM the toolchain's rustc is built with: the profile's format is
/// that LLVM's, so `llvm-profdata` must be of the same major version.
fn rustc_llvm_major() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .with_context(|| format!("cannot run {rustc} -vV"))?;
    llvm_major(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("{rustc} -vV names no LLVM version"))
}

/// The major version in rustc's `LLVM version: 22.1.2` line.
fn llvm_major(version_text: &str) -> Option<String> {
    let version = version_text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))?
        .trim();
    let major = version.split('.').next()?;
    (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())).then(|| major.to_owned())
}

/// The raw profiles the runs wrote.
fn raw_profiles(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "profraw") {
            raw.push(path);
        }
    }
    if raw.is_empty() {
        bail!(
            "the instrumented proxy wrote no counts to {}",
            dir.display()
        );
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_major_version_is_read_from_rustcs_llvm_line() {
        let text = "rustc 1.95.0 (59807616e 2026-04-14)\nhost: x86_64-unknown-linux-gnu\n\
                    release: 1.95.0\nLLVM version: 22.1.2\n";
        assert_eq!(llvm_major(text).as_deref(), Some("22"));
        assert_eq!(llvm_major("rustc 1.95.0\n"), None);
        assert_eq!(llvm_major("LLVM version: x.1\n"), None);
    }
}
