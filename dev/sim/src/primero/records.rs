//! Referrals, referral decisions and users, as the API lists and takes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Referral statuses (spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    InProgress,
    Accepted,
    Rejected,
    Done,
    Revoked,
}

impl ReferralStatus {
    pub(super) fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// A referral (transition) row as Primero lists it (example 09).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReferral {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ReferralStatus,
    pub record_id: String,
    pub record_type: String,
    pub transitioned_to: String,
    pub transitioned_to_agency: Option<String>,
    pub transitioned_by: String,
    pub notes: String,
    pub service: Option<String>,
    pub service_record_id: Option<String>,
    pub remote: bool,
    pub consent_overridden: bool,
    pub consent_individual_transfer: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responded_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_reason: Option<String>,
    pub record_access_denied: bool,
    pub user_can_accept_or_reject: bool,
}

/// What a caseworker fills in to refer a case (`POST …/referrals` `data`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NewSimReferral {
    pub transitioned_to: String,
    #[serde(default)]
    pub transitioned_to_agency: Option<String>,
    #[serde(default)]
    pub service_record_id: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub remote: Option<bool>,
    #[serde(default)]
    pub consent_overridden: Option<bool>,
    #[serde(default)]
    pub consent_individual_transfer: Option<bool>,
}

/// A decision on a referral (`PATCH …/referrals/:rid` `data`); only these
/// three keys are read, like Primero.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SimReferralDecision {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub rejected_reason: Option<String>,
    #[serde(default)]
    pub rejection_note: Option<String>,
}

impl SimReferralDecision {
    pub fn status(status: ReferralStatus) -> Self {
        Self {
            status: serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string)),
            ..Self::default()
        }
    }
}

/// A user as `GET /api/v2/users` lists it (spec §2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimUser {
    pub id: u64,
    pub user_name: String,
    pub full_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub position: Option<String>,
    pub agency_id: u64,
    pub role_id: u64,
    pub time_zone: String,
    pub locale: String,
    pub send_mail: bool,
    pub disabled: bool,
    pub created_at: String,
    pub updated_at: String,
    pub identity_provider_unique_id: Option<String>,
    pub agency_office: Option<String>,
}

impl SimUser {
    /// A user with the given name and empty contact details.
    pub fn new(user_name: impl Into<String>) -> Self {
        let user_name = user_name.into();
        Self {
            id: 0,
            full_name: user_name.clone(),
            user_name,
            email: None,
            phone: None,
            position: None,
            agency_id: 1,
            role_id: 1,
            time_zone: "UTC".to_string(),
            locale: "en".to_string(),
            send_mail: false,
            disabled: false,
            created_at: String::new(),
            updated_at: String::new(),
            identity_provider_unique_id: None,
            agency_office: None,
        }
    }
}
