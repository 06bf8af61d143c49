//! The three encoders behind one face: bytes in, coded bytes out, flushed on
//! demand. Each writes into a `Vec` that the body drains after every call.
//!
//! Levels are chosen for speed: the balancer compresses on the fly for every
//! client, so CPU per MB matters more than the last few percent of ratio (a
//! static asset that wants the best ratio is served precompressed instead).
//! Measured on 27 MB of HTML/JS/CSS/JSON in 64 KiB writes, one core (release):
//! - gzip 3 (zlib-rs): 181 MB/s, ratio 0.165, against 101 MB/s and 0.150 at
//!   level 6; level 1 is faster (355 MB/s) but its output 40% larger (0.232).
//! - brotli 4: 110 MB/s, ratio 0.146, denser than gzip 6 at its speed; level 5 was
//!   half as fast. Window 2^20 (1 MiB) instead of the default 4 MiB: the same
//!   output for responses below 1 MiB, and each concurrent response holds its
//!   window.
//! - zstd 3 (its default): 399 MB/s, ratio 0.129: faster than gzip 1 and denser
//!   than gzip 6.

use std::fmt;
use std::io::{self, Write};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::Encoding;

const GZIP_LEVEL: u32 = 3;
const BROTLI_QUALITY: u32 = 4;
const BROTLI_WINDOW_LOG: u32 = 20;
const ZSTD_LEVEL: i32 = 3;
/// The brotli writer's internal output buffer (it copies from there to the Vec).
const BROTLI_BUFFER: usize = 16 * 1024;

/// A running encoder.
pub(super) enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    // Boxed: its state is far larger than the others' handles.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Encoder::Gzip(_) => "Gzip",
            Encoder::Brotli(_) => "Brotli",
            Encoder::Zstd(_) => "Zstd",
        };
        f.debug_tuple("Encoder").field(&name).finish()
    }
}

impl Encoder {
    /// Starts an encoder for `encoding`.
    pub(super) fn new(encoding: Encoding) -> io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL))),
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                BROTLI_WINDOW_LOG,
            ))),
            Encoding::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?),
        })
    }

    /// Feeds `data`; what the encoder emits waits in its output until [`Self::take`].
    pub(super) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(encoder) => encoder.write_all(data),
            Encoder::Brotli(encoder) => encoder.write_all(data),
            Encoder::Zstd(encoder) => encoder.write_all(data),
        }
    }

    /// Emits everything fed so far in a form the client can decode at once (a
    /// sync flush): for when the source pauses, so the client is not kept waiting
    /// for bytes the encoder holds back.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(encoder) => encoder.flush(),
            Encoder::Brotli(encoder) => encoder.flush(),
            Encoder::Zstd(encoder) => encoder.flush(),
        }
    }

    /// Drains the coded bytes emitted so far.
    pub(super) fn take(&mut self) -> Bytes {
        let out = match self {
            Encoder::Gzip(encoder) => encoder.get_mut(),
            Encoder::Brotli(encoder) => encoder.get_mut(),
            Encoder::Zstd(encoder) => encoder.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }

    /// Ends the coded stream: the last bytes (and the gzip trailer, the zstd
    /// frame end, brotli's last block).
    pub(super) fn finish(self) -> io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(encoder) => encoder.finish()?,
            Encoder::Brotli(encoder) => encoder.into_inner(),
            Encoder::Zstd(encoder) => encoder.finish()?,
        };
        Ok(Bytes::from(out))
    }
}
