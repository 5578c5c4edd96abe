//! Attempts across runs and the dead letter: what a flow asks before it
//! works on a record, and tells after.
//!
//! A record that fails is retried by the next runs; after
//! [`DeliveryPolicy::max_attempts`] consecutive failures it moves to the dead
//! letter with its reason, and later runs leave it alone (for a cursor flow
//! the cursor may then move past it) until an operator replays it.

/// How often a failing record is tried before it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5 }
    }
}
