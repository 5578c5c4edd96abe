//! Faults from partner systems (simulator fault knobs, per endpoint).

use crate::Row;

/// Partner-fault cases, first in the document.
pub fn run() -> Vec<Row> {
    // filled by the lead
    Vec::new()
}
