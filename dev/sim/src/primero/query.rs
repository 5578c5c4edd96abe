//! `GET /api/v2/cases` query parsing (as Primero v2.11 does it), filtering,
//! sorting and paging.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use serde_json::{Map, Value};

use super::merge::{str_field, str_list};
use super::role::SimRole;

pub(super) const DEFAULT_PER: usize = 20;

/// Query parameters of `GET /api/v2/cases` after parsing.
#[derive(Default)]
pub(super) struct CaseFilter {
    /// Id fields are exact matches on one value: not split on commas.
    pub(super) individual_no: Option<String>,
    case_id: Option<String>,
    updated_from: Option<DateTime<Utc>>,
    updated_to: Option<DateTime<Utc>>,
    associated: Vec<String>,
    /// Exact text filters (`SearchFilters::TextValue`) on `status` and `created_by`.
    status: Option<String>,
    created_by: Option<String>,
    /// The search raised an error; Primero catches it and answers an empty
    /// page (`search_records` rescues `ActiveRecord::StatementInvalid`).
    failed: bool,
    pub(super) page: usize,
    pub(super) per: usize,
    pub(super) order_by: String,
    pub(super) descending: bool,
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// An ISO-8601 range bound; a bare date covers its whole day.
fn parse_bound(raw: &str, end: bool) -> Result<Option<DateTime<Utc>>, ()> {
    // An unencoded `+` in an offset arrives as a space after form decoding.
    let s = raw.trim().replace(' ', "+");
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(Some(t.and_utc()));
    }
    if let Ok(d) = NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
        let t = if end {
            d.and_hms_milli_opt(23, 59, 59, 999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        return Ok(t.map(|t| t.and_utc()));
    }
    Err(())
}

/// Parse the query of `GET /api/v2/cases` as Primero v2.11 does: a filter
/// on a field the role may not read is dropped; a `last_updated_at` range
/// without a (valid) lower bound is dropped (`SearchFilterService` builds no
/// range without a `from` date); an upper bound or a single value that is not
/// a date fails the SQL search. `status` and `created_by` are exact text
/// filters; `fields` is read by [`super::fields`]; `remote`, `query` and
/// unknown keys are ignored.
pub(super) fn parse_case_filter(query: Option<&str>, max_per: usize, role: &SimRole) -> CaseFilter {
    let mut f = CaseFilter {
        page: 1,
        per: DEFAULT_PER,
        order_by: "created_at".to_string(),
        descending: true,
        ..CaseFilter::default()
    };
    let pairs = url::form_urlencoded::parse(query.unwrap_or("").as_bytes());
    for (key, value) in pairs {
        let field = key.split('[').next().unwrap_or_default();
        if !role.can_read(field) && !EXCLUDED_PARAMS.contains(&field) {
            continue;
        }
        match key.as_ref() {
            // Rails keeps the last of repeated keys.
            "unhcr_individual_no" => f.individual_no = Some(value.into_owned()),
            "case_id" => f.case_id = Some(value.into_owned()),
            "status" => f.status = Some(value.into_owned()),
            "created_by" => f.created_by = Some(value.into_owned()),
            "last_updated_at" => {
                let (from, to) = match value.split_once("..") {
                    Some((from, to)) => match parse_bound(from, false) {
                        Ok(Some(from)) => match parse_bound(to, true) {
                            Ok(to) => (Some(from), to),
                            Err(()) => {
                                f.failed = true;
                                (None, None)
                            }
                        },
                        // No lower bound: no filter at all.
                        Ok(None) | Err(()) => (None, None),
                    },
                    None => match parse_bound(&value, false) {
                        Ok(at) => (at, at),
                        Err(()) => {
                            f.failed = true;
                            (None, None)
                        }
                    },
                };
                f.updated_from = from;
                f.updated_to = to;
            }
            "page" => f.page = value.trim().parse().unwrap_or(1).max(1),
            "per" => f.per = value.trim().parse().unwrap_or(DEFAULT_PER).max(1),
            "order_by" if !value.trim().is_empty() => f.order_by = value.trim().to_string(),
            "order" => f.descending = !value.trim().eq_ignore_ascii_case("asc"),
            k if k == "associated_user_names" || k.starts_with("associated_user_names[") => {
                f.associated.extend(split_list(&value))
            }
            _ => {}
        }
    }
    f.per = f.per.min(max_per.max(1));
    f
}

/// Query keys that are not record fields (`SearchFilterService::EXCLUDED`),
/// so not subject to field permissions.
const EXCLUDED_PARAMS: &[&str] = &[
    "format",
    "controller",
    "action",
    "page",
    "per",
    "order",
    "order_by",
    "fields",
    "id_search",
];

impl CaseFilter {
    pub(super) fn matches(&self, case: &Map<String, Value>) -> bool {
        if self.failed {
            return false;
        }
        if self
            .individual_no
            .as_ref()
            .is_some_and(|no| str_field(case, "unhcr_individual_no") != Some(no))
        {
            return false;
        }
        if self
            .case_id
            .as_ref()
            .is_some_and(|id| str_field(case, "case_id") != Some(id))
        {
            return false;
        }
        for (field, want) in [("status", &self.status), ("created_by", &self.created_by)] {
            if want
                .as_ref()
                .is_some_and(|w| str_field(case, field) != Some(w.as_str()))
            {
                return false;
            }
        }
        if self.updated_from.is_some() || self.updated_to.is_some() {
            let Some(t) = str_field(case, "last_updated_at")
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
            else {
                return false;
            };
            // v2.11+ SQL search compares whole seconds (`Time#iso8601`).
            let second = |t: DateTime<Utc>| t.trunc_subsecs(0);
            if self
                .updated_from
                .is_some_and(|from| second(t) < second(from))
                || self.updated_to.is_some_and(|to| second(t) > second(to))
            {
                return false;
            }
        }
        if !self.associated.is_empty() {
            let mut names = str_list(case, "assigned_user_names");
            names.extend(str_list(case, "associated_user_names"));
            if let Some(owner) = str_field(case, "owned_by") {
                names.push(owner.to_string());
            }
            if !names.iter().any(|n| self.associated.contains(n)) {
                return false;
            }
        }
        true
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SortKey {
    Missing,
    Time(DateTime<Utc>),
    Number(i64),
    Text(String),
}

pub(super) fn sort_key(case: &Map<String, Value>, field: &str) -> SortKey {
    match case.get(field) {
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => SortKey::Time(t.with_timezone(&Utc)),
            Err(_) => SortKey::Text(s.clone()),
        },
        Some(Value::Number(n)) => n
            .as_i64()
            .map(SortKey::Number)
            .unwrap_or_else(|| SortKey::Text(n.to_string())),
        Some(Value::Bool(b)) => SortKey::Number(i64::from(*b)),
        _ => SortKey::Missing,
    }
}

pub(super) fn page_bounds(total: usize, page: usize, per: usize) -> (usize, usize) {
    let start = page.saturating_sub(1).saturating_mul(per).min(total);
    (start, start.saturating_add(per).min(total))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::primero::state::format_ts;

    #[test]
    fn case_filter_parses_ranges_and_caps_per() {
        let role = SimRole::default();
        let f = parse_case_filter(
            Some("per=5000&page=2&last_updated_at=2024-05-01T00:00:00.000Z..&associated_user_names%5B0%5D=u1&order=asc&order_by=last_updated_at"),
            1000,
            &role,
        );
        assert_eq!(f.per, 1000);
        assert_eq!(f.page, 2);
        assert!(f.updated_from.is_some() && f.updated_to.is_none());
        assert_eq!(f.associated, vec!["u1"]);
        assert!(!f.descending);
        assert_eq!(f.order_by, "last_updated_at");
        let f = parse_case_filter(
            Some("last_updated_at=2024-05-01T00:00:00Z..2024-05-01"),
            1000,
            &role,
        );
        assert_eq!(
            f.updated_to.map(format_ts).as_deref(),
            Some("2024-05-01T23:59:59.999Z")
        );
        // No lower bound, or one that is not a date: the range is dropped.
        for q in [
            "last_updated_at=..2024-05-01",
            "last_updated_at=yesterday..2024-05-01",
        ] {
            let f = parse_case_filter(Some(q), 1000, &role);
            assert!(
                f.updated_from.is_none() && f.updated_to.is_none() && !f.failed,
                "{q}"
            );
        }
        // A bad upper bound or value fails the search (an empty answer).
        for q in [
            "last_updated_at=2024-05-01..soon",
            "last_updated_at=yesterday",
        ] {
            assert!(parse_case_filter(Some(q), 1000, &role).failed, "{q}");
        }
        // Id filters are one exact value; `remote` is not a parameter.
        let f = parse_case_filter(
            Some("remote=true&unhcr_individual_no=803-100000519,803-100000520&case_id=a&case_id=b"),
            1000,
            &role,
        );
        assert_eq!(
            f.individual_no.as_deref(),
            Some("803-100000519,803-100000520")
        );
        assert_eq!(f.case_id.as_deref(), Some("b"));
        // A filter on a field the role may not read is dropped.
        let blind = SimRole::bridge()
            .without_read("unhcr_individual_no")
            .without_read("associated_user_names");
        let f = parse_case_filter(
            Some("unhcr_individual_no=803-100000519&associated_user_names%5B0%5D=u1&per=5"),
            1000,
            &blind,
        );
        assert!(f.individual_no.is_none() && f.associated.is_empty());
        assert_eq!(f.per, 5);
        let f = parse_case_filter(None, 1000, &role);
        assert_eq!((f.per, f.page, f.descending), (20, 1, true));
    }
}
