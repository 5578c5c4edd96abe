//! Fault injection: what an injected fault does, and the shapes of
//! check-status answers.

use std::time::Duration;

/// An injected failure (the same shape as the Primero simulator's `Fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (and `Retry-After` seconds) without processing.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer this status with this body verbatim, without processing.
    Body { status: u16, body: String },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Close the connection without a complete answer; not processed.
    Hangup,
    /// Process the request, then close the connection without a complete answer.
    HangupAfter,
    /// Process the request, then answer with the body cut in half.
    Truncate,
    /// Retrieve continuation: serve the previous page again, with the paging
    /// cookie the client just sent (paging does not advance).
    RepeatPage,
    /// Retrieve: leave out the first `n` rows of the page; they are never seen.
    SkipRows(usize),
    /// Retrieve: answer `Data: "No Data Available"` whatever matches.
    NoData,
    /// Check status: process normally, write the answer in this shape.
    CheckStatus(StatusShape),
    /// Expire every issued token, then handle the request (answered 401).
    ExpireTokens,
}

/// Shapes of a check-status answer PING has been seen to send (spec §1.B
/// 2.1 step 6, example 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusShape {
    /// `{"Data": "<array as a string, inner Data unescaped>"}` (example 19, the default).
    Example19,
    /// `{"Data": [{"Status", "Data": "<escaped JSON string>", "Message"}]}`.
    WellFormed,
    /// A bare array of items whose inner `Data` is an object.
    BareArray,
    /// Not JSON at all: the outer `Data` string is not escaped either.
    UnescapedTwice,
    /// `{"Data": "No Data Available"}`.
    NoData,
    /// `{"ErrorMessage": "<message>", "Data": null}`.
    ErrorMessage(String),
    /// Bytes no parser can read.
    Garbage,
}

pub(super) struct Fault {
    pub(super) path_prefix: String,
    pub(super) kind: FaultKind,
    pub(super) remaining: usize,
}

/// A fault the handler applies itself (paging, shapes).
#[derive(Clone)]
pub(super) struct HandlerFault(pub(super) FaultKind);
