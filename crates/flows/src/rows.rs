//! De-duplication of PING SHP-2358 join rows.
//!
//! SHP-2358 returns one row per (language × specific need) combination of an
//! intervention. The job wants one bundle per intervention: the first row as
//! the base, plus the distinct languages and specific needs in row order.

use serde::Serialize;
use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

pub const INTERVENTION_NUMBER: &str = "progres_interventionnumber";
const LANGUAGE: &str = "progres_language.progres_languagecodeidname";
const NEED_CATEGORY: &str = "progres_specificneed.progres_spncategory2name";
const NEED_SUBCATEGORY: &str = "progres_specificneed.progres_spnsubcategory2name";
const NEED_CATEGORY_ID: &str = "progres_specificneed.specificneeds.progres_spncategory2";
const NEED_SUBCATEGORY_ID: &str = "progres_specificneed.specificneeds.progres_spnsubcategory2";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecificNeed {
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub category_id: Option<String>,
    pub subcategory_id: Option<String>,
}

/// What the 1.1 job receives for one intervention.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterventionBundle {
    /// The SHP-2747 pending-delivery row.
    pub delivery: Row,
    /// The first SHP-2358 row of the intervention.
    pub intervention: Row,
    pub languages: Vec<String>,
    pub specific_needs: Vec<SpecificNeed>,
}

fn text(row: &Row, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Group join rows by intervention number, preserving first-seen order. Rows
/// without an intervention number are grouped under the empty key (the job
/// then reports the missing field).
pub fn group_intervention_rows(rows: &[Row]) -> Vec<(Row, Vec<String>, Vec<SpecificNeed>)> {
    let mut groups: Vec<(String, Row, Vec<String>, Vec<SpecificNeed>)> = Vec::new();
    for row in rows {
        let number = text(row, INTERVENTION_NUMBER).unwrap_or_default();
        let idx = match groups.iter().position(|g| g.0 == number) {
            Some(i) => i,
            None => {
                groups.push((number, row.clone(), Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        let group = &mut groups[idx];
        if let Some(lang) = text(row, LANGUAGE) {
            if !group.2.contains(&lang) {
                group.2.push(lang);
            }
        }
        let need = SpecificNeed {
            category: text(row, NEED_CATEGORY),
            subcategory: text(row, NEED_SUBCATEGORY),
            category_id: text(row, NEED_CATEGORY_ID),
            subcategory_id: text(row, NEED_SUBCATEGORY_ID),
        };
        if (need.category.is_some() || need.subcategory.is_some()) && !group.3.contains(&need) {
            group.3.push(need);
        }
    }
    groups
        .into_iter()
        .map(|(_, row, langs, needs)| (row, langs, needs))
        .collect()
}

/// The bundle for one pending delivery, from its SHP-2358 rows. `None` when
/// proGres returned no detail rows for it.
pub fn bundle_for_delivery(delivery: &Row, detail_rows: &[Row]) -> Option<InterventionBundle> {
    // The delivery names the intervention; prefer its group when several come back.
    let wanted = text(delivery, "progres_interventionname");
    let mut groups = group_intervention_rows(detail_rows);
    let idx = wanted
        .and_then(|w| {
            groups
                .iter()
                .position(|g| text(&g.0, INTERVENTION_NUMBER).as_deref() == Some(w.as_str()))
        })
        .unwrap_or(0);
    if groups.is_empty() {
        return None;
    }
    let (intervention, languages, specific_needs) = groups.swap_remove(idx);
    Some(InterventionBundle {
        delivery: delivery.clone(),
        intervention,
        languages,
        specific_needs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn spec_example_15_dedupes_to_one_intervention_with_two_languages() {
        let text = include_str!(
            "../../../tests/fixtures/examples/15_ping_intervention_details_SHP-2358.json"
        );
        let example: Value = serde_json::from_str(text).unwrap();
        let rows: Vec<Row> = example["response"]["Data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect();
        let groups = group_intervention_rows(&rows);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1, vec!["Nuer".to_string(), "Swahili".to_string()]);
        assert_eq!(groups[0].2.len(), 1);
        assert_eq!(
            groups[0].2[0].category.as_deref(),
            Some("Unaccompanied or separated child")
        );
    }

    #[test]
    fn four_join_rows_give_two_languages_and_two_needs() {
        let mut rows = Vec::new();
        for lang in ["A", "B"] {
            for need in ["N1", "N2"] {
                rows.push(row(json!({
                    "progres_interventionnumber": "X-1",
                    LANGUAGE: lang,
                    NEED_CATEGORY: need,
                })));
            }
        }
        let groups = group_intervention_rows(&rows);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].1, vec!["A", "B"]);
        assert_eq!(groups[0].2.len(), 2);
    }

    #[test]
    fn picks_the_delivery_s_intervention_and_handles_empty() {
        let rows = vec![
            row(json!({"progres_interventionnumber": "X-1"})),
            row(json!({"progres_interventionnumber": "X-2", LANGUAGE: "Nuer"})),
        ];
        let delivery = row(json!({"progres_interventionname": "X-2"}));
        let b = bundle_for_delivery(&delivery, &rows).unwrap();
        assert_eq!(b.languages, vec!["Nuer"]);
        assert!(bundle_for_delivery(&delivery, &[]).is_none());
    }
}
