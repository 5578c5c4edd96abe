//! Retrieve: all rows, one page, or a page at a time.

use std::collections::HashSet;
use std::sync::Arc;

use super::client::PingClient;
use super::page::{parse_packed_page, parse_retrieve_page_with, PackedPage, PackedRows};
use super::records::Row;
use super::wire::{QueryParameter, RetrieveRequest, RETRIEVE_PATH};
use crate::retry::CallKind;
use crate::{ConnectorError, Effect, System};

/// A runaway paging loop is a partner bug; stop rather than spin forever.
const MAX_PAGES: usize = 100_000;

/// Where a paged retrieve continues. Opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub(super) cookie: String,
    pub(super) page_number: Option<i64>,
}

/// One page of a retrieve.
#[derive(Debug, Clone, Default)]
pub struct RetrievePage {
    pub rows: Vec<Row>,
    pub record_count: Option<u64>,
    pub sph_transaction_id: Option<String>,
    pub page_number: Option<i64>,
    /// `Some` when PING has more records (`IsMoreRecordsAvailable`).
    pub next: Option<PageCursor>,
}

impl PingClient {
    /// Every row of a retrieve, following all pages.
    pub async fn retrieve(
        &self,
        shipping_process_id: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Row>, ConnectorError> {
        let mut pager = self.pages(shipping_process_id, params);
        let mut rows = Vec::new();
        while let Some(mut page) = pager.next_page().await? {
            rows.append(&mut page);
        }
        Ok(rows)
    }

    /// A page-at-a-time iterator over a retrieve, for streaming large sets.
    pub fn pages(&self, shipping_process_id: &str, params: &[(&str, &str)]) -> RetrievePager<'_> {
        RetrievePager {
            client: self,
            shipping_process_id: shipping_process_id.to_string(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            cursor: None,
            done: false,
            seen_cookies: HashSet::new(),
            pages: 0,
            columns: None,
        }
    }

    /// One page: the first when `cursor` is `None`, else the one it points at.
    pub async fn retrieve_page(
        &self,
        shipping_process_id: &str,
        params: &[(&str, &str)],
        cursor: Option<&PageCursor>,
    ) -> Result<RetrievePage, ConnectorError> {
        self.retrieve_page_with(shipping_process_id, params, cursor, None)
            .await
    }

    /// [`retrieve_page`](Self::retrieve_page), keeping only these columns of
    /// each row when `columns` is `Some` (the others are skipped unparsed).
    async fn retrieve_page_with(
        &self,
        shipping_process_id: &str,
        params: &[(&str, &str)],
        cursor: Option<&PageCursor>,
        columns: Option<&[String]>,
    ) -> Result<RetrievePage, ConnectorError> {
        let endpoint = format!("POST {RETRIEVE_PATH} {shipping_process_id}");
        let body = self.retrieve_request(shipping_process_id, params.iter().copied(), cursor);
        let url = self.url_for(&[RETRIEVE_PATH]);
        // A listing (only some columns kept) may be thousands of rows.
        let bytes = self
            .post_api_on(
                columns.is_some(),
                url,
                &endpoint,
                &body,
                (CallKind::Idempotent, Effect::Read),
            )
            .await?;
        // Parsed in one pass, keeping only the columns asked for; the body is
        // dropped right after.
        let page = parse_retrieve_page_with(&bytes, columns).map_err(|reason| {
            ConnectorError::Protocol {
                system: System::Ping,
                endpoint: endpoint.clone(),
                reason: self.scrub(&reason),
            }
        })?;
        drop(bytes);
        tracing::debug!(
            shipping_process = shipping_process_id,
            rows = page.rows.len(),
            page = page.page_number,
            more = page.next.is_some(),
            "PING retrieve page"
        );
        Ok(page)
    }
}

impl PingClient {
    /// The body of an SHP retrieve: one page of `shipping_process_id`.
    fn retrieve_request<'a>(
        &'a self,
        shipping_process_id: &'a str,
        params: impl Iterator<Item = (&'a str, &'a str)>,
        cursor: Option<&'a PageCursor>,
    ) -> RetrieveRequest<'a> {
        RetrieveRequest {
            shipping_process_id,
            partner_id: &self.config.partner_id,
            interop_id: &self.config.interop_id,
            api_version: "V3",
            query_parameters: params
                .map(|(parameter_name, value)| QueryParameter {
                    parameter_name,
                    value,
                })
                .collect(),
            paging_cookie: cursor.map(|c| c.cookie.as_str()),
            page_number: cursor.and_then(|c| c.page_number),
        }
    }

    /// One listing page read as it arrives, its rows packed.
    async fn retrieve_packed(
        &self,
        shipping_process_id: &str,
        params: &[(String, String)],
        cursor: Option<&PageCursor>,
        columns: Arc<[String]>,
    ) -> Result<PackedPage, ConnectorError> {
        let endpoint = format!("POST {RETRIEVE_PATH} {shipping_process_id}");
        let pairs = params.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        let body = self.retrieve_request(shipping_process_id, pairs, cursor);
        let url = self.url_for(&[RETRIEVE_PATH]);
        self.post_streamed(url, &endpoint, &body, move |reader| {
            parse_packed_page(reader, columns.clone())
        })
        .await
    }
}

/// Page-at-a-time retrieve; see [`PingClient::pages`].
pub struct RetrievePager<'c> {
    client: &'c PingClient,
    shipping_process_id: String,
    params: Vec<(String, String)>,
    cursor: Option<PageCursor>,
    done: bool,
    seen_cookies: HashSet<String>,
    pages: usize,
    columns: Option<Vec<String>>,
}

impl RetrievePager<'_> {
    /// Whether the last page was read (or paging failed for good).
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Keep only these columns of each row (a long listing then costs only
    /// what the caller uses; the other values are skipped unparsed).
    pub fn only_columns(mut self, columns: &[&str]) -> Self {
        self.columns = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// The next page, read as it arrives and kept packed (see
    /// [`PackedRows`]): for a long listing read with
    /// [`only_columns`](Self::only_columns). `None` after the last page.
    pub async fn next_packed(&mut self) -> Result<Option<PackedRows>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let columns: Arc<[String]> = self.columns.clone().unwrap_or_default().into();
        let page = self
            .client
            .retrieve_packed(
                &self.shipping_process_id,
                &self.params,
                self.cursor.as_ref(),
                columns,
            )
            .await?;
        self.advance(page.next)?;
        tracing::debug!(
            shipping_process = %self.shipping_process_id,
            rows = page.rows.len(),
            more = !self.done,
            "PING retrieve page"
        );
        Ok(Some(page.rows))
    }

    /// Past a page: where the next one is, or the end.
    fn advance(&mut self, next: Option<PageCursor>) -> Result<(), ConnectorError> {
        self.pages += 1;
        match next {
            None => self.done = true,
            Some(next) => {
                // The same cookie twice would loop forever.
                if !self.seen_cookies.insert(next.cookie.clone()) || self.pages >= MAX_PAGES {
                    self.done = true;
                    return Err(ConnectorError::Protocol {
                        system: System::Ping,
                        endpoint: format!("POST {RETRIEVE_PATH} {}", self.shipping_process_id),
                        reason: "paging does not advance".to_string(),
                    });
                }
                self.cursor = Some(next);
            }
        }
        Ok(())
    }

    /// The next page's rows, or `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Row>>, ConnectorError> {
        if self.done {
            return Ok(None);
        }
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let page = self
            .client
            .retrieve_page_with(
                &self.shipping_process_id,
                &params,
                self.cursor.as_ref(),
                self.columns.as_deref(),
            )
            .await?;
        self.advance(page.next)?;
        Ok(Some(page.rows))
    }
}
