//! Reading a retrieve answer in one pass, keeping only the columns asked for.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::errors::{truncate, REASON_MAX_CHARS};
use super::lenient::{error_message_text, json_error, lenient_i64, lenient_u64};
use super::records::Row;
use super::retrieve::{PageCursor, RetrievePage};
use super::wire::NO_DATA;

/// A retrieve answer. Parsed by [`ResponseSeed`] straight from the bytes:
/// `Data` is either rows or a text, and an untagged enum would first buffer
/// the whole page in serde's generic tree (a second copy of a 5,000-row page).
#[derive(Default)]
struct RetrieveResponse {
    data: Option<RetrieveData>,
    error_message: Option<Value>,
    record_count: Option<Value>,
    sph_transaction_id: Option<String>,
    paging_summary: Option<PagingSummary>,
}

enum RetrieveData {
    Rows(Vec<Row>),
    Text(String),
}

/// Parses a [`RetrieveResponse`], keeping every column of a row or only these.
struct ResponseSeed<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for ResponseSeed<'_> {
    type Value = RetrieveResponse;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResponseSeed<'_> {
    type Value = RetrieveResponse;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PING retrieve answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = RetrieveResponse::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Data" => out.data = map.next_value_seed(DataSeed(self.0))?,
                "ErrorMessage" => out.error_message = map.next_value()?,
                "RecordCount" => out.record_count = map.next_value()?,
                "SPHTransactionId" => out.sph_transaction_id = map.next_value()?,
                "PagingSummary" => out.paging_summary = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// `Data`: rows, a text ("No Data Available") or null.
struct DataSeed<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<RetrieveData>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = Option<RetrieveData>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rows or a text")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(RetrieveData::Text(text.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(row) = seq.next_element_seed(RowSeed(self.0))? {
            rows.push(row);
        }
        Ok(Some(RetrieveData::Rows(rows)))
    }
}

/// One row, without the columns nobody asked for (their values are skipped
/// unparsed).
struct RowSeed<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut row = Row::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.0.is_none_or(|keep| keep.contains(&key)) {
                let value: Value = map.next_value()?;
                row.insert(key, value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(row)
    }
}

#[derive(Deserialize, Default)]
struct PagingSummary {
    #[serde(rename = "PagingCookie", default)]
    paging_cookie: Option<String>,
    #[serde(rename = "PageNumber", default)]
    page_number: Option<Value>,
    #[serde(rename = "IsMoreRecordsAvailable", default)]
    is_more_records_available: Option<bool>,
}

#[cfg(test)]
fn parse_retrieve_page(bytes: &[u8]) -> Result<RetrievePage, String> {
    parse_retrieve_page_with(bytes, None)
}

/// A retrieve page, keeping every column of its rows (`None`) or only these.
pub(super) fn parse_retrieve_page_with(
    bytes: &[u8],
    columns: Option<&[String]>,
) -> Result<RetrievePage, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let response = ResponseSeed(columns)
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| json_error(&e))?;
    if let Some(message) = error_message_text(response.error_message.as_ref()) {
        return Err(format!(
            "ErrorMessage: {}",
            truncate(&message, REASON_MAX_CHARS)
        ));
    }
    let rows = match response.data {
        None => Vec::new(),
        Some(RetrieveData::Rows(rows)) => rows,
        Some(RetrieveData::Text(text)) if text.trim() == NO_DATA || text.trim().is_empty() => {
            Vec::new()
        }
        Some(RetrieveData::Text(_)) => return Err("Data is an unexpected string".to_string()),
    };
    let summary = response.paging_summary.unwrap_or_default();
    let page_number = lenient_i64(summary.page_number.as_ref());
    let next = if summary.is_more_records_available == Some(true) {
        match summary.paging_cookie {
            Some(cookie) if !cookie.is_empty() => Some(PageCursor {
                cookie,
                page_number: page_number.map(|n| n + 1),
            }),
            _ => return Err("IsMoreRecordsAvailable without a PagingCookie".to_string()),
        }
    } else {
        None
    };
    Ok(RetrievePage {
        rows,
        record_count: lenient_u64(response.record_count.as_ref()),
        sph_transaction_id: response.sph_transaction_id,
        page_number,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retrieve_page_shapes() {
        let empty = json!({"Data": NO_DATA, "ErrorMessage": null, "RecordCount": null,
            "SPHTransactionId": "t", "PagingSummary": {"PagingCookie": null, "PageNumber": 0, "IsMoreRecordsAvailable": false}});
        let page = parse_retrieve_page(empty.to_string().as_bytes()).unwrap();
        assert!(page.rows.is_empty() && page.next.is_none());

        let null = json!({"Data": null, "ErrorMessage": null});
        assert!(parse_retrieve_page(null.to_string().as_bytes())
            .unwrap()
            .rows
            .is_empty());

        let more = json!({"Data": [{"a": 1}], "RecordCount": 1,
            "PagingSummary": {"PagingCookie": "<cookie page=\"1\"/>", "PageNumber": 0, "IsMoreRecordsAvailable": true}});
        let page = parse_retrieve_page(more.to_string().as_bytes()).unwrap();
        assert_eq!(page.rows.len(), 1);
        assert_eq!(page.record_count, Some(1));
        assert_eq!(
            page.next,
            Some(PageCursor {
                cookie: "<cookie page=\"1\"/>".into(),
                page_number: Some(1)
            })
        );

        let err = json!({"Data": null, "ErrorMessage": "Invalid shipping process"});
        let reason = parse_retrieve_page(err.to_string().as_bytes()).unwrap_err();
        assert!(reason.contains("Invalid shipping process"));

        let no_cookie = json!({"Data": [], "PagingSummary": {"IsMoreRecordsAvailable": true}});
        assert!(parse_retrieve_page(no_cookie.to_string().as_bytes()).is_err());
        assert!(parse_retrieve_page(b"<html>").is_err());
        assert!(parse_retrieve_page(json!({"Data": "oops"}).to_string().as_bytes()).is_err());
    }

    #[test]
    fn retrieve_page_keeps_only_the_columns_asked_for() {
        let body = json!({"Data": [{"a": 1, "b": {"deep": [1, 2]}, "c": "x"}, {"c": null}],
            "ErrorMessage": null, "Extra": {"ignored": true},
            "PagingSummary": {"PagingCookie": null, "PageNumber": 0, "IsMoreRecordsAvailable": false}});
        let bytes = body.to_string();
        let all = parse_retrieve_page(bytes.as_bytes()).unwrap();
        assert_eq!(all.rows[0].len(), 3);
        let keep = ["a".to_string(), "c".to_string()];
        let some = parse_retrieve_page_with(bytes.as_bytes(), Some(&keep)).unwrap();
        assert_eq!(some.rows.len(), 2);
        assert_eq!(
            Value::Object(some.rows[0].clone()),
            json!({"a": 1, "c": "x"})
        );
        assert_eq!(Value::Object(some.rows[1].clone()), json!({"c": null}));
        // A row that is not an object, or trailing garbage, is still refused.
        let bad = json!({"Data": [1]}).to_string();
        assert!(parse_retrieve_page_with(bad.as_bytes(), Some(&keep)).is_err());
        assert!(parse_retrieve_page(b"{\"Data\": []} x").is_err());
        assert!(parse_retrieve_page(b"[]").is_err());
    }
}
