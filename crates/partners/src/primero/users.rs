//! Users: one page, by name, or all.

use reqwest::Method;

use super::client::PrimeroClient;
use super::paging::{into_page, Page, MAX_PAGES};
use super::query::MAX_PER;
use super::records::User;
use super::wire::{parse, ListEnvelope};
use crate::ConnectorError;

const EP_LIST_USERS: &str = "GET /api/v2/users";

impl PrimeroClient {
    pub async fn list_users_page(&self, page: u64, per: u32) -> Result<Page<User>, ConnectorError> {
        let page = page.max(1);
        let per = per.clamp(1, MAX_PER);
        let pairs = [
            ("per".to_string(), per.to_string()),
            ("page".to_string(), page.to_string()),
        ];
        let answer = self
            .call(Method::GET, EP_LIST_USERS, &["users"], &pairs, None)
            .await?;
        let list: ListEnvelope<User> = parse(EP_LIST_USERS, &answer.body)?;
        Ok(into_page(list, page, u64::from(per)))
    }

    /// `GET /api/v2/users?user_name=…` (one page). Primero filters by exact
    /// name among the users the API user may see; with `extended` each row
    /// also lists its role's permissions. The caller must check the rows'
    /// `user_name`: a server that ignores the filter answers every user.
    pub async fn users_named(
        &self,
        user_name: &str,
        extended: bool,
    ) -> Result<Page<User>, ConnectorError> {
        let mut pairs = vec![("user_name".to_string(), user_name.to_string())];
        if extended {
            pairs.push(("extended".to_string(), "true".to_string()));
        }
        pairs.push(("per".to_string(), MAX_PER.to_string()));
        pairs.push(("page".to_string(), "1".to_string()));
        let answer = self
            .call(Method::GET, EP_LIST_USERS, &["users"], &pairs, None)
            .await?;
        let list: ListEnvelope<User> = parse(EP_LIST_USERS, &answer.body)?;
        Ok(into_page(list, 1, u64::from(MAX_PER)))
    }

    /// Every user, following all pages.
    pub async fn list_users(&self) -> Result<Vec<User>, ConnectorError> {
        let mut users = Vec::new();
        let mut page = 1;
        loop {
            let current = self.list_users_page(page, MAX_PER).await?;
            let more = current.has_next();
            users.extend(current.data);
            if !more || page >= MAX_PAGES {
                return Ok(users);
            }
            page += 1;
        }
    }
}
