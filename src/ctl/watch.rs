//! `fulcrum ctl status --watch`: redraws the table every interval until Ctrl-C.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::client::Client;
use super::error::CtlError;
use super::{ops, table};

/// Moves the cursor home and clears the screen, so each frame replaces the last.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Draws a frame every `interval` until Ctrl-C (exit 0). A failed fetch is shown in
/// the frame and retried next time: the instance may be restarting.
pub async fn run(client: &Client, interval: Duration) -> Result<bool, CtlError> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let frame = tokio::select! {
            result = &mut ctrl_c => return stopped(result),
            fetched = ops::status(client) => match fetched {
                Ok(status) => table::render(&status, now_ms()),
                Err(err) => format!("fulcrum ctl: {err}\n"),
            },
        };
        let heading = format!("every {}, Ctrl-C to stop\n", humantime::format_duration(interval));
        let mut out = std::io::stdout().lock();
        // A closed stdout (piped into `head`) ends the watch; nobody is reading.
        if write!(out, "{CLEAR}{heading}{frame}").and_then(|()| out.flush()).is_err() {
            return Ok(true);
        }
        drop(out);
        tokio::select! {
            result = &mut ctrl_c => return stopped(result),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

fn stopped(signal: std::io::Result<()>) -> Result<bool, CtlError> {
    match signal {
        Ok(()) => Ok(true),
        // Without a Ctrl-C handler the loop could not be stopped cleanly; say so.
        Err(err) => Err(CtlError::Unexpected(format!("cannot listen for Ctrl-C: {err}"))),
    }
}

/// Now, in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
