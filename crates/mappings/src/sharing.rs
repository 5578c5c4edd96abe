//! `sharing.toml`: the data points each flow may send to each partner
//! write, and why (the Information Sharing Protocol's annex), plus the
//! country's consent policy. The host checks every body against it before
//! sending (crate `bridge-flows`, `sharing_check`); `bridge mappings
//! manifest` renders it for the agencies to sign.
//!
//! ```toml
//! [consent]
//! fields = ["consent_for_services", "disclosure_other_orgs"]
//! allow_override = false
//! flows = ["ping-2.1", "dtp-2.1", "ping-1.2", "dtp-1.2"]
//!
//! [[share]]
//! flow = "ping-1.1"
//! to = "primero.create-case"
//! purpose = "the child's case, so a caseworker can provide the service"
//!
//!   [[share.field]]
//!   path = "unhcr_individual_no"
//!   source = "proGres individual id (SHP-2358 progres_individual.individuals.progres_id)"
//!   category = "identification"
//!   why = "finds the child's existing case, so no second case is made"
//!   tables = []              # optional: mapping tables the value goes through
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::{line_of, parse_toml, MappingError, Table};

/// The file of a mapping folder that holds the declaration.
pub const SHARING_FILE: &str = "sharing.toml";

/// The programme's categories of shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Consent,
    Identification,
    Services,
    Users,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Consent,
        Category::Identification,
        Category::Services,
        Category::Users,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Consent => "consent",
            Category::Identification => "identification",
            Category::Services => "services",
            Category::Users => "users",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The partner system a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Primero,
    Ping,
    Dtp,
}

/// One kind of write to a partner: where a body goes. A flow's body is
/// checked against the fields declared for (flow, destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    PrimeroCreateCase,
    PrimeroUpdateCase,
    PrimeroFlagCase,
    PrimeroUpdateReferral,
    PingReferralIngestion,
    PingTransferStatus,
    PingDecisionSynced,
    DtpIncomingReferral,
    DtpDecision,
    DtpNotification,
}

impl Destination {
    pub const ALL: [Destination; 10] = [
        Destination::PrimeroCreateCase,
        Destination::PrimeroUpdateCase,
        Destination::PrimeroFlagCase,
        Destination::PrimeroUpdateReferral,
        Destination::PingReferralIngestion,
        Destination::PingTransferStatus,
        Destination::PingDecisionSynced,
        Destination::DtpIncomingReferral,
        Destination::DtpDecision,
        Destination::DtpNotification,
    ];

    /// As `sharing.toml` spells it (`to = "…"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::PrimeroCreateCase => "primero.create-case",
            Destination::PrimeroUpdateCase => "primero.update-case",
            Destination::PrimeroFlagCase => "primero.flag-case",
            Destination::PrimeroUpdateReferral => "primero.update-referral",
            Destination::PingReferralIngestion => "ping.referral-ingestion",
            Destination::PingTransferStatus => "ping.transfer-status",
            Destination::PingDecisionSynced => "ping.decision-synced",
            Destination::DtpIncomingReferral => "dtp.receive-incoming-referral",
            Destination::DtpDecision => "dtp.receive-decision-outgoing-referral",
            Destination::DtpNotification => "dtp.notification",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn system(self) -> System {
        match self {
            Destination::PrimeroCreateCase
            | Destination::PrimeroUpdateCase
            | Destination::PrimeroFlagCase
            | Destination::PrimeroUpdateReferral => System::Primero,
            Destination::PingReferralIngestion
            | Destination::PingTransferStatus
            | Destination::PingDecisionSynced => System::Ping,
            Destination::DtpIncomingReferral
            | Destination::DtpDecision
            | Destination::DtpNotification => System::Dtp,
        }
    }

    /// For people: the system, the write, and the call.
    pub fn describe(self) -> &'static str {
        match self {
            Destination::PrimeroCreateCase => "Primero: create a case (POST /api/v2/cases)",
            Destination::PrimeroUpdateCase => "Primero: update a case (PATCH /api/v2/cases/{id})",
            Destination::PrimeroFlagCase => "Primero: flag a case (POST /api/v2/cases/{id}/flags)",
            Destination::PrimeroUpdateReferral => {
                "Primero: decide a referral (PATCH /api/v2/cases/{id}/referrals/{id})"
            }
            Destination::PingReferralIngestion => {
                "proGres via PING: new interoperability referral (shipping process referral_ingestion, async ingestion)"
            }
            Destination::PingTransferStatus => {
                "proGres via PING: transfer status of an intervention (shipping process transfer_status, SHP-2748)"
            }
            Destination::PingDecisionSynced => {
                "proGres via PING: referral decision synced (shipping process decision_synced, SHP-2284)"
            }
            Destination::DtpIncomingReferral => "proGres via DTP: ReceiveIncomingReferral",
            Destination::DtpDecision => "proGres via DTP: ReceiveDecisionOutgoingReferral",
            Destination::DtpNotification => "proGres via DTP: Notification (flows 1-3, 1-4)",
        }
    }

    /// The records of a body as it travels on the wire: Primero's
    /// `{"data": …}`, PING's `{"ShippingProcessId", "InteropId", "Data": […]}`
    /// (the envelope names the deployment, not a person), DTP's flat body.
    /// The host checks these same records before it wraps them.
    pub fn records(self, wire: &Value) -> Vec<&Value> {
        match self.system() {
            System::Primero => wire.get("data").into_iter().collect(),
            System::Ping => wire
                .get("Data")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            System::Dtp => vec![wire],
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flow as the declaration knows it: its design and the writes it makes.
/// (This crate sits below `bridge-flows`; a test there keeps the names the
/// same as the registry's.)
#[derive(Debug, Clone, Copy)]
pub struct FlowWrites {
    pub flow: &'static str,
    /// As the registry's `FlowSpec::title`.
    pub title: &'static str,
    pub design: &'static str,
    pub writes: &'static [Destination],
}

use Destination as D;

/// Every flow and the writes it may make.
pub const FLOWS: &[FlowWrites] = &[
    FlowWrites {
        flow: "ping-1.1",
        title: "proGres referral → Primero case (PING workflow 1.1)",
        design: "ping",
        writes: &[
            D::PrimeroCreateCase,
            D::PrimeroUpdateCase,
            D::PingTransferStatus,
        ],
    },
    FlowWrites {
        flow: "ping-1.2",
        title: "Primero decision on a proGres referral → proGres (PING workflow 1.2)",
        design: "ping",
        writes: &[D::PingTransferStatus],
    },
    FlowWrites {
        flow: "ping-2.1",
        title: "Primero referral → proGres (PING workflow 2.1)",
        design: "ping",
        writes: &[D::PingReferralIngestion],
    },
    FlowWrites {
        flow: "ping-2.2",
        title: "proGres decision on a Primero referral → Primero (PING workflow 2.2)",
        design: "ping",
        writes: &[D::PrimeroUpdateReferral, D::PingDecisionSynced],
    },
    FlowWrites {
        flow: "dtp-1.1",
        title: "proGres referral pushed by DTP → Primero case, answered by 1-3/1-4 (DTP flow 1-1)",
        design: "dtp",
        writes: &[
            D::PrimeroCreateCase,
            D::PrimeroUpdateCase,
            D::PrimeroFlagCase,
            D::DtpNotification,
        ],
    },
    FlowWrites {
        flow: "dtp-1.2",
        title: "Primero decision on a proGres referral → DTP (DTP flow 1-2)",
        design: "dtp",
        writes: &[D::DtpDecision],
    },
    FlowWrites {
        flow: "dtp-2.1",
        title: "Primero referral → proGres via DTP (DTP flows 2-1/2-2)",
        design: "dtp",
        writes: &[D::DtpIncomingReferral],
    },
    FlowWrites {
        flow: "dtp-2.3",
        title: "proGres decision pushed by DTP → Primero referral (DTP flow 2-3)",
        design: "dtp",
        writes: &[D::PrimeroUpdateReferral],
    },
];

/// The flow of this name.
pub fn flow_writes(flow: &str) -> Option<&'static FlowWrites> {
    FLOWS.iter().find(|f| f.flow == flow)
}

/// Which consent a Primero case must record before it is shared
/// (`[consent]`; the consent gate applies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentPolicy {
    /// Primero case fields that must all be `true`.
    pub fields: Vec<String>,
    /// Whether a referral with `consent_overridden = true` may be shared.
    pub allow_override: bool,
    /// The flows the gate applies to.
    pub flows: Vec<String>,
    /// The proGres field carrying consent inbound, when there is one.
    pub inbound_indicator: Option<String>,
}

impl Default for ConsentPolicy {
    fn default() -> Self {
        Self {
            fields: vec![
                "consent_for_services".into(),
                "disclosure_other_orgs".into(),
            ],
            allow_override: false,
            flows: ["ping-2.1", "dtp-2.1", "ping-1.2", "dtp-1.2"]
                .map(String::from)
                .to_vec(),
            inbound_indicator: None,
        }
    }
}

/// One data point that may leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedField {
    /// Canonical path in the body (see [`field_paths`]).
    pub path: String,
    /// Where the value comes from in the sending system.
    pub source: String,
    pub category: Category,
    /// The need-to-know purpose.
    pub why: String,
    /// Mapping tables the value goes through (each a file of the folder).
    pub tables: Vec<String>,
    /// Where it is declared in `sharing.toml`.
    pub line: usize,
}

/// What one flow may send to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub flow: String,
    pub to: Destination,
    pub purpose: Option<String>,
    pub fields: Vec<SharedField>,
    pub line: usize,
}

impl Share {
    /// The observed paths this declaration does not cover.
    pub fn undeclared<'a>(&self, paths: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        paths
            .into_iter()
            .filter(|p| !self.fields.iter().any(|f| &f.path == *p))
            .cloned()
            .collect()
    }
}

/// A folder's `sharing.toml`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    pub file: PathBuf,
    pub description: Option<String>,
    pub consent: ConsentPolicy,
    pub shares: Vec<Share>,
}

impl Sharing {
    /// What `flow` may send to `to`; `None`: nothing.
    pub fn share(&self, flow: &str, to: Destination) -> Option<&Share> {
        self.shares.iter().find(|s| s.flow == flow && s.to == to)
    }

    /// The paths of `record` (a body about to be sent by `flow` to `to`)
    /// that the declaration does not list. Empty: it may be sent.
    pub fn undeclared(&self, flow: &str, to: Destination, record: &Value) -> Vec<String> {
        let paths = field_paths(record);
        match self.share(flow, to) {
            Some(share) => share.undeclared(&paths),
            None => paths.into_iter().collect(),
        }
    }

    /// Parse and validate `sharing.toml`. `tables` are the folder's tables
    /// (a field's `tables` must name them), `design` its deployment's.
    pub fn parse(
        file: &Path,
        text: &str,
        tables: &BTreeMap<String, Table>,
        design: &str,
    ) -> Result<Self, MappingError> {
        let raw: RawFile = parse_toml(file, text)?;
        let at = |span: std::ops::Range<usize>, key: &str, message: String| MappingError {
            file: file.to_path_buf(),
            line: Some(line_of(text, span.start)),
            key: Some(key.to_string()),
            message,
        };
        let mut consent = ConsentPolicy::default();
        if let Some(c) = raw.consent {
            if let Some(fields) = c.fields {
                if let Some(bad) = fields.iter().find(|f| f.get_ref().trim().is_empty()) {
                    return Err(at(
                        bad.span(),
                        "consent.fields",
                        "a consent field name must not be empty".into(),
                    ));
                }
                consent.fields = fields.into_iter().map(Spanned::into_inner).collect();
            }
            if let Some(flows) = c.flows {
                if let Some(bad) = flows.iter().find(|f| flow_writes(f.get_ref()).is_none()) {
                    return Err(at(
                        bad.span(),
                        "consent.flows",
                        format!("unknown flow `{}`: {}", bad.get_ref(), known_flows()),
                    ));
                }
                consent.flows = flows.into_iter().map(Spanned::into_inner).collect();
            }
            if let Some(allow) = c.allow_override {
                consent.allow_override = allow;
            }
            consent.inbound_indicator = c
                .inbound_indicator
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
        }
        let mut shares: Vec<Share> = Vec::new();
        for share in raw.share {
            let flow = share.flow.get_ref().as_str();
            let Some(writes) = flow_writes(flow) else {
                return Err(at(
                    share.flow.span(),
                    "share.flow",
                    format!("unknown flow `{flow}`: {}", known_flows()),
                ));
            };
            if writes.design != design {
                return Err(at(
                    share.flow.span(),
                    "share.flow",
                    format!(
                        "flow `{flow}` belongs to the {} design; this folder's deployment is {design}",
                        writes.design
                    ),
                ));
            }
            let to = Destination::parse(share.to.get_ref())
                .filter(|d| writes.writes.contains(d))
                .ok_or_else(|| {
                    at(
                        share.to.span(),
                        "share.to",
                        format!(
                            "`{}` is not a write of flow {flow}; it writes to: {}",
                            share.to.get_ref(),
                            writes
                                .writes
                                .iter()
                                .map(|d| d.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            if shares.iter().any(|s| s.flow == flow && s.to == to) {
                return Err(at(
                    share.to.span(),
                    "share.to",
                    format!("{flow} → {to} is declared twice: keep one [[share]] for it"),
                ));
            }
            let mut fields: Vec<SharedField> = Vec::new();
            for f in share.field {
                let path = f.path.get_ref().trim().to_string();
                let here = format!("({flow} → {to}, field `{path}`)");
                if path.is_empty() {
                    return Err(at(
                        f.path.span(),
                        "share.field.path",
                        format!("must not be empty ({flow} → {to})"),
                    ));
                }
                if fields.iter().any(|g| g.path == path) {
                    return Err(at(
                        f.path.span(),
                        "share.field.path",
                        format!("declared twice {here}"),
                    ));
                }
                for (key, value) in [("source", &f.source), ("why", &f.why)] {
                    if value.get_ref().trim().is_empty() {
                        return Err(at(
                            value.span(),
                            &format!("share.field.{key}"),
                            format!("must not be empty {here}"),
                        ));
                    }
                }
                let category = Category::parse(f.category.get_ref().trim()).ok_or_else(|| {
                    at(
                        f.category.span(),
                        "share.field.category",
                        format!(
                            "`{}` is not a category {here}: use consent, identification, services or users",
                            f.category.get_ref()
                        ),
                    )
                })?;
                if let Some(t) = f.tables.iter().find(|t| !tables.contains_key(t.get_ref())) {
                    return Err(at(
                        t.span(),
                        "share.field.tables",
                        format!(
                            "no table `{}` in this folder {here} (no {}.toml)",
                            t.get_ref(),
                            t.get_ref()
                        ),
                    ));
                }
                fields.push(SharedField {
                    path,
                    source: f.source.into_inner().trim().to_string(),
                    category,
                    why: f.why.into_inner().trim().to_string(),
                    tables: f.tables.into_iter().map(Spanned::into_inner).collect(),
                    line: line_of(text, f.path.span().start),
                });
            }
            shares.push(Share {
                flow: flow.to_string(),
                to,
                purpose: share.purpose.map(|p| p.trim().to_string()),
                fields,
                line: line_of(text, share.flow.span().start),
            });
        }
        Ok(Self {
            file: file.to_path_buf(),
            description: raw.description,
            consent,
            shares,
        })
    }
}

fn known_flows() -> String {
    format!(
        "known flows: {}",
        FLOWS.iter().map(|f| f.flow).collect::<Vec<_>>().join(", ")
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    consent: Option<RawConsent>,
    #[serde(default)]
    share: Vec<RawShare>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    fields: Option<Vec<Spanned<String>>>,
    allow_override: Option<bool>,
    flows: Option<Vec<Spanned<String>>>,
    inbound_indicator: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShare {
    flow: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    purpose: Option<String>,
    #[serde(default)]
    field: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    path: Spanned<String>,
    source: Spanned<String>,
    category: Spanned<String>,
    why: Spanned<String>,
    #[serde(default)]
    tables: Vec<Spanned<String>>,
}

/// The canonical field paths of one record of a body: what the declaration
/// lists and the host checks. Object keys joined by `.`; an array's items
/// of objects as `[]` (`services_section[].service_type`); a PING field
/// list (objects with only `Name` and `Value`) by name,
/// `Fields[progres_externalid]`; a list of plain values is one field
/// (`language`). A value of `null` is a field (it is sent and
/// can blank the target's value); an empty object or list carries nothing
/// and has no path.
pub fn field_paths(record: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(&mut out, String::new(), record);
    out
}

fn walk(out: &mut BTreeSet<String>, prefix: String, value: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(out, path, v);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(is_name_value) => {
            for item in items {
                let name = item["Name"].as_str().unwrap_or_default();
                let value = item.get("Value").unwrap_or(&Value::Null);
                walk(out, format!("{prefix}[{name}]"), value);
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    // A list of values is one field: `language`.
                    Value::Object(_) | Value::Array(_) => walk(out, format!("{prefix}[]"), item),
                    _ => walk(out, prefix.clone(), item),
                }
            }
        }
        // A scalar at the root (never a record) still gets a path.
        _ if prefix.is_empty() => {
            out.insert("(body)".into());
        }
        _ => {
            out.insert(prefix);
        }
    }
}

/// A PING `{Name, Value}` pair.
fn is_name_value(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.get("Name").is_some_and(Value::is_string) && o.keys().all(|k| k == "Name" || k == "Value")
    })
}

/// How two declarations differ, per flow and destination.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareDiff {
    pub flow: String,
    pub to: String,
    /// Fields the new declaration lets leave that the old one did not.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Fields in both whose category, source, why or tables changed:
    /// `path: what changed` (`sex: category identification → services`).
    pub changed: Vec<String>,
}

/// `new` against `old`: every (flow, destination) where they differ.
pub fn diff(old: &Sharing, new: &Sharing) -> Vec<ShareDiff> {
    let mut keys: Vec<(String, Destination)> = old
        .shares
        .iter()
        .chain(&new.shares)
        .map(|s| (s.flow.clone(), s.to))
        .collect();
    keys.sort();
    keys.dedup();
    let fields = |s: &Sharing, flow: &str, to| -> BTreeMap<String, SharedField> {
        s.share(flow, to)
            .map(|s| {
                s.fields
                    .iter()
                    .map(|f| (f.path.clone(), f.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    // What changed in a field both declare, for the reviewer.
    let changes = |a: &SharedField, b: &SharedField| -> Vec<String> {
        let mut out = Vec::new();
        if a.category != b.category {
            out.push(format!("category {} → {}", a.category, b.category));
        }
        if a.tables != b.tables {
            out.push(format!(
                "tables [{}] → [{}]",
                a.tables.join(", "),
                b.tables.join(", ")
            ));
        }
        if a.source != b.source {
            out.push("source".into());
        }
        if a.why != b.why {
            out.push("why".into());
        }
        out
    };
    keys.into_iter()
        .filter_map(|(flow, to)| {
            let (a, b) = (fields(old, &flow, to), fields(new, &flow, to));
            let d = ShareDiff {
                added: b.keys().filter(|k| !a.contains_key(*k)).cloned().collect(),
                removed: a.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
                changed: a
                    .iter()
                    .filter_map(|(k, f)| {
                        let what = changes(f, b.get(k)?);
                        (!what.is_empty()).then(|| format!("{k}: {}", what.join("; ")))
                    })
                    .collect(),
                flow,
                to: to.as_str().to_string(),
            };
            (!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty())).then_some(d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tables() -> BTreeMap<String, Table> {
        let t = Table {
            description: "x".into(),
            default: None,
            keys: None,
            values: None,
            map: BTreeMap::new(),
        };
        [("inbound-sex".to_string(), t)].into_iter().collect()
    }

    fn parse(text: &str) -> Result<Sharing, MappingError> {
        Sharing::parse(Path::new("m/sharing.toml"), text, &tables(), "ping")
    }

    const ONE: &str = r#"
[[share]]
flow = "ping-1.1"
to = "primero.create-case"

  [[share.field]]
  path = "sex"
  source = "proGres sex"
  category = "identification"
  why = "the caseworker needs it"
  tables = ["inbound-sex"]
"#;

    #[test]
    fn parses_shares_and_defaults_the_consent_policy() {
        let s = parse(ONE).unwrap();
        assert_eq!(s.consent, ConsentPolicy::default());
        let share = s.share("ping-1.1", Destination::PrimeroCreateCase).unwrap();
        assert_eq!(share.fields[0].path, "sex");
        assert_eq!(share.fields[0].category, Category::Identification);
        assert_eq!(share.fields[0].tables, ["inbound-sex"]);
        assert_eq!(share.fields[0].line, 7);
        assert!(s
            .share("ping-1.1", Destination::PingTransferStatus)
            .is_none());
    }

    #[test]
    fn the_consent_section_is_read() {
        let s = parse(
            "[consent]\nfields = [\"consent_for_services\"]\nallow_override = true\nflows = [\"ping-2.1\"]\ninbound_indicator = \"progres_consent\"\n",
        )
        .unwrap();
        assert_eq!(
            s.consent,
            ConsentPolicy {
                fields: vec!["consent_for_services".into()],
                allow_override: true,
                flows: vec!["ping-2.1".into()],
                inbound_indicator: Some("progres_consent".into()),
            }
        );
        let e = parse("[consent]\nflows = [\"ping-9.9\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(2), Some("consent.flows")));
        assert!(e.message.contains("unknown flow `ping-9.9`"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        for (from, to, line, key, words) in [
            (
                "\"ping-1.1\"",
                "\"ping-7.1\"",
                3,
                "share.flow",
                "unknown flow `ping-7.1`",
            ),
            (
                "\"ping-1.1\"",
                "\"dtp-1.1\"",
                3,
                "share.flow",
                "belongs to the dtp design",
            ),
            (
                "\"primero.create-case\"",
                "\"dtp.notification\"",
                4,
                "share.to",
                "not a write of flow ping-1.1",
            ),
            (
                "\"identification\"",
                "\"health\"",
                9,
                "share.field.category",
                "`health` is not a category",
            ),
            (
                "[\"inbound-sex\"]",
                "[\"inbound-sexx\"]",
                11,
                "share.field.tables",
                "no table `inbound-sexx`",
            ),
            (
                "\"the caseworker needs it\"",
                "\" \"",
                10,
                "share.field.why",
                "must not be empty",
            ),
            ("why =", "wyh =", 10, "wyh", "unknown field"),
        ] {
            let e = parse(&ONE.replace(from, to)).unwrap_err();
            assert!(e.file.ends_with("sharing.toml"), "{e}");
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{e}");
            assert!(e.message.contains(words), "{e}");
        }
        let twice = format!("{ONE}{}", &ONE[ONE.find("  [[share.field]]").unwrap()..]);
        let e = parse(&twice).unwrap_err();
        assert_eq!(e.line, Some(13), "{e}");
        assert!(e.message.contains("declared twice"), "{e}");
    }

    #[test]
    fn field_paths_of_the_three_body_shapes() {
        let primero = json!({
            "unhcr_individual_no": "803-1",
            "name_middle": null,
            "language": ["language1", "language2"],
            "services_section": [{"service_type": "x", "unique_id": "u"}, {"service_type": "y"}],
            "empty": {}, "none": [],
        });
        assert_eq!(
            field_paths(&primero).into_iter().collect::<Vec<_>>(),
            [
                "language",
                "name_middle",
                "services_section[].service_type",
                "services_section[].unique_id",
                "unhcr_individual_no"
            ]
        );
        let ping = json!({
            "ExternalId": "e",
            "Attachments": [{"Comment": "c"}],
            "Fields": [{"Name": "progres_externalid", "Value": "e"}, {"Name": "progres_x", "Value": null}],
        });
        assert_eq!(
            field_paths(&ping).into_iter().collect::<Vec<_>>(),
            [
                "Attachments[].Comment",
                "ExternalId",
                "Fields[progres_externalid]",
                "Fields[progres_x]"
            ]
        );
        let dtp = json!({"id": "c#s", "request_type": "r", "nested": {"a": 1}});
        assert_eq!(
            field_paths(&dtp).into_iter().collect::<Vec<_>>(),
            ["id", "nested.a", "request_type"]
        );
    }

    #[test]
    fn wire_bodies_are_unwrapped_to_the_records_the_host_checks() {
        let wire = json!({"data": {"status": "accepted"}});
        assert_eq!(
            Destination::PrimeroUpdateReferral.records(&wire),
            [&json!({"status": "accepted"})]
        );
        let wire = json!({"ShippingProcessId": "SHP-1", "InteropId": "i", "Data": [{"ExternalId": "a"}, {"ExternalId": "b"}]});
        assert_eq!(Destination::PingTransferStatus.records(&wire).len(), 2);
        let wire = json!({"status": "x"});
        assert_eq!(Destination::DtpNotification.records(&wire), [&wire]);
    }

    #[test]
    fn undeclared_fields_are_named_and_an_undeclared_destination_shares_nothing() {
        let s = parse(ONE).unwrap();
        let record = json!({"sex": "female", "name_first": "A"});
        assert_eq!(
            s.undeclared("ping-1.1", Destination::PrimeroCreateCase, &record),
            ["name_first"]
        );
        assert_eq!(
            s.undeclared("ping-1.1", Destination::PrimeroUpdateCase, &record),
            ["name_first", "sex"]
        );
    }

    #[test]
    fn the_difference_names_added_removed_and_changed_fields() {
        let old = parse(ONE).unwrap();
        let new = parse(&format!(
            "{}\n  [[share.field]]\n  path = \"name_first\"\n  source = \"s\"\n  category = \"identification\"\n  why = \"w\"\n",
            ONE.replace("\"identification\"", "\"services\"")
        ))
        .unwrap();
        let d = diff(&old, &new);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].added, ["name_first"]);
        assert_eq!(d[0].changed, ["sex: category identification → services"]);
        assert!(d[0].removed.is_empty());
        assert_eq!(diff(&new, &old)[0].removed, ["name_first"]);
        assert!(diff(&old, &old).is_empty());
    }
}
