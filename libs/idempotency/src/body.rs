//! Reading a request body to fingerprint it, without holding large bodies
//! in memory.
//!
//! A body of at most the buffer limit is read whole before the handler
//! runs, fingerprinted, and handed to the handler as the same bytes. A
//! larger one (by `Content-Length`, or by what arrives when it is chunked)
//! is not held: it is handed to the handler through a stream that hashes
//! each piece as the handler reads it, and whatever the handler leaves
//! unread is read (and hashed, and dropped) by the middleware afterwards,
//! so the fingerprint always covers the whole body.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::key::{Fingerprint, FingerprintHasher, IdempotencyKey, Scope};

/// A request body as the middleware holds it.
pub(crate) enum RequestBody {
    /// Read whole.
    Buffered {
        /// The body.
        bytes: Bytes,
        /// Its fingerprint.
        fingerprint: Fingerprint,
    },
    /// Too large to hold: fingerprinted as it streams.
    Streamed(Rc<RefCell<StreamedBody>>),
}

impl RequestBody {
    /// Reads `payload` whole if it has at most `buffer_limit` bytes;
    /// otherwise keeps what was read and the rest as a stream.
    pub(crate) async fn read(
        mut payload: Payload,
        scope: &Scope,
        key: &IdempotencyKey,
        content_type: &[u8],
        declared_length: Option<u64>,
        buffer_limit: usize,
    ) -> Result<Self, PayloadError> {
        let streamed = |prefix: VecDeque<Bytes>, rest: Payload| {
            Self::Streamed(Rc::new(RefCell::new(StreamedBody {
                prefix,
                rest,
                hasher: Some(FingerprintHasher::new(scope, key, content_type)),
                read: 0,
                outcome: None,
            })))
        };
        if declared_length.is_some_and(|length| length > buffer_limit as u64) {
            return Ok(streamed(VecDeque::new(), payload));
        }
        let mut pieces = VecDeque::new();
        let mut total = 0;
        while let Some(piece) = payload.next().await {
            let piece = piece?;
            total += piece.len();
            pieces.push_back(piece);
            if total > buffer_limit {
                return Ok(streamed(pieces, payload));
            }
        }
        let mut bytes = BytesMut::with_capacity(total);
        for piece in pieces {
            bytes.extend_from_slice(&piece);
        }
        let bytes = bytes.freeze();
        Ok(Self::Buffered {
            fingerprint: Fingerprint::of(scope, key, content_type, &bytes),
            bytes,
        })
    }

    /// The fingerprint, if known before the body is read through.
    pub(crate) fn fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Self::Buffered { fingerprint, .. } => Some(*fingerprint),
            Self::Streamed(_) => None,
        }
    }

    /// The payload to hand to the handler: the same bytes, or a stream
    /// that hashes as it is read.
    pub(crate) fn payload(&self) -> Payload {
        match self {
            Self::Buffered { bytes, .. } => Payload::from(bytes.clone()),
            Self::Streamed(body) => Payload::Stream {
                payload: Box::pin(HashingPayload(body.clone())),
            },
        }
    }
}

/// How reading a streamed body through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Read to its end.
    Complete(Fingerprint),
    /// Longer than allowed; left unread past the limit.
    TooLarge,
    /// The client broke off, or the body is malformed.
    Failed,
}

/// A body streamed to the handler, hashed as it goes.
pub(crate) struct StreamedBody {
    /// Pieces read before it was found too large, not yet handed on.
    prefix: VecDeque<Bytes>,
    /// The rest of the payload.
    rest: Payload,
    /// Until the end is reached.
    hasher: Option<FingerprintHasher>,
    /// Bytes handed on (and hashed) so far.
    read: u64,
    /// Set once the end or an error was reached.
    outcome: Option<Drained>,
}

impl StreamedBody {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, PayloadError>>> {
        if self.outcome.is_some() {
            return Poll::Ready(None);
        }
        let next = match self.prefix.pop_front() {
            Some(piece) => Some(Ok(piece)),
            None => match self.rest.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            },
        };
        match &next {
            Some(Ok(piece)) => {
                self.read += piece.len() as u64;
                if let Some(hasher) = self.hasher.as_mut() {
                    hasher.update(piece);
                }
            }
            Some(Err(_)) => self.outcome = Some(Drained::Failed),
            None => {
                self.outcome = Some(match self.hasher.take() {
                    Some(hasher) => Drained::Complete(hasher.finish()),
                    None => Drained::Failed,
                })
            }
        }
        Poll::Ready(next)
    }
}

/// Reads what is left of `body` (hashing it, dropping it) up to a total of
/// `limit` bytes, and says how it ended.
pub(crate) async fn drain(body: &Rc<RefCell<StreamedBody>>, limit: u64) -> Drained {
    loop {
        if let Some(outcome) = body.borrow().outcome {
            return outcome;
        }
        if body.borrow().read > limit {
            return Drained::TooLarge;
        }
        let next = std::future::poll_fn(|cx| match body.try_borrow_mut() {
            Ok(mut body) => body.poll_piece(cx),
            // Only the handler's stream borrows it, and never across an
            // await: unreachable, but not worth a panic.
            Err(_) => Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(
                "the body is being read elsewhere",
            ))))),
        })
        .await;
        if let Some(Err(_)) = next {
            return Drained::Failed;
        }
    }
}

/// The handler's view of a [`StreamedBody`].
struct HashingPayload(Rc<RefCell<StreamedBody>>);

impl Stream for HashingPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.try_borrow_mut() {
            Ok(mut body) => body.poll_piece(cx),
            Err(_) => Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(
                "the body is being read elsewhere",
            ))))),
        }
    }
}
