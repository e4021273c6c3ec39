//! The core entry: a plugin's hooks called on its core module directly, with the canonical
//! ABI's plain integers, instead of through the component model.
//!
//! A component call in wasmtime 48 costs a hook ~1.8k instructions to enter and leave (the
//! export's function reference found again, the resource-scope checks, lifting through type
//! information) and every host call ~0.55k more than the work it does; a core call costs a
//! small part of that. Every plugin built with the SDK is a component wrapping one core module
//! whose imports and exports are the `filter` world's functions lowered by the canonical ABI, so
//! the proxy can run that module itself, as long as it keeps the ABI's contract: the same
//! memory layouts, the plugin's `cabi_realloc` for what the host hands over, the post-return
//! call after each hook, and a trap for anything the component model would refuse (a pointer
//! out of bounds, text that is not UTF-8, an unknown variant).
//!
//! Taken only when it is sure to mean the same thing: the component's functions are lifted and
//! lowered with UTF-8 strings and nothing but memory, realloc and post-return options, its first
//! core module links against exactly these host functions, and exports the hooks with their
//! lowered types. Anything else runs as a component, as before: a component built by another
//! toolchain, and a plugin that imports `http.call` unless it says in `init` that it never calls
//! out with its config (`calls.never-call-out`). A hook that may call out runs on a fiber (a call
//! waits for the network), and on a fiber a host function can call back into the plugin's
//! allocator only on a fiber of its own, which cost more than the component model's lowering
//! (measured: the program's auth plugin +1.1k instructions a request); the core entry's
//! `http.call` therefore refuses (`invalid`), which only a plugin that promised not to call
//! ever sees.
//! `SWITCHYARD_PLUGIN_ENTRY=component` turns the core entry off, to compare the two.

mod guest;
mod head_imports;
mod hooks;
mod imports;

pub use guest::Guest;
pub use hooks::CoreHooks;

use wasmparser::{CanonicalFunction, CanonicalOption, KnownCustom, Parser, Payload};
use wasmtime::{Engine, InstancePre, Linker, Module};

use super::host::HostState;

/// The variable that turns the core entry off (`component`).
pub const ENTRY_VARIABLE: &str = "SWITCHYARD_PLUGIN_ENTRY";

/// Whether plugins may use the core entry (`SWITCHYARD_PLUGIN_ENTRY` is not `component`).
pub fn enabled() -> bool {
    std::env::var_os(ENTRY_VARIABLE).is_none_or(|v| v != "component")
}

/// The host functions for core modules.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    imports::define(&mut linker)?;
    Ok(linker)
}

/// The core module a component wraps, when the component is the plain shape the SDK builds:
/// its functions lifted and lowered with UTF-8 strings and only memory, realloc and post-return
/// options, its first core module the plugin's code. `None` for anything else.
pub fn main_module(component: &[u8]) -> Option<&[u8]> {
    let mut main = None;
    // Which nested sections the parser is inside (`true` for a component): wit-component wraps
    // exported interfaces' types in nested components, which may hold no code.
    let mut inside = Vec::new();
    for payload in Parser::new(0).parse_all(component) {
        match payload.ok()? {
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                if inside.contains(&true) {
                    return None;
                }
                main.get_or_insert(unchecked_range);
                inside.push(false);
            }
            Payload::ComponentSection { .. } => inside.push(true),
            Payload::End(_) => {
                inside.pop();
            }
            Payload::ComponentCanonicalSection(reader) => {
                for function in reader {
                    let options = match function.ok()? {
                        CanonicalFunction::Lift { options, .. }
                        | CanonicalFunction::Lower { options, .. } => options,
                        _ => return None,
                    };
                    let plain = options.iter().all(|option| {
                        matches!(
                            option,
                            CanonicalOption::UTF8
                                | CanonicalOption::Memory(_)
                                | CanonicalOption::Realloc(_)
                                | CanonicalOption::PostReturn(_)
                        )
                    });
                    if !plain {
                        return None;
                    }
                }
            }
            _ => {}
        }
    }
    component.get(main?)
}

/// Whether the module says it was built by `wit-bindgen`'s Rust generator (its `producers`
/// section), whose post-return functions free only the lists a result holds: a result without
/// any (a `continue`) then needs no post-return call.
pub fn built_by_wit_bindgen_rust(module: &[u8]) -> bool {
    Parser::new(0).parse_all(module).any(|payload| {
        let Ok(Payload::CustomSection(section)) = payload else {
            return false;
        };
        let KnownCustom::Producers(fields) = section.as_known() else {
            return false;
        };
        fields.into_iter().flatten().any(|field| {
            field.name == "processed-by"
                && field
                    .values
                    .into_iter()
                    .flatten()
                    .any(|value| value.name == "wit-bindgen-rust")
        })
    })
}

/// The module (`bytes` compiled) linked against the core host functions, ready to instantiate;
/// why it cannot use the core entry otherwise: an import outside this linker (`http.call` is one), or a hook export
/// missing or of another type.
pub fn prepare(
    module: &Module,
    bytes: &[u8],
    linker: &Linker<HostState>,
) -> Result<CorePre, String> {
    hooks::check_exports(module)?;
    Ok(CorePre {
        pre: linker
            .instantiate_pre(module)
            .map_err(|e| format!("{e:#}"))?,
        lean_post_return: built_by_wit_bindgen_rust(bytes),
        imports_http_call: module
            .imports()
            .any(|import| import.module().starts_with("switchyard:plugin/http@")),
    })
}

/// What a plugin's core instances are made from.
pub struct CorePre {
    pub pre: InstancePre<HostState>,
    /// Whether a result that holds no list needs no post-return call
    /// ([`built_by_wit_bindgen_rust`]).
    pub lean_post_return: bool,
    /// Whether the module imports `http.call`, which the core entry refuses: the plugin keeps
    /// the core entry only if it says in `init` that it never calls out.
    pub imports_http_call: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty core module with a `producers` section naming one tool under `processed-by`.
    fn module_processed_by(tool: &str) -> Vec<u8> {
        let mut section = Vec::new();
        let string = |out: &mut Vec<u8>, s: &str| {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        };
        string(&mut section, "producers");
        section.push(1); // one field
        string(&mut section, "processed-by");
        section.push(1); // one value
        string(&mut section, tool);
        string(&mut section, "0.60.0");
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.push(0); // a custom section
        module.push(section.len() as u8);
        module.extend_from_slice(&section);
        module
    }

    #[test]
    fn only_wit_bindgen_rust_modules_skip_empty_post_returns() {
        assert!(built_by_wit_bindgen_rust(&module_processed_by(
            "wit-bindgen-rust"
        )));
        assert!(!built_by_wit_bindgen_rust(&module_processed_by(
            "wit-bindgen-c"
        )));
        assert!(!built_by_wit_bindgen_rust(b"\0asm\x01\0\0\0"));
    }

    #[test]
    fn a_core_module_is_no_component_to_take_apart() {
        assert_eq!(main_module(b"\0asm\x01\0\0\0"), None);
        assert_eq!(main_module(b"not wasm at all"), None);
    }
}
