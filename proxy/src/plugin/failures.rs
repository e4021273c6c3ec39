//! What a plugin's failed hooks leave behind: one log line a second at most (with how many were
//! not logged since the last), the last failure for the admin API's `/plugins`, and trap
//! messages short enough to read — the panic message, or the trap and the plugin's own frames,
//! demangled, instead of a dozen lines of mangled Wasm backtrace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Hook;
use super::instance::HookError;

/// At most one failure line per plugin per this long.
const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Frames of the plugin's own code named in a trap message.
const FRAMES_SHOWN: usize = 3;

/// A plugin's most recent failure, as `/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastFailure {
    pub at_unix: u64,
    pub hook: &'static str,
    pub kind: &'static str,
    pub error: String,
}

/// One plugin's failure log.
#[derive(Debug, Default)]
pub struct Failures {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_logged: Option<Instant>,
    suppressed: u64,
    last: Option<LastFailure>,
}

impl Failures {
    /// Records a failed hook and logs it unless one was logged less than [`LOG_INTERVAL`] ago.
    pub fn record(&self, plugin: &str, hook: Hook, error: &HookError, request_id: Option<&str>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.last = Some(LastFailure {
            at_unix: crate::unix_time::now(),
            hook: hook.name(),
            kind: error.kind(),
            error: error.to_string(),
        });
        let now = Instant::now();
        if state
            .last_logged
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            state.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.suppressed);
        state.last_logged = Some(now);
        drop(state);
        let hook = hook.name();
        if suppressed > 0 {
            tracing::warn!(plugin, hook, %error, request_id, suppressed, "plugin failed ({suppressed} more failures since the last one logged)");
        } else {
            tracing::warn!(plugin, hook, %error, request_id, "plugin failed");
        }
    }

    pub fn last(&self) -> Option<LastFailure> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .clone()
    }
}

/// Why a call into a plugin failed, from what its store noticed: the CPU limit, the memory
/// cap, or else a trap (with the panic message the plugin reported, if any).
pub fn hook_error(
    timed_out: bool,
    out_of_memory: bool,
    error: &wasmtime::Error,
    panic: Option<String>,
) -> HookError {
    if timed_out {
        HookError::Timeout
    } else if out_of_memory {
        HookError::OutOfMemory
    } else {
        HookError::Trap(describe_trap(error, panic))
    }
}

/// A trap in a few words: the plugin's panic message when the SDK sent one, else the trap
/// itself; then the innermost frames of the plugin's own code, demangled (none when the plugin
/// is stripped, as release plugins are).
pub fn describe_trap(error: &wasmtime::Error, panic: Option<String>) -> String {
    let what = match (panic, error.downcast_ref::<wasmtime::Trap>()) {
        (Some(panic), _) => panic,
        (None, Some(trap)) => trap.to_string(),
        (None, None) => error.root_cause().to_string(),
    };
    let frames: Vec<String> = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|backtrace| {
            backtrace
                .frames()
                .iter()
                .filter_map(|frame| frame.func_name())
                .map(|name| format!("{:#}", rustc_demangle::demangle(name)))
                .filter(|name| !is_runtime_frame(name))
                .take(FRAMES_SHOWN)
                .collect()
        })
        .unwrap_or_default();
    if frames.is_empty() {
        what
    } else {
        format!("{what} (in {})", frames.join(" < "))
    }
}

/// Frames of the standard library, the panic machinery and the SDK's glue: never where the
/// plugin's bug is.
fn is_runtime_frame(name: &str) -> bool {
    const RUNTIME: [&str; 9] = [
        "core::",
        "std::",
        "alloc::",
        "__rust",
        "rust_panic",
        "rust_begin_unwind",
        "switchyard_sdk::",
        "<switchyard_sdk::",
        "wit_bindgen",
    ];
    // The SDK's glue is generic over the plugin, so its frames carry the plugin's crate name:
    // `<my_filter::_::Glue as switchyard_sdk::__private::bindings::Guest>::on_request`.
    RUNTIME.iter().any(|prefix| name.starts_with(prefix))
        || name.contains("{{closure}}")
        || name.contains("switchyard_sdk::__private")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_once_a_second_and_the_last_is_kept() {
        let failures = Failures::default();
        for _ in 0..5 {
            failures.record("p", Hook::Request, &HookError::Timeout, None);
        }
        let state = failures.state.lock().unwrap();
        assert_eq!(state.suppressed, 4, "the first is logged, the rest counted");
        let last = state.last.clone().unwrap();
        assert_eq!((last.hook, last.kind), ("on_request", "timeout"));
    }

    #[test]
    fn runtime_frames_are_skipped() {
        assert!(is_runtime_frame("core::panicking::panic_fmt"));
        assert!(is_runtime_frame("switchyard_sdk::__private::on_request"));
        assert!(is_runtime_frame(
            "<my_filter::_::Glue as switchyard_sdk::__private::bindings::Guest>::on_request"
        ));
        assert!(!is_runtime_frame(
            "<my_filter::Filter as switchyard_sdk::Plugin>::on_request"
        ));
        assert!(!is_runtime_frame("my_filter::MyFilter::on_request"));
        let mangled = "_ZN9my_filter10on_request17h0123456789abcdefE";
        assert_eq!(
            format!("{:#}", rustc_demangle::demangle(mangled)),
            "my_filter::on_request"
        );
    }
}
