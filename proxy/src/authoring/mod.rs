//! `switchyard plugin new` and `switchyard plugin build`: from nothing to a plugin the proxy
//! runs, with the workspace's build profile, a config that refuses typos, a native test and an
//! example proxy config whose admin token `ctl swap` needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Subcommand;

/// The target plugins are built for.
const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// The cargo profile `plugin new` writes and `plugin build` uses.
const PROFILE: &str = "plugin";

const CARGO_TOML: &str = include_str!("template/Cargo.toml.txt");
const LIB_RS: &str = include_str!("template/lib.rs.txt");
const PROXY_TOML: &str = include_str!("template/switchyard.toml.txt");
const GITIGNORE: &str = include_str!("template/gitignore.txt");

/// `switchyard plugin ...`
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Make a plugin crate: the SDK, the plugin build profile, a config that refuses unknown
    /// keys, a native test, and switchyard.toml to run it in a proxy.
    New {
        /// The plugin's (and the crate's) name, e.g. `team-gate`.
        name: String,
        /// Where to make it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The switchyard-sdk crate to depend on, as a path (default: the SDK of the checkout
        /// this binary was built from, if it is still there; else the published version).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate to Wasm with its `plugin` profile and print the .wasm's path.
    Build {
        /// The crate's directory (default: the current one).
        dir: Option<PathBuf>,
    },
}

impl PluginCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Self::New { name, dir, sdk } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
                new(&name, &dir, sdk.as_deref())?;
                println!("made plugin {name} in {}", dir.display());
                println!(
                    "next: cd {} && cargo test && switchyard plugin build",
                    dir.display()
                );
                Ok(())
            }
            Self::Build { dir } => {
                let wasm = build(dir.as_deref().unwrap_or(Path::new(".")))?;
                println!("{}", wasm.display());
                Ok(())
            }
        }
    }
}

/// Writes a new plugin crate named `name` into `dir`.
pub fn new(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<()> {
    check_name(name)?;
    if dir
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = sdk_dependency(sdk)?;
    let wasm = format!(
        "target/{WASM_TARGET}/{PROFILE}/{}.wasm",
        name.replace('-', "_")
    );
    let token = admin_token();
    let fill = |template: &str| {
        template
            .replace("{name}", name)
            .replace("{sdk}", &sdk)
            .replace("{wasm}", &wasm)
            .replace("{token}", &token)
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, text) in [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("switchyard.toml", fill(PROXY_TOML)),
        (".gitignore", GITIGNORE.to_owned()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Builds the crate in `dir` for Wasm with the `plugin` profile; returns the .wasm it made.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} has no Cargo.toml: not a plugin crate", dir.display());
    }
    ensure_wasm_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--profile", PROFILE, "--target", WASM_TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("the build failed (cargo's messages are above)");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    built_wasm(&stdout).with_context(|| {
        format!(
            "cargo built no .wasm: is `crate-type = [\"cdylib\", ...]` in {}?",
            manifest.display()
        )
    })
}

/// The last `.wasm` cargo reports building (the crate's own artifact comes last).
fn built_wasm(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
        })
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
}

/// A crate name cargo and the proxy's config both accept.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !starts_well || !rest_ok {
        bail!(
            "{name:?}: a plugin name starts with a lowercase letter and has only lowercase letters, digits, '-' and '_'"
        );
    }
    Ok(())
}

/// The `switchyard-sdk = ...` line: a path given, the checkout this binary was built from, or
/// the published crate.
fn sdk_dependency(sdk: Option<&Path>) -> anyhow::Result<String> {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    let path = match sdk {
        Some(path) if !path.join("Cargo.toml").exists() => {
            bail!(
                "{} is not the switchyard-sdk crate (no Cargo.toml)",
                path.display()
            )
        }
        Some(path) => Some(path.to_path_buf()),
        None => checkout.join("Cargo.toml").exists().then_some(checkout),
    };
    Ok(match path {
        Some(path) => {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            // TOML basic strings take the path as it is, backslashes escaped.
            let path = path.display().to_string().replace('\\', "\\\\");
            format!("switchyard-sdk = {{ path = \"{path}\" }}")
        }
        None => format!("switchyard-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
    })
}

/// A token for the example config's admin API: random, so no two plugins' examples share one.
fn admin_token() -> String {
    (0..24)
        .map(|_| fastrand::alphanumeric())
        .collect::<String>()
}

/// Installs the Wasm target with rustup when it is missing (when there is no rustup, the
/// toolchain is assumed to have it).
fn ensure_wasm_target() -> anyhow::Result<()> {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    let listed = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET);
    if listed {
        return Ok(());
    }
    eprintln!("installing the {WASM_TARGET} target (rustup target add {WASM_TARGET})");
    let added = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .context("cannot run rustup")?;
    if !added.success() {
        bail!("rustup could not add the {WASM_TARGET} target");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cargo_and_the_config_accept() {
        assert!(check_name("team-gate").is_ok());
        assert!(check_name("a_b2").is_ok());
        for bad in ["", "Team", "9lives", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_crates_own_wasm_is_found_in_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","filenames":["/t/libserde.rlib"]}
not json
{"reason":"compiler-artifact","filenames":["/t/wasm32-unknown-unknown/plugin/team_gate.wasm","/t/libteam_gate.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            built_wasm(messages),
            Some(PathBuf::from(
                "/t/wasm32-unknown-unknown/plugin/team_gate.wasm"
            ))
        );
        assert_eq!(built_wasm("{}"), None);
    }

    #[test]
    fn a_new_crate_has_everything_filled_in_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("switchyard-new-{}", fastrand::u64(..)));
        new("team-gate", &dir, None).unwrap();
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let config = std::fs::read_to_string(dir.join("switchyard.toml")).unwrap();
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        for text in [&cargo, &config, &lib] {
            assert!(
                !text.contains("{name}") && !text.contains("{token}"),
                "{text}"
            );
        }
        assert!(cargo.contains("name = \"team-gate\"") && cargo.contains("[profile.plugin]"));
        assert!(cargo.contains("switchyard-sdk = { path = "), "{cargo}");
        assert!(lib.contains("deny_unknown_fields"));
        assert!(config.contains("target/wasm32-unknown-unknown/plugin/team_gate.wasm"));
        let parsed: toml::Table = config.parse().unwrap();
        assert_eq!(parsed["admin"]["token"].as_str().map(str::len), Some(24));
        assert!(new("team-gate", &dir, None).is_err(), "overwrote a crate");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
