//! Settings of a simulated PING deployment: credentials, ids, shipping processes.

use std::fmt;

/// The deployment's shipping process ids, by purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippingProcesses {
    /// SHP-2747: pending Primero-outgoing-referral deliveries.
    pub pending_deliveries: String,
    /// SHP-2358: intervention details, one row per language × specific need.
    pub intervention_details: String,
    /// SHP-2748: sync ingestion of the intervention's Primero transfer status.
    pub transfer_status: String,
    /// SHP-2731: async ingestion creating an interoperability referral.
    pub interop_referral: String,
    /// SHP-2795: list of interoperability referrals with status.
    pub interop_referral_list: String,
    /// SHP-2796: one interoperability referral's decision details.
    pub interop_referral_details: String,
    /// SHP-2284: sync ingestion of an interoperability referral's status.
    pub interop_referral_status: String,
}

impl Default for ShippingProcesses {
    fn default() -> Self {
        Self {
            pending_deliveries: "SHP-2747".into(),
            intervention_details: "SHP-2358".into(),
            transfer_status: "SHP-2748".into(),
            interop_referral: "SHP-2731".into(),
            interop_referral_list: "SHP-2795".into(),
            interop_referral_details: "SHP-2796".into(),
            interop_referral_status: "SHP-2284".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shp {
    PendingDeliveries,
    InterventionDetails,
    TransferStatus,
    InteropReferral,
    InteropReferralList,
    InteropReferralDetails,
    InteropReferralStatus,
}

impl ShippingProcesses {
    pub(super) fn kind(&self, id: &str) -> Option<Shp> {
        [
            (&self.pending_deliveries, Shp::PendingDeliveries),
            (&self.intervention_details, Shp::InterventionDetails),
            (&self.transfer_status, Shp::TransferStatus),
            (&self.interop_referral, Shp::InteropReferral),
            (&self.interop_referral_list, Shp::InteropReferralList),
            (&self.interop_referral_details, Shp::InteropReferralDetails),
            (&self.interop_referral_status, Shp::InteropReferralStatus),
        ]
        .into_iter()
        .find(|(name, _)| name.as_str() == id)
        .map(|(_, kind)| kind)
    }
}

/// Credentials and identifiers the simulator expects.
#[derive(Clone)]
pub struct PingSimConfig {
    pub username: String,
    pub password: String,
    pub client_id: String,
    pub subscription_key: String,
    pub partner_id: String,
    pub interop_id: String,
    /// `expires_in` of issued tokens; they are refused after it.
    pub token_ttl_secs: u64,
    /// Rows per retrieve page.
    pub page_size: usize,
    pub shipping: ShippingProcesses,
}

impl Default for PingSimConfig {
    fn default() -> Self {
        Self {
            username: "bridge-sim@ping.example".into(),
            password: "sim-password".into(),
            client_id: "00000000-0000-4000-8000-00000000c11e".into(),
            subscription_key: "sim-subscription-key".into(),
            partner_id: "PNR-1363".into(),
            interop_id: "INT-1436".into(),
            token_ttl_secs: 3600,
            page_size: 5000,
            shipping: ShippingProcesses::default(),
        }
    }
}

impl fmt::Debug for PingSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingSimConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("subscription_key", &"<redacted>")
            .field("partner_id", &self.partner_id)
            .field("interop_id", &self.interop_id)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("page_size", &self.page_size)
            .field("shipping", &self.shipping)
            .finish()
    }
}
