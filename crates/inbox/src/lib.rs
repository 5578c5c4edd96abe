//! The inbox DTP pushes to (design A).
//!
//! CONTRACT (stable): messages are accepted over HTTP, sealed and stored
//! durably, answered 202 with a receipt id, then handed to an [`InboxHandler`]
//! per kind.
//!
//! - [`http`]: `POST /dtp/inbox` (API key, size, JSON and field checks, sealing).
//! - [`processor`]: opens stored messages and hands them to their handler.
//! - [`dispatch`]: routes a message to the flow registered for its kind.
//! - [`conn`]: connections: HTTP/1.1 only, a cap, header and idle deadlines.
//! - [`serve`]: the server and the worker together, with graceful shutdown.

pub mod conn;
pub mod dispatch;
pub mod http;
pub mod processor;
pub mod serve;
pub mod validate;

pub use conn::ConnectionLimits;
pub use dispatch::Dispatcher;
pub use http::{router, InboxState, API_KEY_HEADER, DEFAULT_MAX_BODY_BYTES, INBOX_PATH};
pub use processor::{Disposition, InboxProcessor, InboxSummary, MessageOutcome};
pub use serve::{serve, ServeOptions};

// The handler side lives with the flows (a flow registers the kind it
// handles); re-exported here, where messages arrive.
pub use bridge_flows::pushed::{HandlerError, InboxHandler, InboxKind, MessageClaim};
