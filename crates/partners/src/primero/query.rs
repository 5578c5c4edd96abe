//! Filters, sort order and page size of `GET /api/v2/cases`, and their query string.

use chrono::{DateTime, SecondsFormat, Utc};

/// Primero refuses larger pages (silently lowering `per`).
pub const MAX_PER: u32 = 1000;

/// Sort field of a case query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseOrderBy {
    CreatedAt,
    LastUpdatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// Filters of `GET /api/v2/cases`, built fluently:
/// `CaseQuery::new().updated_since(t).per(1000)`. There is no `remote`:
/// it is not a filter of Primero's case index (the OpenFn jobs sent it for nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseQuery {
    pub unhcr_individual_no: Option<String>,
    pub case_id: Option<String>,
    pub updated_from: Option<DateTime<Utc>>,
    pub updated_to: Option<DateTime<Utc>>,
    pub associated_user_names: Vec<String>,
    /// `status` (e.g. `open`): a text filter; Primero drops it when the
    /// role may not read the field, so callers check the answer.
    pub status: Option<String>,
    /// `created_by`: the user name that created the case.
    pub created_by: Option<String>,
    /// `fields=a,b,…`: only these fields in the answer (Primero then adds
    /// `id`, `enabled` and `last_updated_at`; `FieldSelectionService`).
    pub fields: Vec<String>,
    /// Requested page size; clamped to 1..=1000 (default 1000).
    pub per: Option<u32>,
    pub order_by: Option<CaseOrderBy>,
    pub order: Option<SortOrder>,
}

impl CaseQuery {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn unhcr_individual_no(mut self, v: impl Into<String>) -> Self {
        self.unhcr_individual_no = Some(v.into());
        self
    }

    pub fn case_id(mut self, v: impl Into<String>) -> Self {
        self.case_id = Some(v.into());
        self
    }

    /// `last_updated_at` ≥ `from` (inclusive).
    pub fn updated_since(mut self, from: DateTime<Utc>) -> Self {
        self.updated_from = Some(from);
        self
    }

    /// `last_updated_at` ≤ `to` (inclusive).
    pub fn updated_until(mut self, to: DateTime<Utc>) -> Self {
        self.updated_to = Some(to);
        self
    }

    pub fn associated_user_name(mut self, user_name: impl Into<String>) -> Self {
        self.associated_user_names.push(user_name.into());
        self
    }

    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    pub fn created_by(mut self, user_name: impl Into<String>) -> Self {
        self.created_by = Some(user_name.into());
        self
    }

    /// Ask for these fields only (data minimisation: a report that needs
    /// ids and statuses never receives names).
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|f| f.to_string()).collect();
        self
    }

    pub fn per(mut self, per: u32) -> Self {
        self.per = Some(per);
        self
    }

    pub fn order_by(mut self, field: CaseOrderBy, order: SortOrder) -> Self {
        self.order_by = Some(field);
        self.order = Some(order);
        self
    }

    /// The page size actually sent.
    pub fn effective_per(&self) -> u32 {
        self.per.unwrap_or(MAX_PER).clamp(1, MAX_PER)
    }

    pub(super) fn to_pairs(&self, page: u64) -> Vec<(String, String)> {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut pairs = Vec::new();
        if let Some(v) = &self.unhcr_individual_no {
            pairs.push(("unhcr_individual_no".to_string(), v.clone()));
        }
        if let Some(v) = &self.case_id {
            pairs.push(("case_id".to_string(), v.clone()));
        }
        if self.updated_from.is_some() || self.updated_to.is_some() {
            // Primero drops a range without a lower bound (and then answers
            // every case): an upper bound alone is sent from the epoch.
            let from = ts(&self.updated_from.unwrap_or(DateTime::UNIX_EPOCH));
            let to = self.updated_to.as_ref().map(ts).unwrap_or_default();
            pairs.push(("last_updated_at".to_string(), format!("{from}..{to}")));
        }
        for (i, name) in self.associated_user_names.iter().enumerate() {
            pairs.push((format!("associated_user_names[{i}]"), name.clone()));
        }
        if let Some(v) = &self.status {
            pairs.push(("status".to_string(), v.clone()));
        }
        if let Some(v) = &self.created_by {
            pairs.push(("created_by".to_string(), v.clone()));
        }
        if !self.fields.is_empty() {
            pairs.push(("fields".to_string(), self.fields.join(",")));
        }
        if let Some(order_by) = self.order_by {
            let field = match order_by {
                CaseOrderBy::CreatedAt => "created_at",
                CaseOrderBy::LastUpdatedAt => "last_updated_at",
            };
            pairs.push(("order_by".to_string(), field.to_string()));
        }
        if let Some(order) = self.order {
            let order = match order {
                SortOrder::Asc => "asc",
                SortOrder::Desc => "desc",
            };
            pairs.push(("order".to_string(), order.to_string()));
        }
        pairs.push(("per".to_string(), self.effective_per().to_string()));
        pairs.push(("page".to_string(), page.to_string()));
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_clamp_per_and_format_range() {
        let from = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = CaseQuery::new()
            .updated_since(from)
            .associated_user_name("unhcr_cw")
            .per(5000);
        let pairs = q.to_pairs(2);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("per"), Some("1000"));
        assert_eq!(get("page"), Some("2"));
        assert_eq!(get("remote"), None, "not a Primero filter");
        assert_eq!(get("last_updated_at"), Some("2024-05-01T10:00:00.000Z.."));
        assert_eq!(get("associated_user_names[0]"), Some("unhcr_cw"));
        // An upper bound alone gets a lower one: Primero drops open-below ranges.
        let pairs = CaseQuery::new().updated_until(from).to_pairs(1);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("last_updated_at"),
            Some("1970-01-01T00:00:00.000Z..2024-05-01T10:00:00.000Z")
        );
        assert_eq!(CaseQuery::new().per(0).effective_per(), 1);
        let pairs = CaseQuery::new()
            .status("open")
            .created_by("bridge_api")
            .fields(&["case_id", "status"])
            .to_pairs(1);
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("status"), Some("open"));
        assert_eq!(get("created_by"), Some("bridge_api"));
        assert_eq!(get("fields"), Some("case_id,status"));
    }
}
