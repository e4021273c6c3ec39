//! Files for a test process that drops privileges (the capture test's sidecars run as uid 1337):
//! that user may not be able to enter the directory the repository was cloned into (a home
//! directory, `mktemp -d`: mode 0700), so it gets copies in a directory every user can reach.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A scratch directory that every user can reach and write, for an unprivileged process's
/// config, keys, cache and copies of the binary and plugins it runs.
pub fn shared_scratch_dir() -> PathBuf {
    let dir = super::proxy::scratch_dir();
    let dir = if reachable_by_everyone(&dir) {
        dir
    } else {
        // TMPDIR itself is private: /tmp is world-writable and sticky on every Linux.
        let fallback = Path::new("/tmp").join(dir.file_name().expect("scratch dir has a name"));
        std::fs::create_dir_all(&fallback).expect("create scratch dir under /tmp");
        fallback
    };
    set_mode(&dir, 0o777);
    assert!(
        reachable_by_everyone(&dir),
        "{} is not reachable by other users",
        dir.display()
    );
    dir
}

/// Copies `file` to `copy` (readable, and executable when the original is, by everyone; its
/// directory made as needed) and returns the copy's path.
pub fn share(file: &Path, copy: &Path) -> PathBuf {
    let copy = copy.to_path_buf();
    if let Some(parent) = copy.parent() {
        std::fs::create_dir_all(parent).expect("create the copy's directory");
        set_mode(parent, 0o755);
    }
    std::fs::copy(file, &copy)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", file.display(), copy.display()));
    let executable = mode(file) & 0o111 != 0;
    set_mode(&copy, if executable { 0o755 } else { 0o644 });
    copy
}

/// Whether a user who is neither owner nor in the group can reach `path`: search permission on
/// every directory above it, and read permission on it.
pub fn reachable_by_everyone(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let readable = mode(&path) & 0o004 != 0;
    readable && path.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode())
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {} {mode:o}: {e}", path.display()));
}
