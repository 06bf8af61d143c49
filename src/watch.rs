//! `--watch`: reload when the config file's content changes, or that of a file it
//! names (certificates, keys), for platforms that update files in place of sending
//! signals (a Kubernetes ConfigMap or Secret volume swaps a symlink; editors write
//! a new file and rename it; ACME clients replace certificates).
//!
//! The file is polled and its content hashed rather than watched through inotify:
//! polling follows symlink swaps and renames without special cases, costs one small
//! read per interval, and a content hash ignores touches that change nothing.

use std::path::PathBuf;
use std::time::Duration;

use crate::instance::Instance;

/// How often `--watch` looks at the file.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads `instance` from `path` whenever the file's content changes, until shutdown.
///
/// The content is read once *now* (not when the returned future first runs), so a
/// change made right after this call is not mistaken for the starting point.
pub fn watch(instance: Instance, path: PathBuf, every: Duration) -> impl std::future::Future<Output = ()> + Send {
    let seen = fingerprint_now(&path);
    poll(instance, path, every, seen)
}

async fn poll(instance: Instance, path: PathBuf, every: Duration, mut seen: Option<u64>) {
    let shutdown = instance.shared().shutdown.clone();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || fingerprint_now(&path)).await.ok().flatten()
        };
        if now == seen || now.is_none() {
            // Unreadable for a moment (mid-swap) is not a change; the next tick sees the result.
            continue;
        }
        seen = now;
        tracing::info!(path = %path.display(), "config file changed: reloading");
        match instance.reload().await {
            Ok(generation) => tracing::info!(generation, "reload applied"),
            Err(err) => tracing::error!(error = %err, "reload failed; still serving the previous config"),
        }
    }
}

/// A hash of the config file's content and of every file it names; `None` while
/// the config file cannot be read. A named file that cannot be read counts as
/// empty: it coming back is a change too.
fn fingerprint_now(path: &std::path::Path) -> Option<u64> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::debug!(path = %path.display(), error = %err, "config file unreadable for now");
            return None;
        }
    };
    let mut all = crate::balance::hash_key(&bytes).to_le_bytes().to_vec();
    if let Ok(config) = crate::config::Config::parse_unvalidated(&String::from_utf8_lossy(&bytes)) {
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for file in config.named_files() {
            let content = std::fs::read(base.join(file)).unwrap_or_default();
            all.extend_from_slice(&crate::balance::hash_key(&content).to_le_bytes());
        }
    }
    Some(crate::balance::hash_key(&all))
}
