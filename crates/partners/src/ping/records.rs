//! What the flows send and get back: rows, ingestion records, fields,
//! ingestion answers, check-status items.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One retrieved proGres row. Keys are Dynamics-style and depend on the
/// shipping process, so rows stay dynamic.
pub type Row = Map<String, Value>;

/// One record of a sync ingestion (`/data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestionRecord {
    #[serde(rename = "ExternalId")]
    pub external_id: String,
    /// `None` omits the key (SHP-2748 transfer status); `Some(vec![])` sends
    /// `"Attachments": []` (SHP-2284).
    #[serde(
        rename = "Attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(rename = "Fields")]
    pub fields: Vec<Field>,
}

impl IngestionRecord {
    /// The record without the fields that have no value. The original jobs
    /// left an empty value `undefined`, which JSON drops; a `null` would
    /// blank what proGres holds.
    pub fn without_empty_fields(&self) -> Self {
        Self {
            external_id: self.external_id.clone(),
            attachments: self.attachments.clone(),
            fields: valued(&self.fields),
        }
    }
}

fn valued(fields: &[Field]) -> Vec<Field> {
    fields
        .iter()
        .filter(|f| f.value.is_some())
        .cloned()
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "Comment")]
    pub comment: String,
}

/// One `{Name, Value}` pair. proGres takes every value as a string; `None`
/// sends an explicit `null`, which clears the column when the ingestion
/// updates a record: records of the workflows leave such fields out
/// ([`IngestionRecord::without_empty_fields`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Value")]
    pub value: Option<String>,
}

impl Field {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    pub fn null(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: None,
        }
    }
}

/// One record of an async ingestion (`/asyncdata`, SHP-2731).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncIngestionRecord {
    #[serde(rename = "ExternalId")]
    pub external_id: String,
    #[serde(rename = "ExternalGUID")]
    pub external_guid: String,
    #[serde(rename = "Fields")]
    pub fields: Vec<Field>,
}

impl AsyncIngestionRecord {
    /// The record without the fields that have no value (see
    /// [`IngestionRecord::without_empty_fields`]).
    pub fn without_empty_fields(&self) -> Self {
        Self {
            external_id: self.external_id.clone(),
            external_guid: self.external_guid.clone(),
            fields: valued(&self.fields),
        }
    }
}

/// What PING answered to a sync ingestion. The real success body is not
/// documented, so every part is optional and parsed leniently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestionResponse {
    pub sph_transaction_id: Option<String>,
    pub record_count: Option<u64>,
    /// Per-record outcomes, when PING lists them in `Data`.
    pub results: Vec<IngestionResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestionResult {
    pub external_id: Option<String>,
    pub status: Option<String>,
    pub message: Option<String>,
}

impl IngestionResponse {
    /// Records PING reported as not applied (a status other than a success word).
    pub fn failures(&self) -> Vec<&IngestionResult> {
        self.results
            .iter()
            .filter(|r| match r.status.as_deref() {
                None => false,
                Some(s) => !["success", "succeeded", "processed", "ok", "completed"]
                    .iter()
                    .any(|w| s.eq_ignore_ascii_case(w)),
            })
            .collect()
    }
}

/// One item of a check-status answer. The item keys are undocumented
/// (spec example 19 is a guess), so the known ones are lifted out and the rest
/// kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestionStatus {
    pub status: Option<String>,
    pub message: Option<String>,
    /// The inner `Data` object (e.g. `progres_interoperabilityreferralid`),
    /// repaired from its unescaped string form.
    pub data: Option<Row>,
    /// The inner `Data` was present but could not be parsed even after repair.
    pub data_unparsed: bool,
    pub extra: Row,
}

/// Why a check-status body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusParseError {
    #[error("body is not JSON, even after repair")]
    NotJson,
    #[error("unexpected shape: {0}")]
    Shape(&'static str),
    #[error("PING reported an error: {0}")]
    Remote(String),
}
