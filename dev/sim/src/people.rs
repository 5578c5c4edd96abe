//! Generated people for the simulators: invented names from syllables, so no
//! real person can ever appear in a demo, a test or a log under test.
//!
//! Deterministic for a given seed, so tests can name the people they expect and
//! scan logs and databases for their personal data.

/// One invented person, with the personal data the flows carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// proGres individual id (`progres_id`), e.g. `803-100000519`. Maps to
    /// Primero `unhcr_individual_no`.
    pub progres_id: String,
    /// Registration group number, e.g. `803-24-1000552` (Primero `unhcr_id_no`).
    pub registration_group: String,
    pub given_name: String,
    pub middle_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD`.
    pub date_of_birth: String,
    /// proGres sex option-set code: 125080000 female, 125080001 male.
    pub sex_code: u32,
    pub phone: String,
}

impl Person {
    /// The fields that identify this person: what a test must not find in a
    /// log, an output or a database.
    pub fn personal_data(&self) -> [&str; 5] {
        [
            &self.given_name,
            &self.family_name,
            &self.middle_name,
            &self.date_of_birth,
            &self.phone,
        ]
    }
}

/// A small deterministic generator (SplitMix64): stable across platforms and
/// crate versions, which a seeded fixture needs.
#[derive(Debug, Clone)]
pub struct PeopleGenerator {
    state: u64,
    issued: u64,
}

const ONSETS: &[&str] = &[
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
const CODAS: &[&str] = &["", "", "n", "r", "l", "m", "x"];

impl PeopleGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x5DEE_CE66_D1A4_F00D,
            issued: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }

    /// An invented name of 2–3 syllables, capitalised. Seven letters or more on
    /// average, so a scan for it in a log has no false positives on hex ids.
    fn name(&mut self) -> String {
        let syllables = 2 + (self.next_u64() % 2) as usize;
        let mut s = String::new();
        for _ in 0..syllables {
            s.push_str(self.pick(ONSETS));
            s.push_str(self.pick(VOWELS));
            s.push_str(self.pick(CODAS));
        }
        let mut c = s.chars();
        match c.next() {
            Some(first) => first.to_uppercase().chain(c).collect(),
            None => s,
        }
    }

    /// The next person. Ids are unique per generator (they embed a counter).
    pub fn person(&mut self) -> Person {
        self.issued += 1;
        let n = self.issued;
        let year = 2008 + self.next_u64() % 10;
        let month = 1 + self.next_u64() % 12;
        let day = 1 + self.next_u64() % 28;
        Person {
            progres_id: format!("803-1{:08}", 500_000 + n),
            registration_group: format!("803-24-1{:06}", 100_000 + n),
            given_name: self.name(),
            middle_name: self.name(),
            family_name: self.name(),
            date_of_birth: format!("{year:04}-{month:02}-{day:02}"),
            sex_code: 125_080_000 + (self.next_u64() % 2) as u32,
            phone: format!("+2519{:08}", self.next_u64() % 100_000_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_unique() {
        let a: Vec<Person> = {
            let mut g = PeopleGenerator::new(7);
            (0..50).map(|_| g.person()).collect()
        };
        let b: Vec<Person> = {
            let mut g = PeopleGenerator::new(7);
            (0..50).map(|_| g.person()).collect()
        };
        assert_eq!(a, b);
        let mut ids: Vec<_> = a.iter().map(|p| p.progres_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        assert!(a.iter().all(|p| p.given_name.len() >= 2));
    }
}
