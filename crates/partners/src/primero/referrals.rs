//! Referrals of a case: list, create, decide.

use reqwest::Method;

use super::client::PrimeroClient;
use super::records::{NewReferral, Referral, ReferralUpdate};
use super::wire::{encode_data, parse, DataEnvelope, ListEnvelope};
use crate::ConnectorError;

const EP_LIST_REFERRALS: &str = "GET /api/v2/cases/{id}/referrals";
const EP_CREATE_REFERRAL: &str = "POST /api/v2/cases/{id}/referrals";
const EP_PATCH_REFERRAL: &str = "PATCH /api/v2/cases/{id}/referrals/{referral_id}";

impl PrimeroClient {
    pub async fn list_referrals(&self, case_id: &str) -> Result<Vec<Referral>, ConnectorError> {
        let answer = self
            .call(
                Method::GET,
                EP_LIST_REFERRALS,
                &["cases", case_id, "referrals"],
                &[],
                None,
            )
            .await?;
        let list: ListEnvelope<Referral> = parse(EP_LIST_REFERRALS, &answer.body)?;
        Ok(list.data)
    }

    pub async fn create_referral(
        &self,
        case_id: &str,
        referral: &NewReferral,
    ) -> Result<Referral, ConnectorError> {
        let body = encode_data(EP_CREATE_REFERRAL, referral)?;
        let answer = self
            .call(
                Method::POST,
                EP_CREATE_REFERRAL,
                &["cases", case_id, "referrals"],
                &[],
                Some(body),
            )
            .await?;
        let env: DataEnvelope<Referral> = parse(EP_CREATE_REFERRAL, &answer.body)?;
        Ok(env.data)
    }

    /// Send a decision. Primero answers 200 with the referral unchanged when
    /// the transition is not allowed (e.g. rejecting an accepted referral),
    /// so compare the returned `status` with the one sent.
    pub async fn patch_referral(
        &self,
        case_id: &str,
        referral_id: &str,
        update: &ReferralUpdate,
    ) -> Result<Referral, ConnectorError> {
        let body = encode_data(EP_PATCH_REFERRAL, update)?;
        let answer = self
            .call(
                Method::PATCH,
                EP_PATCH_REFERRAL,
                &["cases", case_id, "referrals", referral_id],
                &[],
                Some(body),
            )
            .await?;
        let env: DataEnvelope<Referral> = parse(EP_PATCH_REFERRAL, &answer.body)?;
        Ok(env.data)
    }
}
