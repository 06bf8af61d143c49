//! What the admin API may ask of the instance: re-apply the running config (after
//! an override changed a server's weight or state), reload the file, or check a
//! config. The admin listener holds only this handle; the instance runs the
//! operations one at a time in a task of its own (see `Instance::serve_control`).

use tokio::sync::{mpsc, oneshot};

/// An operation and where its outcome goes.
#[derive(Debug)]
pub enum Op {
    /// Compile the running config again (overrides applied) and swap it in.
    Reapply(oneshot::Sender<Result<u64, String>>),
    /// Re-read the config file, as SIGHUP does.
    Reload(oneshot::Sender<Result<u64, Vec<String>>>),
    /// Validate a config text (relative paths against the running config's
    /// directory); nothing is applied. Its errors, "path: message".
    Check(String, oneshot::Sender<Vec<String>>),
}

/// The admin listener's handle on the instance.
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::Sender<Op>,
}

/// The instance's end: operations to run.
pub type Requests = mpsc::Receiver<Op>;

impl Control {
    /// A handle and the instance's end of it.
    pub fn new() -> (Control, Requests) {
        let (tx, rx) = mpsc::channel(16);
        (Control { tx }, rx)
    }

    /// Compiles the running config again; the new generation.
    pub async fn reapply(&self) -> Result<u64, String> {
        let (done, outcome) = oneshot::channel();
        self.send(Op::Reapply(done)).await?;
        outcome.await.map_err(|_| gone())?
    }

    /// Reloads the file; the new generation, or the config's errors.
    pub async fn reload(&self) -> Result<u64, Vec<String>> {
        let (done, outcome) = oneshot::channel();
        self.send(Op::Reload(done)).await.map_err(|err| vec![err])?;
        outcome.await.map_err(|_| vec![gone()])?
    }

    /// Checks `text` as a config; its errors (none: valid).
    pub async fn check(&self, text: String) -> Result<Vec<String>, String> {
        let (done, outcome) = oneshot::channel();
        self.send(Op::Check(text, done)).await?;
        outcome.await.map_err(|_| gone())
    }

    async fn send(&self, op: Op) -> Result<(), String> {
        self.tx.send(op).await.map_err(|_| gone())
    }
}

fn gone() -> String {
    "the instance is shutting down".to_string()
}
