//! Any bytes as a config file: the loader must answer with a config or errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchyard::config::load_str(std::path::Path::new("fuzz.toml"), text);
    }
});
