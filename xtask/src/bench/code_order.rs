//! `cargo xtask bench --code-order`: writes `proxy/code-order.txt`, the functions the proxy runs
//! when it starts and serves the load benchmark's Switchyard rows, most executed first. The
//! release build links them together (proxy/build.rs).
//!
//! Why: a process's resident memory counts every page of its binary it has touched, and the
//! kernel maps a touched page's neighbours with it (64 KiB at a time). Linked in the compiler's
//! order, the ~1,900 functions start-up and requests run (2.5 MiB of code) are spread over most
//! of the 23 MiB of code, and ~11-13 MiB of the binary ended up resident — by the luck of the
//! layout, moving by 2 MiB with unrelated changes. Placed together, ~7 MiB is.
//!
//! The functions are counted by callgrind from the proxy's start (so start-up's code is in the
//! list), under a short load of each row. Names are the linker's (mangled); they survive most
//! code changes, and a name the linker does not find is skipped, so a stale list only loses
//! some of its effect. Run this again after large changes to the request path or start-up.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::instructions::{PACKAGES, callgrind_control, summary, under_callgrind};
use super::{Stage, training};

pub fn run() -> Result<()> {
    crate::install_packages(PACKAGES);
    super::require(PACKAGES)?;
    crate::run(crate::cargo().args(["build", "--release", "--package", "switchyard"]))?;

    crate::build_plugins()?;
    let dir = crate::root().join("target/bench/code-order");
    let stage = Stage::new(&dir)?;
    let mut cost: HashMap<String, u64> = HashMap::new();
    training::each_row(
        &stage,
        |proxy| {
            let out_file = dir.join(format!("{}.callgrind.%p", proxy.name));
            // The log level users run with (the benchmark's is `warn`): start-up's log lines
            // run the formatting code. Names as the linker knows them: not demangled.
            under_callgrind(&out_file, &["RUST_LOG=info"], &["--demangle=no"])
        },
        |proxy, running| {
            callgrind_control("-d", &running)?;
            let dump = dir.join(format!("{}.callgrind.{}.1", proxy.name, running.pid()));
            summary(&dump)?;
            let text = std::fs::read_to_string(&dump)?;
            for (name, instructions) in own_functions(&text, "switchyard") {
                *cost.entry(name).or_default() += instructions;
            }
            println!("{}: {} functions so far", proxy.name, cost.len());
            Ok(())
        },
    )?;

    let mut order: Vec<(String, u64)> = cost.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let path = crate::root().join("proxy/code-order.txt");
    write_order(&path, &order)?;
    println!("{}: {} functions", path.display(), order.len());
    Ok(())
}

/// The functions of the object whose file name is `object` in a callgrind dump (its names as
/// they are, so mangled with `--demangle=no`), each with its own instructions.
fn own_functions(dump: &str, object: &str) -> HashMap<String, u64> {
    // Callgrind names each object and function in full once, then by its number: `fn=(12) name`,
    // later `fn=(12)`. Cost lines follow a `fn=`; a cost line right after `calls=` is the
    // call's inclusive cost, not the function's own.
    let mut objects: HashMap<String, String> = HashMap::new();
    let mut functions: HashMap<String, String> = HashMap::new();
    let mut in_object = false;
    let mut current: Option<String> = None;
    let mut after_calls = false;
    let mut costs: HashMap<String, u64> = HashMap::new();
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("ob=") {
            let name = compressed_name(rest, &mut objects);
            in_object = Path::new(&name).file_name().is_some_and(|f| f == object);
        } else if let Some(rest) = line.strip_prefix("cob=") {
            compressed_name(rest, &mut objects);
        } else if let Some(rest) = line.strip_prefix("fn=") {
            let name = compressed_name(rest, &mut functions);
            // A recursive call's frames are named `name'2`, `name'3`...
            let name = match name.rsplit_once('\'') {
                Some((symbol, depth)) if depth.bytes().all(|b| b.is_ascii_digit()) => {
                    symbol.to_owned()
                }
                _ => name,
            };
            current = (in_object && is_symbol(&name)).then_some(name);
            if let Some(name) = &current {
                costs.entry(name.clone()).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            compressed_name(rest, &mut functions);
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut after_calls) {
                continue;
            }
            let instructions = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok());
            if let (Some(name), Some(instructions)) = (&current, instructions) {
                *costs.entry(name.clone()).or_default() += instructions;
            }
        }
    }
    costs
}

/// The name a `(N) name` or `(N)` field stands for, remembering names given in full.
fn compressed_name(field: &str, names: &mut HashMap<String, String>) -> String {
    let field = field.trim();
    let Some(rest) = field.strip_prefix('(') else {
        return field.to_owned();
    };
    let Some((id, name)) = rest.split_once(')') else {
        return field.to_owned();
    };
    let name = name.trim();
    if name.is_empty() {
        names.get(id).cloned().unwrap_or_default()
    } else {
        names.insert(id.to_owned(), name.to_owned());
        name.to_owned()
    }
}

/// A linker symbol, not an address callgrind found no name for, nor its `(below main)`.
fn is_symbol(name: &str) -> bool {
    !name.is_empty() && !name.starts_with("0x") && !name.starts_with('(')
}

fn write_order(path: &Path, order: &[(String, u64)]) -> Result<()> {
    let mut text = String::from(
        "# The functions the proxy runs at start-up and under the load benchmark, most executed\n\
         # first: the release build links them together (proxy/build.rs). Written by\n\
         # `cargo xtask bench --code-order`; lld skips lines starting with '#'.\n",
    );
    for (name, _) in order {
        text.push_str(name);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_functions_are_those_of_the_object_with_their_own_cost() {
        let dump = "\
ob=(1) /work/target/release/switchyard
fn=(1) _ZN3foo3bar17h0123456789abcdefE
10 100
cfn=(2) _ZN3foo3baz17h0123456789abcdefE
calls=1 0
10 5000
ob=(2) /usr/lib/x86_64-linux-gnu/libc.so.6
fn=(3) memcpy
10 700
ob=(1)
fn=(2)
10 40
fn=(4) 0x0000000000056d230
10 3
fn=(1)
10 1
fn=(5) _ZN3foo3bar17h0123456789abcdefE'2
10 2
";
        let costs = own_functions(dump, "switchyard");
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert_eq!(costs["_ZN3foo3bar17h0123456789abcdefE"], 103);
        assert_eq!(costs["_ZN3foo3baz17h0123456789abcdefE"], 40);
    }
}
