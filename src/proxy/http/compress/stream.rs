//! A response body streamed through an encoder: each input frame is fed as it
//! comes, what the encoder emits is sent on, and the encoder is flushed when the
//! source has nothing ready (so a slow or chatty server's bytes are not held back).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::encoder::Encoder;
use crate::proxy::http::body::{BodyError, ResponseBody};
use crate::proxy::http::client_state::OpenRequest;

/// How much input is fed to the encoder at a time: a large frame is coded in
/// slices so its output goes out as it comes, not all at once.
const SLICE: usize = 32 * 1024;
/// How much input one poll codes at most before yielding to the other tasks of
/// the worker, when the encoder emits nothing (highly repetitive input).
const POLL_BUDGET: usize = 256 * 1024;

/// What a poll of a body returns.
type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

/// A response body coded on its way to the client.
#[derive(Debug)]
pub struct CompressedBody {
    inner: ResponseBody,
    /// None once the coded stream is finished.
    encoder: Option<Encoder>,
    /// The part of the last input frame not fed yet.
    input: Bytes,
    /// Input was fed since the last flush.
    unflushed: bool,
    /// The source's trailers, sent after the last coded bytes.
    trailers: Option<HeaderMap>,
    /// Everything was sent.
    done: bool,
}

impl CompressedBody {
    /// Codes `inner` with `encoder`.
    pub(super) fn new(encoder: Encoder, inner: ResponseBody) -> Self {
        CompressedBody {
            inner,
            encoder: Some(encoder),
            input: Bytes::new(),
            unflushed: false,
            trailers: None,
            done: false,
        }
    }

    /// Keeps `open` (the request this body answers) until the body is done.
    pub(crate) fn hold(&mut self, open: OpenRequest) {
        self.inner.hold(open);
    }

    /// Ends the coded stream: its last bytes, or None when it ended empty.
    fn finish(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(encoder) = self.encoder.take() else { return Ok(None) };
        let tail = encoder.finish()?;
        Ok((!tail.is_empty()).then_some(tail))
    }
}

impl Body for CompressedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        let mut budget = POLL_BUDGET;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(encoder) = &mut this.encoder else {
                // Coded stream finished: the trailers, if any, end the body.
                this.done = true;
                return Poll::Ready(this.trailers.take().map(|trailers| Ok(Frame::trailers(trailers))));
            };
            if !this.input.is_empty() {
                if budget == 0 {
                    // Yield without flushing: flushing costs ratio, and the
                    // input is still flowing.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let slice = this.input.split_to(this.input.len().min(SLICE));
                budget = budget.saturating_sub(slice.len());
                if let Err(err) = encoder.write(&slice) {
                    return this.fail(err.into());
                }
                this.unflushed = true;
                let out = encoder.take();
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                continue;
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.input = data,
                    Err(frame) => {
                        // Trailers end the body: code out what is left, then send them.
                        this.trailers = frame.into_trailers().ok();
                        if let Some(poll) = this.end() {
                            return poll;
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => return this.fail(err),
                Poll::Ready(None) => {
                    if let Some(poll) = this.end() {
                        return poll;
                    }
                }
                Poll::Pending => {
                    // The source pauses: send what the encoder holds back.
                    if std::mem::take(&mut this.unflushed) {
                        if let Err(err) = encoder.flush() {
                            return this.fail(err.into());
                        }
                        let out = encoder.take();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // The coded length is not known until the end.
        SizeHint::default()
    }
}

impl CompressedBody {
    /// Ends the body with `err`: nothing more is sent after it.
    fn fail(&mut self, err: BodyError) -> Polled {
        self.done = true;
        self.encoder = None;
        Poll::Ready(Some(Err(err)))
    }

    /// Finishes the coded stream when the source ends: the poll to return (its
    /// last bytes, or its error), or None to go on to the trailers and the end.
    fn end(&mut self) -> Option<Polled> {
        match self.finish() {
            Ok(Some(tail)) => Some(Poll::Ready(Some(Ok(Frame::data(tail))))),
            Ok(None) => None,
            Err(err) => Some(self.fail(err)),
        }
    }
}
