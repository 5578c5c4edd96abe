//! One page of a list answer, and how a page is read from its `metadata`.

use super::wire::{ListEnvelope, Metadata};

/// A runaway paging loop is a partner bug; stop rather than spin forever.
pub(super) const MAX_PAGES: u64 = 100_000;

/// One page of a list answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total: u64,
    /// `per` as Primero applied it (after its own cap).
    pub per: u64,
    pub page: u64,
}

impl<T> Page<T> {
    /// `ceil(total / per)`.
    pub fn last_page(&self) -> u64 {
        if self.per == 0 {
            return self.page;
        }
        self.total.div_ceil(self.per)
    }

    pub fn has_next(&self) -> bool {
        !self.data.is_empty() && self.page < self.last_page()
    }
}

pub(super) fn into_page<T>(list: ListEnvelope<T>, page: u64, requested_per: u64) -> Page<T> {
    let meta = list.metadata.unwrap_or(Metadata {
        total: None,
        per: None,
        page: None,
    });
    let count = list.data.len() as u64;
    Page {
        total: meta.total.unwrap_or(count),
        per: meta.per.filter(|p| *p > 0).unwrap_or(requested_per),
        // Our own counter drives paging; a server echoing a wrong page must
        // not send us in circles.
        page: meta.page.filter(|p| *p == page).unwrap_or(page),
        data: list.data,
    }
}
