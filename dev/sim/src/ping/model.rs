//! What the simulator is seeded with and what it reports: interventions,
//! interoperability referrals, received requests.

use serde_json::Value;

use crate::people::Person;

/// `progres_primerotransferstatus` written by workflow 1.1.
pub const TRANSFER_STATUS_PENDING: &str = "125080002";
/// `progres_interoperabilityreferralstatus` of a referral just created by SHP-2731.
pub const INTEROP_STATUS_NEW: u32 = 125_080_000;

const DEFAULT_BUSINESS_UNIT: &str = "577ccdf6-86de-e811-80d8-001dd8b71fe3";
const DEFAULT_BUSINESS_UNIT_NAME: &str = "Kenya - Dadaab";

/// Which columns an SHP-2747 pending-delivery row carries: the shipping
/// process's column list is PING configuration and has changed over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PendingRowShape {
    /// Example 14: the intervention GUID under both `progres_intervention`
    /// and `progres_lpinterventionid`.
    #[default]
    Current,
    /// OpenFn/ping-primero `sample-data/referral-from-progres.json`: the GUID
    /// only under `progres_intervention`, plus
    /// `progres_lpintervention.progres_individualname`.
    Sample2023,
}

/// A proGres specific need attached to an intervention's individual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecificNeed {
    pub category: String,
    pub subcategory: String,
    pub category_id: String,
    pub subcategory_id: String,
}

impl SpecificNeed {
    pub fn new(
        category: impl Into<String>,
        subcategory: impl Into<String>,
        category_id: impl Into<String>,
        subcategory_id: impl Into<String>,
    ) -> Self {
        Self {
            category: category.into(),
            subcategory: subcategory.into(),
            category_id: category_id.into(),
            subcategory_id: subcategory_id.into(),
        }
    }

    /// The need of example 15.
    pub fn unaccompanied_child() -> Self {
        Self::new(
            "Unaccompanied or separated child",
            "Unaccompanied child",
            "abc5b4fb-8f76-e611-80c9-00155d340529",
            "0b7f1c2e-dddd-4a4a-9c9c-00000000000d",
        )
    }

    pub fn separated_child() -> Self {
        Self::new(
            "Unaccompanied or separated child",
            "Separated child",
            "abc5b4fb-8f76-e611-80c9-00155d340529",
            "0b7f1c2e-dddd-4a4a-9c9c-00000000000e",
        )
    }

    pub fn child_labour() -> Self {
        Self::new(
            "Child at risk",
            "Child labour",
            "a1c5b4fb-8f76-e611-80c9-00155d340529",
            "0b7f1c2e-dddd-4a4a-9c9c-00000000000f",
        )
    }
}

/// A proGres intervention to seed (a proGres → Primero referral).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimIntervention {
    pub person: Person,
    /// e.g. `803-24-PRTITV-1000123`.
    pub intervention_number: String,
    /// GUID, `progres_lpinterventionid`.
    pub lpinterventionid: String,
    /// GUID of the `progres_individual` row.
    pub individual_guid: String,
    /// GUID of the registration group (its number is `person.registration_group`).
    pub registration_group_guid: String,
    pub business_unit: String,
    pub business_unit_name: String,
    /// `progres_interventiontype2.interventiontype.progres_description`.
    pub intervention_type: String,
    pub languages: Vec<String>,
    pub specific_needs: Vec<SpecificNeed>,
    /// May contain HTML, as in proGres.
    pub description: String,
    pub reason_for_referral: String,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    pub caseworker_title: String,
    pub caseworker_phone: String,
    pub caseworker_email: String,
    /// `progres_primeroid`, when proGres already knows the Primero case.
    pub primero_id: Option<String>,
}

impl SimIntervention {
    /// Defaults modelled on example 15; ids derived from `n` so tests can
    /// predict them (`n` must be unique within a simulator).
    pub fn for_person(person: Person, n: u64) -> Self {
        Self {
            person,
            intervention_number: format!("803-24-PRTITV-{}", 1_000_000 + n),
            lpinterventionid: format!("0b7f1c2e-1111-4a4a-9c9c-{n:012}"),
            individual_guid: format!("0b7f1c2e-8888-4a4a-9c9c-{n:012}"),
            registration_group_guid: format!("0b7f1c2e-4444-4a4a-9c9c-{n:012}"),
            business_unit: DEFAULT_BUSINESS_UNIT.into(),
            business_unit_name: DEFAULT_BUSINESS_UNIT_NAME.into(),
            intervention_type: "Alternative Care".into(),
            languages: vec!["Nuer".into()],
            specific_needs: Vec::new(),
            description: "<p>Child needs interim care&nbsp;arrangement</p>".into(),
            reason_for_referral: "Caregiver hospitalised".into(),
            start_date: "2024-05-02".into(),
            caseworker_title: "Protection Assistant".into(),
            caseworker_phone: "+251900000001".into(),
            caseworker_email: "pa.example@unhcr.example".into(),
            primero_id: None,
        }
    }

    pub fn with_languages<I, S>(mut self, languages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.languages = languages.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_specific_needs(mut self, needs: Vec<SpecificNeed>) -> Self {
        self.specific_needs = needs;
        self
    }

    pub fn with_intervention_type(mut self, description: impl Into<String>) -> Self {
        self.intervention_type = description.into();
        self
    }

    pub fn with_primero_id(mut self, primero_id: impl Into<String>) -> Self {
        self.primero_id = Some(primero_id.into());
        self
    }
}

/// What proGres holds about an intervention's Primero transfer (ids, codes, dates only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterventionState {
    pub lpinterventionid: String,
    /// In the SHP-2747 queue.
    pub pending: bool,
    pub transfer_status: Option<String>,
    pub transfer_status_date: Option<String>,
    /// `progres_primeroid` written by SHP-2748 (workflow 1.2).
    pub primero_id: Option<String>,
    pub primero_caseworker: Option<String>,
    /// Attachment comments received.
    pub comments: Vec<String>,
    /// Number of SHP-2748 records applied.
    pub status_writes: usize,
}

/// A proGres interoperability referral (a Primero → proGres referral).
#[derive(Debug, Clone, PartialEq)]
pub struct InteropReferralState {
    /// `progres_interoperabilityreferralid`.
    pub id: String,
    /// `progres_interoperabilityreferralnumber`, e.g. `REF-IOP-DAD-000000001`.
    pub number: String,
    /// `progres_interoperabilityreferralstatus`.
    pub status: u32,
    /// `progres_offlineid` (Primero `case_id`).
    pub offline_id: Option<String>,
    /// `progres_orgreferralid` (Primero service `unique_id`).
    pub org_referral_id: Option<String>,
    pub external_id: Option<String>,
    pub external_guid: Option<String>,
    pub rejection_reason_name: Option<String>,
    pub rejection_comment: Option<String>,
    /// `progres_comments` received through SHP-2284.
    pub comments: Vec<String>,
    /// The fields it was created with (SHP-2731).
    pub fields: Vec<(String, Value)>,
}

/// One ingestion record as received (for test assertions).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedIngestion {
    /// Request path, e.g. `/api/ingestion/v2/PNR-1363/data`.
    pub path: String,
    pub shipping_process_id: String,
    pub sph_transaction_id: String,
    pub external_id: String,
    /// `ExternalGUID` (async ingestion only).
    pub external_guid: Option<String>,
    /// Comments of `Attachments`; `None` when the key was absent.
    pub attachments: Option<Vec<String>>,
    pub fields: Vec<(String, Value)>,
}

impl ReceivedIngestion {
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The raw JSON body of an ingestion or check-status request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedBody {
    pub path: String,
    pub body: Value,
}

/// One request and the status it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}
