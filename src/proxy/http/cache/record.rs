//! A storable response on its way to the client: each frame is passed on as it
//! comes (nothing waits for the whole body) and copied aside while the body
//! stays within `max_object`. Whole and within it: stored. Larger, cut short,
//! with trailers, or abandoned by the client: simply not stored. Either way the
//! requests waiting on this one (see `coalesce`) are released as soon as it is known.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::coalesce::FlightGuard;
use super::entry::Entry;
use super::key::{Key, Variant};
use super::policy::Timing;
use super::HttpCache;
use crate::proxy::http::body::BodyError;
use crate::proxy::http::client_state::OpenRequest;
use crate::proxy::http::ResponseBody;

/// Most bytes reserved up front for a body of unknown length: it grows as it comes.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// What becomes an entry once the body is whole.
#[derive(Debug)]
pub struct Recorder {
    pub(super) cache: Arc<HttpCache>,
    pub(super) key: Key,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) variant: Variant,
    pub(super) timing: Timing,
    pub(super) no_cache: bool,
    /// The body so far.
    pub(super) body: BytesMut,
    /// `max_object`: beyond it, nothing is kept.
    pub(super) limit: usize,
    /// Held until the outcome is known.
    pub(super) flight: Option<FlightGuard>,
}

impl Recorder {
    /// Reserves room for a body of `length` (when the server said).
    pub(super) fn expecting(mut self, length: Option<u64>) -> Self {
        let capacity = length.map_or(INITIAL_CAPACITY, |n| n as usize).min(self.limit);
        self.body.reserve(capacity);
        self
    }

    /// Keeps `data`; false once the body outgrew `max_object`.
    fn keep(&mut self, data: &Bytes) -> bool {
        if self.body.len() + data.len() > self.limit {
            return false;
        }
        self.body.extend_from_slice(data);
        true
    }

    /// The body is whole: store it.
    fn finish(self) {
        let Recorder { cache, key, status, headers, variant, timing, no_cache, body, flight, .. } = self;
        let entry = Entry::new(status, headers, body.freeze(), variant, timing, no_cache);
        cache.store(&key, entry);
        // Only now, so the waiters find it.
        drop(flight);
    }
}

/// The body of a response being stored as it is sent.
#[derive(Debug)]
pub struct RecordingBody {
    inner: ResponseBody,
    recorder: Option<Recorder>,
}

impl RecordingBody {
    /// Sends `inner` on, storing it through `recorder` if it completes within bounds.
    pub(super) fn new(inner: ResponseBody, recorder: Recorder) -> Self {
        let mut body = RecordingBody { inner, recorder: Some(recorder) };
        // An empty body (a 204, a Content-Length of 0) may never be polled.
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    /// Keeps the client's request open until the body is done.
    pub fn hold(&mut self, open: OpenRequest) {
        self.inner.hold(open);
    }

    fn finish(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            recorder.finish();
        }
    }
}

impl Body for RecordingBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(frame))) => {
                let kept = match (frame.data_ref(), &mut this.recorder) {
                    (Some(data), Some(recorder)) => recorder.keep(data),
                    // Trailers are not stored: a response with them is not.
                    (None, Some(_)) => false,
                    (_, None) => true,
                };
                if !kept {
                    this.recorder = None;
                } else if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            // Cut short: not stored.
            Poll::Ready(Some(Err(_))) => this.recorder = None,
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
