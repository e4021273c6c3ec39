//! Every shipped config parses, and `switchyard validate` reports mistakes clearly.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::proxy::scratch_dir;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn toml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list config dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// `switchyard validate FILE`.
fn validate(file: &Path) -> Output {
    Command::new(BIN)
        .arg("validate")
        .arg(file)
        .output()
        .expect("run validate")
}

#[test]
fn every_file_in_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files = Vec::new();
    toml_files(&dir, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("demo.toml")),
        "config/demo.toml exists"
    );
    for file in files {
        if let Err(errors) = switchyard::config::load(&file) {
            panic!("{} does not validate:\n{errors}", file.display());
        }
    }
}

#[test]
fn validate_reports_every_mistake_with_file_line_and_key() {
    let file = scratch_dir().join("broken.toml");
    std::fs::write(
        &file,
        r#"[[listener]]
name = "public"
listen = "127.0.0.1:8080"
default_cluster = "missing"
colour = "blue"

[[cluster]]
name = "app"
endpoints = ["127.0.0.1:9001"]
connect_timeout = "soon"
"#,
    )
    .expect("write config");

    let out = validate(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert!(!out.status.success(), "validate accepted a broken file");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    let name = file.display().to_string();
    assert!(
        errors[0].contains(&format!("{name}:4:"))
            && errors[0].contains("listener[0].default_cluster")
            && errors[0].contains("\"missing\" is not defined"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains(&format!("{name}:5:"))
            && errors[1].contains("unknown key `colour`")
            && errors[1].contains("expected one of"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains(&format!("{name}:10:"))
            && errors[2].contains("cluster[0].connect_timeout")
            && errors[2].contains("is not a duration"),
        "{}",
        errors[2]
    );
}

#[test]
fn validate_loads_the_plugins_and_names_a_bad_plugin_config() {
    let file = scratch_dir().join("bad-plugin.toml");
    std::fs::write(
        &file,
        format!(
            "[runtime]\nplugin_cache = \"{}\"\n\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\ndefault_cluster = \"app\"\nplugins = [\"hello\"]\n\n[[cluster]]\nname = \"app\"\nendpoints = [\"127.0.0.1:9001\"]\n\n[[plugin]]\nname = \"hello\"\npath = \"{}\"\n[plugin.config]\ngreting = \"hi\"\n",
            crate::support::proxy::plugin_cache().display(),
            crate::support::proxy::plugin_path("hello").display()
        ),
    )
    .expect("write config");
    let out = validate(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad plugin config passed validate");
    // Named once, at the TOML line and key inside [plugin.config], not in the JSON it became.
    let at = format!("{}:18:", file.display());
    assert!(
        stderr.contains(&at)
            && stderr.contains("plugin[0].config")
            && stderr.contains("unknown field `greting`")
            && !stderr.contains("column 1"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("refused its config").count(), 1, "{stderr}");

    // A value of the wrong type, deep in the table, at its own line and column.
    let canary = "[[plugin]]\nname = \"canary\"\npath = \"{}\"\n[plugin.config]\n[[plugin.config.rules]]\nhosts = [\"*\"]\nbackends = [{ cluster = \"app\", weight = \"x\" }]\n";
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("plugins = [\"hello\"]", "plugins = [\"canary\"]");
    let text = format!(
        "{}{}",
        &text[..text.find("[[plugin]]").unwrap()],
        canary.replace(
            "{}",
            &crate::support::proxy::plugin_path("canary")
                .display()
                .to_string()
        )
    );
    std::fs::write(&file, text).expect("write config");
    let out = validate(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:20:41: plugin[0].config.rules[0].backends[0].weight: invalid type: string \"x\"",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn validate_accepts_the_demo_config() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.toml");
    let out = validate(&demo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_errors_cover_duplicates_and_bad_addresses() {
    let text = r#"
[admin]
listen = "127.0.0.1:7000"

[[listener]]
name = "a"
listen = "127.0.0.1:7000"

[[listener]]
name = "a"
listen = "localhost"

[[cluster]]
name = "c"
endpoints = ["no-port", { address = "127.0.0.1:1", weight = 0 }]
lb = "fastest"

[[cluster]]
name = "c"
endpoints = []
"#;
    let errors = switchyard::config::load_str(Path::new("dup.toml"), text)
        .expect_err("this config is wrong in many ways")
        .to_string();
    for expected in [
        "dup.toml:7:10: listener[0].listen: 127.0.0.1:7000 is already used by admin.listen",
        "dup.toml:10:8: listener[1].name: duplicate listener name \"a\"",
        "dup.toml:11:10: listener[1].listen: \"localhost\" is not an address to listen on",
        "cluster[0].endpoints[0]: \"no-port\" is not host:port",
        "cluster[0].endpoints[1].weight: 0 is out of range",
        "cluster[0].lb: unknown value \"fastest\", expected one of: round_robin, least_request, ewma, random, ring_hash",
        "cluster[1].name: duplicate cluster name \"c\"",
        "cluster[1].endpoints: a cluster needs at least one endpoint",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn the_history_resolution_is_whole_seconds_up_to_a_minute() {
    let config = |value: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nhistory_resolution = \"{value}\"\n\n[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\ndefault_cluster = \"c\"\n\n[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n"
        )
    };
    let good =
        switchyard::config::load_str(Path::new("h.toml"), &config("2s")).expect("2s is fine");
    assert_eq!(
        good.admin.history_resolution,
        std::time::Duration::from_secs(2)
    );
    for bad in ["500ms", "2m", "soon"] {
        let errors = switchyard::config::load_str(Path::new("h.toml"), &config(bad))
            .expect_err(bad)
            .to_string();
        assert!(
            errors.contains("h.toml:3:") && errors.contains("admin.history_resolution"),
            "{bad}: {errors}"
        );
    }
}
