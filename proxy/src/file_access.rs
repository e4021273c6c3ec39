//! Why a file could not be read, worded for an operator: a permission error names the user the
//! proxy runs as, since that (a sidecar's own uid, a private home directory) is usually the cause.

use std::io;
use std::os::unix::fs::MetadataExt;

/// `error` as text, with the proxy's uid and gid added when the cause is permissions.
pub fn describe(error: &io::Error) -> String {
    match (error.kind(), process_owner()) {
        (io::ErrorKind::PermissionDenied, Some((uid, gid))) => format!(
            "{error} (the proxy runs as uid {uid}, gid {gid}; that user needs read access to the \
             file and search access to every directory above it)"
        ),
        _ => error.to_string(),
    }
}

/// The effective uid and gid of this process: Linux gives `/proc/self` to them.
fn process_owner() -> Option<(u32, u32)> {
    let own = std::fs::metadata("/proc/self").ok()?;
    Some((own.uid(), own.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permission_error_names_the_user() {
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let (uid, _) = process_owner().expect("Linux has /proc/self");
        assert!(
            describe(&denied).contains(&format!("runs as uid {uid}")),
            "{}",
            describe(&denied)
        );
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(!describe(&missing).contains("uid"));
    }
}
