//! Reloading when files change: the config file and every file it names (plugins, certificates,
//! keys, CAs — so certificate rotation is a reload that only new handshakes see). Directories
//! are watched rather than files, so editors' write-and-rename and Kubernetes ConfigMap updates
//! (a new timestamped directory, then the `..data` symlink flipped) are seen; events are
//! debounced, and a reload happens only when the content really changed.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::operations::reload::Reloader;

/// Something rebuilt from files: the proxy's [`Reloader`], the control plane's mesh state.
pub trait Watched: Send + Sync + 'static {
    /// Every file the current state was built from (their directories are watched).
    fn watched_files(&self) -> Vec<PathBuf>;
    /// Whether any of those files now differs from what the state was built from.
    fn inputs_changed(&self) -> bool;
    /// Reads the files again and applies them (or logs why not and keeps the old state).
    fn reload_from_files(&self) -> impl Future<Output = ()> + Send;
    /// Changes whenever a new state is applied, whatever asked for it.
    fn applied(&self) -> watch::Receiver<u64>;
}

impl Watched for Reloader {
    fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.current().config.input_files();
        files.push(self.config_path().to_path_buf());
        files
    }

    fn inputs_changed(&self) -> bool {
        Reloader::inputs_changed(self)
    }

    async fn reload_from_files(&self) {
        let _ = self.reload("file").await;
    }

    fn applied(&self) -> watch::Receiver<u64> {
        Reloader::applied(self)
    }
}

/// Events closer together than this are one change (an editor's save is several events).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The watched files, shared with the watcher's thread so it can ignore events about other
/// files in the same directories.
type Relevant = Arc<RwLock<BTreeSet<PathBuf>>>;

/// Starts watching; runs for the life of the process. The directories are watched before this
/// returns, so a file changed the moment the server says it is ready is not missed.
pub fn spawn<W: Watched>(reloader: Arc<W>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let relevant: Relevant = Arc::default();
    let files = Arc::clone(&relevant);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if !may_change_content(&event.kind) {
            return;
        }
        let files = files.read().unwrap_or_else(PoisonError::into_inner);
        if event.paths.iter().any(|path| concerns(path, &files)) {
            let _ = tx.send(());
        }
    });
    match watcher {
        Ok(mut watcher) => {
            let mut watched = BTreeSet::new();
            rewatch(reloader.as_ref(), &mut watcher, &mut watched, &relevant);
            tokio::spawn(run(reloader, watcher, watched, rx, relevant));
        }
        Err(e) => warn!(error = %e, "cannot watch files; reload with SIGHUP or the admin API"),
    }
}

async fn run<W: Watched>(
    reloader: Arc<W>,
    mut watcher: RecommendedWatcher,
    mut watched: BTreeSet<PathBuf>,
    mut events: mpsc::UnboundedReceiver<()>,
    relevant: Relevant,
) {
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
                rewatch(reloader.as_ref(), &mut watcher, &mut watched, &relevant);
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
            reloader.reload_from_files().await;
        }
    }
}

/// Watches the directories of every file the current state was built from.
fn rewatch<W: Watched>(
    reloader: &W,
    watcher: &mut RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    relevant: &Relevant,
) {
    let files = reloader.watched_files();
    *relevant.write().unwrap_or_else(PoisonError::into_inner) = files.iter().cloned().collect();
    let wanted: BTreeSet<PathBuf> = files.iter().map(|f| parent(f)).collect();
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

/// Whether an event of this kind may change what a file holds. Opening, reading and closing a
/// file unwritten do not: counting them made the watcher a loop, since checking the files opens
/// them — once anything had read the config (`cat`, `switchyard validate`), the proxy re-read and
/// re-hashed every watched file every [`DEBOUNCE`] for the rest of its life.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether an event about `path` may change a watched file: the file itself (written in place,
/// or renamed over by an editor or `sed -i`), or an entry of Kubernetes' atomic writer (`..data`,
/// `..2026_01_01_...`), whose swap changes every file behind the `..data` symlink. Anything else
/// in the directories — a log file written next to the config on every request — is not looked
/// at, which would otherwise hash every watched file again after each write.
fn concerns(path: &Path, files: &BTreeSet<PathBuf>) -> bool {
    files.contains(path)
        || path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(".."))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_about_watched_files_or_kubernetes_swaps_count() {
        let files: BTreeSet<PathBuf> = ["/etc/sy/config.toml", "/etc/sy/plugins/auth.wasm"]
            .into_iter()
            .map(PathBuf::from)
            .collect();
        assert!(concerns(Path::new("/etc/sy/config.toml"), &files));
        assert!(concerns(Path::new("/etc/sy/plugins/auth.wasm"), &files));
        assert!(concerns(Path::new("/etc/sy/..data"), &files));
        assert!(concerns(
            Path::new("/etc/sy/..2026_12_04_23_00_00.123"),
            &files
        ));
        assert!(!concerns(Path::new("/etc/sy/access.log"), &files));
        assert!(!concerns(Path::new("/etc/sy/.config.toml.swp"), &files));
        assert!(!concerns(Path::new("/etc/sy/sedAbC123"), &files));
    }

    /// A real inotify watcher on a directory: a file read (as checking the inputs reads them)
    /// yields events, and none of them counts; the write that follows does.
    #[test]
    fn reading_a_watched_file_is_not_a_change_and_writing_it_is() {
        let dir = std::env::temp_dir().join(format!("sy-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, "a = 1").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let _ = tx.send(event.unwrap().kind);
            })
            .unwrap();
        watcher.watch(&dir, RecursiveMode::NonRecursive).unwrap();

        std::fs::read(&file).unwrap();
        std::fs::write(&file, "a = 2").unwrap();
        let mut kinds = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !kinds.iter().any(may_change_content) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            kinds.push(rx.recv_timeout(left).expect("no event for the write"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let first_counted = kinds.iter().position(may_change_content).unwrap();
        assert!(
            first_counted > 0,
            "the read produced no events, so this test shows nothing: {kinds:?}"
        );
        assert!(
            matches!(kinds[first_counted], EventKind::Modify(_)),
            "the first counted event is the write's: {kinds:?}"
        );
    }
}
