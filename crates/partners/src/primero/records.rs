//! The records the flows read and write: cases, services, referrals, users,
//! flags, referral decisions. `Debug` prints ids and codes only.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

pub(super) fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A Primero case. Only the fields the flows interpret are typed; all others
/// (names, dates of birth, …) stay in `extra`. `Debug` prints ids only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Record id (the `:id` of `/api/v2/cases/:id`).
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_individual_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services_section: Vec<Service>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("case_id", &self.case_id)
            .field("unhcr_individual_no", &self.unhcr_individual_no)
            .field("owned_by", &self.owned_by)
            .field("last_updated_at", &self.last_updated_at)
            .field("services_section", &self.services_section)
            .field("extra_fields", &self.extra.len())
            .finish()
    }
}

/// One entry of a case's `services_section` subform. `Debug` prints ids and
/// codes only (free-text fields may hold personal data).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progres_interventionnumber: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_implementing_agency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_request_agency: Option<String>,
    /// `external_referral` | `internal_referral`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_referral: Option<String>,
    /// `pending` | `accepted` | `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_referral_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhcr_referral_rejection_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("unique_id", &self.unique_id)
            .field("service_type", &self.service_type)
            .field(
                "progres_interventionnumber",
                &self.progres_interventionnumber,
            )
            .field(
                "service_implementing_agency",
                &self.service_implementing_agency,
            )
            .field("service_request_agency", &self.service_request_agency)
            .field("service_referral", &self.service_referral)
            .field("unhcr_referral_status", &self.unhcr_referral_status)
            .field(
                "has_rejection_reason",
                &self.unhcr_referral_rejection_reason.is_some(),
            )
            .field("extra_fields", &self.extra.len())
            .finish()
    }
}

/// Referral (transition) status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    InProgress,
    Accepted,
    Rejected,
    Done,
    Revoked,
    /// A status this client does not know (never sent).
    #[serde(other)]
    Unknown,
}

/// A referral of a case (`GET /api/v2/cases/:id/referrals`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Referral {
    pub id: String,
    pub status: ReferralStatus,
    /// The case record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// The service `unique_id` the referral is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_record_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transitioned_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Referral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Referral")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("record_id", &self.record_id)
            .field("service_record_id", &self.service_record_id)
            .field("created_at", &self.created_at)
            .field("transitioned_to", &self.transitioned_to)
            .field("has_rejected_reason", &self.rejected_reason.is_some())
            .field("extra_fields", &self.extra.len())
            .finish()
    }
}

/// A Primero user (`GET /api/v2/users`). `Debug` prints the user name only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

/// A flag to set on a case (`POST /api/v2/cases/:id/flags`,
/// `app/controllers/api/v2/flags_controller.rb`: only `message` and `date`
/// are read). It shows in the case list and on its owner's dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewFlag {
    pub message: String,
    /// `YYYY-MM-DD`; Primero takes today when empty.
    pub date: String,
}

/// A flag as Primero answers it; only the id is kept (an integer in Primero).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Flag {
    #[serde(deserialize_with = "id_as_text")]
    pub id: String,
}

fn id_as_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "flag id is not a number or a string: {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            }
        ))),
    }
}

/// A decision on a referral (`PATCH …/referrals/:referral_id`). Primero
/// reads only these three keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReferralUpdate {
    pub status: ReferralStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_note: Option<String>,
}

impl ReferralUpdate {
    pub fn new(status: ReferralStatus) -> Self {
        Self {
            status,
            rejected_reason: None,
            rejection_note: None,
        }
    }
}

/// A new referral (`POST /api/v2/cases/:id/referrals`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewReferral {
    pub transitioned_to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transitioned_to_agency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_record_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_overridden: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_round_trips_unknown_fields_and_null_services() {
        let raw = r#"{"id":"r1","name_first":"A","services_section":null,"last_updated_at":"2024-06-10T09:00:00.000Z"}"#;
        let case: Case = serde_json::from_str(raw).unwrap();
        assert!(case.services_section.is_empty());
        assert_eq!(case.extra["name_first"], "A");
        let back = serde_json::to_value(&case).unwrap();
        assert_eq!(back["name_first"], "A");
        assert!(!format!("{case:?}").contains("\"A\""));
        let r: Referral = serde_json::from_str(r#"{"id":"x","status":"something_new"}"#).unwrap();
        assert_eq!(r.status, ReferralStatus::Unknown);
    }
}
