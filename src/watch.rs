//! `--watch`: reload when the config file's content changes, for platforms that
//! update files in place of sending signals (a Kubernetes ConfigMap volume swaps a
//! symlink; editors write a new file and rename it).
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
    let seen = std::fs::read(&path).ok().map(|bytes| crate::balance::hash_key(&bytes));
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
        let now = fingerprint(&path).await;
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

async fn fingerprint(path: &std::path::Path) -> Option<u64> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Some(crate::balance::hash_key(&bytes)),
        Err(err) => {
            tracing::debug!(path = %path.display(), error = %err, "config file unreadable for now");
            None
        }
    }
}
