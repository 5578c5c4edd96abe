//! Several records in one PING sync ingestion (issue 18 §4).
//!
//! A sync ingestion (`/api/ingestion/v2/{PartnerId}/data`) takes a `Data`
//! array: the original workflow 1.2 sent all of a run's SHP-2748 records in
//! one POST, 2.2 all of its SHP-2284 records (spec domain.md §1.B). The
//! acknowledgements of workflows 1.1 and 2.2 and the decisions of 1.2 go in
//! chunks of up to [`INGESTION_BATCH`] records: one call for what used to
//! take one each.
//!
//! Each record still gets its own answer. PING lists a result per record
//! (`Data: [{ExternalId, Status, Message}]`, in the order sent, in the
//! simulator and in the sample answers); a failure is laid on the record it
//! names. When the answer cannot be matched record by record (a failure
//! without an id, several records with one id and a list of another length),
//! every record that might be the one is reported not applied: it is sent
//! again by a later run, which for a status is the same write again, never a
//! loss.

use bridge_partners::ping::{IngestionRecord, IngestionResponse, IngestionResult, PingClient};
use bridge_partners::ConnectorError;

/// Records in one sync ingestion at most: a page of Primero cases (the
/// original sent a whole run's in one POST), so a run makes no more
/// ingestions than the original for up to this many records, while a
/// refused or lost POST still concerns a bounded number of them.
pub const INGESTION_BATCH: usize = 1_000;

/// One ingestion of `records` (at most [`INGESTION_BATCH`] of them): the
/// answer of each record, in order, or the failure of the whole call.
pub async fn ingest_chunk(
    ping: &PingClient,
    shipping_process: &str,
    records: &[IngestionRecord],
    what: &str,
) -> Result<Vec<Result<(), String>>, ConnectorError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let answer = ping.ingest(shipping_process, records).await;
    tracing::info!(
        shipping_process,
        records = records.len(),
        ok = answer.is_ok(),
        "PING ingestion of a batch"
    );
    Ok(per_record(records, &answer?, what))
}

/// [`ingest_chunk`] for acknowledgements: a failed call is each record's
/// failure.
pub async fn ingest_acks(
    ping: &PingClient,
    shipping_process: &str,
    records: &[IngestionRecord],
    what: &str,
) -> Vec<Result<(), String>> {
    match ingest_chunk(ping, shipping_process, records, what).await {
        Ok(answers) => answers,
        Err(e) => {
            let reason = e.to_string();
            records.iter().map(|_| Err(reason.clone())).collect()
        }
    }
}

/// Lay an ingestion answer on the records sent, in order.
pub fn per_record(
    records: &[IngestionRecord],
    response: &IngestionResponse,
    what: &str,
) -> Vec<Result<(), String>> {
    let failures = response.failures();
    if failures.is_empty() {
        return records.iter().map(|_| Ok(())).collect();
    }
    let refused = |f: &IngestionResult| {
        let status = f.status.as_deref().unwrap_or("no status");
        let transaction = response.sph_transaction_id.as_deref().unwrap_or("none");
        match f.message.as_deref().filter(|m| !m.is_empty()) {
            // PING's own short message: codes and ids, never a payload.
            Some(m) => {
                format!("PING refused the {what} ({status}: {m}; transaction {transaction})")
            }
            None => format!("PING refused the {what} ({status}; transaction {transaction})"),
        }
    };
    // One result per record, in the order sent, each naming its record (or
    // naming none): the i-th answers the i-th.
    let in_order = response.results.len() == records.len()
        && response.results.iter().zip(records).all(|(r, rec)| {
            r.external_id
                .as_deref()
                .is_none_or(|id| id == rec.external_id)
        });
    if in_order {
        return response
            .results
            .iter()
            .map(|r| {
                if failures.iter().any(|f| std::ptr::eq(*f, r)) {
                    Err(refused(r))
                } else {
                    Ok(())
                }
            })
            .collect();
    }
    // Otherwise by id: a failure names the records it may be about; one
    // that names none may be about any of them.
    records
        .iter()
        .map(|rec| {
            match failures.iter().find(|f| {
                f.external_id
                    .as_deref()
                    .is_none_or(|id| id == rec.external_id)
            }) {
                Some(f) => Err(refused(f)),
                None => Ok(()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_partners::ping::Field;

    fn rec(id: &str) -> IngestionRecord {
        IngestionRecord {
            external_id: id.into(),
            attachments: None,
            fields: vec![Field::new("progres_lpinterventionid", id)],
        }
    }

    fn result(id: Option<&str>, status: &str) -> IngestionResult {
        IngestionResult {
            external_id: id.map(str::to_string),
            status: Some(status.into()),
            message: None,
        }
    }

    fn oks(answers: &[Result<(), String>]) -> Vec<bool> {
        answers.iter().map(Result::is_ok).collect()
    }

    #[test]
    fn an_answer_without_results_applies_to_every_record() {
        let records = [rec("a"), rec("b")];
        let answers = per_record(&records, &IngestionResponse::default(), "transfer status");
        assert_eq!(oks(&answers), [true, true]);
    }

    #[test]
    fn a_failure_is_laid_on_its_record_by_position_or_by_id() {
        let records = [rec("a"), rec("b"), rec("c")];
        let response = IngestionResponse {
            sph_transaction_id: Some("t1".into()),
            record_count: Some(3),
            results: vec![
                result(Some("a"), "Success"),
                result(Some("b"), "Failed"),
                result(Some("c"), "Success"),
            ],
        };
        let answers = per_record(&records, &response, "transfer status");
        assert_eq!(oks(&answers), [true, false, true]);
        let reason = answers[1].as_ref().unwrap_err();
        assert!(
            reason.contains("transfer status") && reason.contains("t1"),
            "{reason}"
        );
        // Only the failure listed, by id.
        let response = IngestionResponse {
            results: vec![result(Some("c"), "Failed")],
            ..IngestionResponse::default()
        };
        assert_eq!(
            oks(&per_record(&records, &response, "x")),
            [true, true, false]
        );
    }

    #[test]
    fn records_sharing_an_id_are_told_apart_by_position_only() {
        // Two decisions of one case carry the case id (workflow 1.2).
        let records = [rec("case"), rec("case"), rec("other")];
        let response = IngestionResponse {
            results: vec![
                result(Some("case"), "Success"),
                result(Some("case"), "Failed"),
                result(Some("other"), "Success"),
            ],
            ..IngestionResponse::default()
        };
        assert_eq!(
            oks(&per_record(&records, &response, "x")),
            [true, false, true]
        );
        // Listed out of step: both records of that id may be the one.
        let response = IngestionResponse {
            results: vec![result(Some("case"), "Failed")],
            ..IngestionResponse::default()
        };
        assert_eq!(
            oks(&per_record(&records, &response, "x")),
            [false, false, true]
        );
    }

    #[test]
    fn a_failure_naming_no_record_fails_every_record_it_may_be() {
        let records = [rec("a"), rec("b")];
        let response = IngestionResponse {
            results: vec![result(None, "Failed")],
            ..IngestionResponse::default()
        };
        assert_eq!(oks(&per_record(&records, &response, "x")), [false, false]);
    }
}
