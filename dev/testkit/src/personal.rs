//! Personal data a test must not find in logs, outputs or databases.

/// Panics, naming the term and `place`, when `text` holds any of `terms`
/// (a simulated person's are `Person::personal_data`).
pub fn assert_absent<'a>(place: &str, text: &str, terms: impl IntoIterator<Item = &'a str>) {
    for term in terms {
        assert!(
            term.is_empty() || !text.contains(term),
            "personal data `{term}` in {place}"
        );
    }
}
