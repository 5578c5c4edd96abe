//! Consent revoked after sharing (issue 16): a case the bridge shared that
//! no longer records consent, seen on the next scan of updated cases, raises
//! one alert for the manual procedure (run report, metric, audit, and the
//! operator's webhook). The bridge never sends a withdrawal itself: the
//! procedure is manual by agreement.

use std::collections::HashMap;

use bridge_partners::primero::Case;
use bridge_store::{Store, StoreError};

use crate::consent::ConsentGate as _;
use crate::report::{RecordOutcome, RecordReport};
use bridge_mappings::ConsentPolicy;

/// The shared cases of one run, and what their consent was last seen as.
pub struct ConsentWatch {
    rules: ConsentPolicy,
    /// Shared case id → its consent loss was raised (and not cleared).
    shared: HashMap<String, bool>,
    /// Dry runs watch nothing (they write nothing).
    enabled: bool,
}

impl ConsentWatch {
    pub async fn load(
        store: &dyn Store,
        rules: ConsentPolicy,
        dry_run: bool,
    ) -> Result<Self, StoreError> {
        let shared = if dry_run {
            HashMap::new()
        } else {
            store.shared_cases().await?.into_iter().collect()
        };
        Ok(Self {
            rules,
            shared,
            enabled: !dry_run,
        })
    }

    pub fn rules(&self) -> &ConsentPolicy {
        &self.rules
    }

    /// [`ConsentWatch::shared`] for several cases (a page's), in one
    /// transaction.
    pub async fn shared_all(&mut self, store: &dyn Store, flow: &str, case_ids: Vec<String>) {
        if !self.enabled {
            return;
        }
        let mut new: Vec<String> = case_ids
            .into_iter()
            .filter(|id| !self.shared.contains_key(id))
            .collect();
        new.sort();
        new.dedup();
        if new.is_empty() {
            return;
        }
        match store.cases_shared(&new, flow).await {
            Ok(()) => self.shared.extend(new.into_iter().map(|id| (id, false))),
            Err(e) => {
                tracing::error!(error = %e, cases = new.len(), "state database: shared cases not recorded; their consent is not watched until they are")
            }
        }
    }

    /// `case` was shared by `flow` (a record of it reached the partner).
    pub async fn shared(&mut self, store: &dyn Store, flow: &str, case_id: &str) {
        if !self.enabled || self.shared.contains_key(case_id) {
            return;
        }
        match store.case_shared(case_id, flow).await {
            Ok(()) => {
                self.shared.insert(case_id.to_string(), false);
            }
            Err(e) => {
                tracing::error!(error = %e, case = %case_id, "state database: shared case not recorded; its consent is not watched until it is")
            }
        }
    }

    /// A case read by a scan. When it was shared and no longer records
    /// consent, raise the alert once: the report line to add.
    pub async fn observe(
        &mut self,
        store: &dyn Store,
        (flow, run_id): (&str, &str),
        case: &Case,
    ) -> Option<RecordReport> {
        let raised = *self.shared.get(&case.id)?;
        let recorded = self.rules.recorded(case);
        if recorded && raised {
            match store.consent_present(&case.id).await {
                Ok(()) => {
                    self.shared.insert(case.id.clone(), false);
                }
                Err(e) => {
                    tracing::error!(error = %e, case = %case.id, "state database: restored consent not recorded")
                }
            }
            return None;
        }
        if recorded || raised {
            return None;
        }
        match store.consent_lost(&case.id, flow, run_id).await {
            Ok(alert) => {
                self.shared.insert(case.id.clone(), true);
                // `None`: another flow's scan raised it first.
                let alert = alert?;
                tracing::warn!(
                    case = %case.id,
                    alert = alert.id,
                    "consent revoked on a shared case: alert raised for the manual procedure"
                );
                Some(RecordReport {
                    source_id: case.id.clone(),
                    outcome: RecordOutcome::ConsentRevoked {
                        case_id: case.id.clone(),
                        alert_id: Some(alert.id),
                    },
                    acknowledged: false,
                    ack_error: None,
                    would_acknowledge: None,
                })
            }
            Err(e) => {
                tracing::error!(error = %e, case = %case.id, "state database: consent loss not recorded; raised on a later scan");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_store::SqliteStore;
    use serde_json::json;

    fn case(consent: bool) -> Case {
        serde_json::from_value(json!({
            "id": "c1",
            "consent_for_services": consent,
            "disclosure_other_orgs": true,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn only_shared_cases_alert_and_only_once() {
        let store = SqliteStore::in_memory().await.unwrap();
        let mut watch = ConsentWatch::load(&store, ConsentPolicy::default(), false)
            .await
            .unwrap();
        assert!(watch
            .observe(&store, ("ping-2.1", "r1"), &case(false))
            .await
            .is_none());
        watch.shared(&store, "ping-2.1", "c1").await;
        assert!(watch
            .observe(&store, ("ping-2.1", "r1"), &case(true))
            .await
            .is_none());
        let line = watch
            .observe(&store, ("ping-2.1", "r1"), &case(false))
            .await
            .unwrap();
        assert_eq!(line.outcome.label(), "consent-revoked");
        assert!(watch
            .observe(&store, ("ping-2.1", "r1"), &case(false))
            .await
            .is_none());
        // A new run (another process) knows it was raised.
        let mut next = ConsentWatch::load(&store, ConsentPolicy::default(), false)
            .await
            .unwrap();
        assert!(next
            .observe(&store, ("ping-1.2", "r2"), &case(false))
            .await
            .is_none());
        // Consent back, then lost again: a new alert.
        assert!(next
            .observe(&store, ("ping-1.2", "r2"), &case(true))
            .await
            .is_none());
        assert!(next
            .observe(&store, ("ping-1.2", "r3"), &case(false))
            .await
            .is_some());
        assert_eq!(store.alerts(false).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_dry_run_raises_nothing() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.case_shared("c1", "ping-2.1").await.unwrap();
        let mut watch = ConsentWatch::load(&store, ConsentPolicy::default(), true)
            .await
            .unwrap();
        assert!(watch
            .observe(&store, ("ping-2.1", "r1"), &case(false))
            .await
            .is_none());
        assert!(store.alerts(false).await.unwrap().is_empty());
    }
}
