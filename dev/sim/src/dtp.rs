//! Simulator of UNHCR's DTP (design A, spec §1.A, §3.1): an HTTPS server that
//! requires a TLS client certificate signed by the CA it was given (mutual
//! TLS, as DTP behind Azure APIM did) and the `Ocp-Apim-Subscription-Key`
//! header, serving the three endpoints the bridge posts to. It records every
//! body it accepts so tests can assert on it, and has fault knobs.
//!
//! DTP also *pushes* to the bridge's inbox: [`push_to_inbox`] does that, with
//! the inbox API key in `x-api-key`; [`referral_message`] and
//! [`decision_message`] build bodies of the shape of examples 01 and 11.
//!
//! [`TestPki`] makes a CA, a server certificate for 127.0.0.1/localhost and a
//! client certificate at run time, so no certificate file is ever committed.
//!
//! Choices where the real DTP is undocumented: paths are
//! `<base>/ReceiveIncomingReferral`, `<base>/ReceiveDecisionOutgoingReferral`
//! and `<base>/Notification` under base `/primero-uat`; an accepted body is
//! answered 200 `{}`; each endpoint checks the body's `request_type`
//! (`Notification` takes `Feedback` or none), answering 400 otherwise; a
//! pinned thumbprint that does not match the presented certificate is 403.

mod config;
mod http;
mod messages;
mod pki;
mod push;
mod server;
mod sim;

pub use config::{DtpEndpoint, DtpSimConfig, DtpSimError, DtpUrls, DEFAULT_BASE_PATH};
pub use messages::{decision_message, referral_message, referral_row, SimDecision};
pub use pki::{TestPki, TestPkiFiles};
pub use push::{push_raw_to_inbox, push_to_inbox, PushResponse, INBOX_KEY_HEADER};
pub use server::RunningDtpSim;
pub use sim::{DtpReceived, DtpRequest, DtpSim, FaultKind};
