//! Reloading when files change: the config file and every file it names (plugins, certificates,
//! keys, CAs — so certificate rotation is a reload that only new handshakes see). Directories
//! are watched rather than files, so editors' write-and-rename and Kubernetes ConfigMap updates
//! (a new timestamped directory, then the `..data` symlink flipped) are seen; events are
//! debounced, and a reload happens only when the content really changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::reload::Reloader;

/// Events closer together than this are one change (an editor's save is several events).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching; runs for the life of the process.
pub fn spawn(reloader: Arc<Reloader>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    });
    match watcher {
        Ok(watcher) => {
            tokio::spawn(run(reloader, watcher, rx));
        }
        Err(e) => warn!(error = %e, "cannot watch files; reload with SIGHUP or the admin API"),
    }
}

async fn run(
    reloader: Arc<Reloader>,
    mut watcher: RecommendedWatcher,
    mut events: mpsc::UnboundedReceiver<()>,
) {
    let mut watched = BTreeSet::new();
    rewatch(&reloader, &mut watcher, &mut watched);
    let mut applied = reloader.applied();
    loop {
        tokio::select! {
            event = events.recv() => {
                if event.is_none() {
                    return;
                }
            }
            changed = applied.changed() => {
                // A reload by SIGHUP or the admin API may name files in new directories.
                if changed.is_err() {
                    return;
                }
                rewatch(&reloader, &mut watcher, &mut watched);
                continue;
            }
        }
        // Let the burst settle, then look at the result once.
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if reloader.inputs_changed() {
            debug!("a watched file changed: reloading");
            // The applied-version change that follows re-reads the directories to watch.
            let _ = reloader.reload("file").await;
        }
    }
}

/// Watches the directories of the config file and of every plugin of the current config.
fn rewatch(reloader: &Reloader, watcher: &mut RecommendedWatcher, watched: &mut BTreeSet<PathBuf>) {
    let config = reloader.current().config.clone();
    let mut wanted = BTreeSet::new();
    wanted.insert(parent(reloader.config_path()));
    for file in config.input_files() {
        wanted.insert(parent(&file));
    }
    for gone in watched.difference(&wanted) {
        let _ = watcher.unwatch(gone);
    }
    for dir in wanted.difference(watched) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), error = %e, "cannot watch directory for changes");
        }
    }
    *watched = wanted;
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
