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
    Packed(Vec<Box<str>>),
    Text(String),
}

/// What a parse keeps of each row: every column, only these, or only these
/// packed ([`PackedRows`]).
#[derive(Clone, Copy)]
enum Keep<'k> {
    All,
    Only(&'k [String]),
    Packed(&'k [String]),
}

/// Parses a [`RetrieveResponse`], keeping of each row what [`Keep`] says.
struct ResponseSeed<'k>(Keep<'k>);

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
struct DataSeed<'k>(Keep<'k>);

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
        let capacity = seq.size_hint().unwrap_or(0).min(4096);
        let only = match self.0 {
            Keep::Packed(columns) => {
                let mut rows = Vec::with_capacity(capacity);
                while let Some(row) = seq.next_element_seed(PackedRowSeed(columns))? {
                    rows.push(row);
                }
                return Ok(Some(RetrieveData::Packed(rows)));
            }
            Keep::All => None,
            Keep::Only(columns) => Some(columns),
        };
        let mut rows = Vec::with_capacity(capacity);
        while let Some(row) = seq.next_element_seed(RowSeed(only))? {
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

/// One row, packed: its kept columns as a JSON object keyed by the
/// column's position (a few bytes where the name would be tens).
struct PackedRowSeed<'k>(&'k [String]);

impl<'de> DeserializeSeed<'de> for PackedRowSeed<'_> {
    type Value = Box<str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PackedRowSeed<'_> {
    type Value = Box<str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut row = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match self.0.iter().position(|c| *c == key) {
                Some(i) => {
                    let value: Value = map.next_value()?;
                    row.insert(i.to_string(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        serde_json::to_string(&row)
            .map(String::into_boxed_str)
            .map_err(de::Error::custom)
    }
}

/// The rows of a listing page, packed: a few hundred bytes a row instead
/// of a map with its column names (a page may hold thousands). Unpacked one
/// at a time, as each is worked on.
#[derive(Debug, Default)]
pub struct PackedRows {
    columns: std::sync::Arc<[String]>,
    rows: std::collections::VecDeque<Box<str>>,
}

impl PackedRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl Iterator for PackedRows {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        let packed = self.rows.pop_front()?;
        let values: serde_json::Map<String, Value> =
            serde_json::from_str(&packed).unwrap_or_default();
        Some(
            values
                .into_iter()
                .filter_map(|(i, v)| {
                    let name = self.columns.get(i.parse::<usize>().ok()?)?;
                    Some((name.clone(), v))
                })
                .collect(),
        )
    }
}

/// A listing page read as it arrives, its rows packed.
#[derive(Debug, Default)]
pub struct PackedPage {
    pub rows: PackedRows,
    pub next: Option<PageCursor>,
}

/// A listing page from `reader` (the answer as it arrives), keeping these
/// columns of each row, packed.
pub(super) fn parse_packed_page(
    reader: impl std::io::Read,
    columns: std::sync::Arc<[String]>,
) -> Result<PackedPage, String> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let response = ResponseSeed(Keep::Packed(&columns))
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| json_error(&e))?;
    let (data, meta) = finish(response)?;
    let rows = match data {
        Some(RetrieveData::Packed(rows)) => rows.into(),
        _ => Default::default(),
    };
    Ok(PackedPage {
        rows: PackedRows { columns, rows },
        next: meta.next,
    })
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
    let keep = match columns {
        Some(c) => Keep::Only(c),
        None => Keep::All,
    };
    let response = ResponseSeed(keep)
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| json_error(&e))?;
    let (data, meta) = finish(response)?;
    let rows = match data {
        Some(RetrieveData::Rows(rows)) => rows,
        _ => Vec::new(),
    };
    Ok(RetrievePage { rows, ..meta })
}

/// The answer's error, its data (`None` for "No Data Available") and the
/// page's paging and counts (rows left empty).
fn finish(response: RetrieveResponse) -> Result<(Option<RetrieveData>, RetrievePage), String> {
    if let Some(message) = error_message_text(response.error_message.as_ref()) {
        return Err(format!(
            "ErrorMessage: {}",
            truncate(&message, REASON_MAX_CHARS)
        ));
    }
    let data = match response.data {
        Some(RetrieveData::Text(text)) if text.trim() == NO_DATA || text.trim().is_empty() => None,
        Some(RetrieveData::Text(_)) => return Err("Data is an unexpected string".to_string()),
        other => other,
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
    Ok((
        data,
        RetrievePage {
            rows: Vec::new(),
            record_count: lenient_u64(response.record_count.as_ref()),
            sph_transaction_id: response.sph_transaction_id,
            page_number,
            next,
        },
    ))
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
    fn a_packed_page_unpacks_to_the_rows_a_column_filter_keeps() {
        let body = json!({"Data": [{"a": 1, "b": {"deep": [1, 2]}, "c": "x"}, {"c": null}, {"b": 2}],
            "ErrorMessage": null,
            "PagingSummary": {"PagingCookie": "k", "PageNumber": 1, "IsMoreRecordsAvailable": true}});
        let text = body.to_string();
        let keep: std::sync::Arc<[String]> = vec!["a".to_string(), "c".to_string()].into();
        let page = parse_packed_page(text.as_bytes(), keep.clone()).unwrap();
        assert_eq!(page.rows.len(), 3);
        assert_eq!(page.next.as_ref().map(|n| n.cookie.as_str()), Some("k"));
        let unpacked: Vec<Row> = page.rows.collect();
        let filtered = parse_retrieve_page_with(text.as_bytes(), Some(&keep))
            .unwrap()
            .rows;
        assert_eq!(unpacked, filtered);
        // A missing column stays missing; a null stays null.
        assert_eq!(Value::Object(unpacked[1].clone()), json!({"c": null}));
        assert!(unpacked[2].is_empty());
        let err = json!({"Data": null, "ErrorMessage": "Invalid shipping process"}).to_string();
        assert!(parse_packed_page(err.as_bytes(), keep.clone()).is_err());
        let none = json!({"Data": NO_DATA}).to_string();
        assert!(parse_packed_page(none.as_bytes(), keep)
            .unwrap()
            .rows
            .is_empty());
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
