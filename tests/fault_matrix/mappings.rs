//! Invalid mapping folders: each error names the file, the line and the key.

use bridge_mappings::MappingSet;

use super::config_files::{check, expected, not_utf8, FileCase};
use super::{Kind, Row};

const SECTION: &str = "mappings";

const DEPLOYMENT: &str = "[deployment]\ncountry = \"Testland\"\ndesign = \"ping\"\n";
const TABLE: &str = "description = \"languages\"\ndefault = \"language6\"\n[map]\n\"Anyuak\" = \"language1\"\n\"Nuer\" = \"language2\"\n";
const CLOSED: &str = "description = \"languages\"\nvalues = [\"language1\", \"language2\"]\n[map]\n\"Anyuak\" = \"language1\"\n\"Nuer\" = \"language2\"\n";
/// Closed on the partner side: the keys (proGres language names) are listed.
const CLOSED_KEYS: &str = "description = \"languages\"\nkeys = [\"Anyuak\", \"Nuer\"]\n[map]\n\"Anyuak\" = \"language1\"\n\"Nuer\" = \"language2\"\n";

/// (file name, case). The other file of the folder is the valid one.
fn cases() -> Vec<(&'static str, FileCase)> {
    let t = |find: &str, with: &str| {
        assert!(TABLE.contains(find), "TABLE lacks {find:?}");
        TABLE.replacen(find, with, 1)
    };
    let d = |find: &str, with: &str| {
        assert!(DEPLOYMENT.contains(find), "DEPLOYMENT lacks {find:?}");
        DEPLOYMENT.replacen(find, with, 1)
    };
    vec![
        (
            "languages.toml",
            FileCase::new(
                "table: unknown key",
                t("default =", "colour = \"x\"\ndefault ="),
                "colour",
                Some("colour"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: misspelt key (descripton)",
                t("description =", "descripton ="),
                "descripton",
                Some("descripton"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: wrong type (description is a number)",
                t("description = \"languages\"", "description = 5"),
                "description",
                Some("description"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: wrong type (a mapped value is a number)",
                t("\"Nuer\" = \"language2\"", "\"Nuer\" = 2"),
                "Nuer",
                Some("Nuer"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: wrong type (map is a string)",
                "description = \"x\"\nmap = \"Nuer\"\n",
                "map",
                Some("map ="),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: wrong type (default is a list)",
                t("default = \"language6\"", "default = [\"language6\"]"),
                "default",
                Some("default ="),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: missing key (description)",
                t("description = \"languages\"\n", ""),
                "description",
                Some("default"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: missing [map]",
                "description = \"x\"\n",
                "map",
                Some("description"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new("table: empty file", "", "description", None),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: bad TOML syntax (unclosed header)",
                t("[map]", "[map"),
                "map",
                Some("[map"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: bad TOML syntax (unterminated string)",
                t("\"Nuer\" = \"language2\"", "\"Nuer\" = \"language2"),
                "Nuer",
                Some("Nuer"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: duplicate key",
                t(
                    "\"Nuer\" = \"language2\"",
                    "\"Nuer\" = \"language2\"\n\"Nuer\" = \"language3\"",
                ),
                "Nuer",
                Some("language3"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: empty mapped value",
                t("\"Nuer\" = \"language2\"", "\"Nuer\" = \"\""),
                "Nuer",
                Some("Nuer"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: value outside `values`",
                CLOSED.replace("\"Nuer\" = \"language2\"", "\"Nuer\" = \"langauge2\""),
                "Nuer",
                Some("Nuer"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: key outside `keys` (a partner code mistyped)",
                CLOSED_KEYS.replace("\"Nuer\" = \"language2\"", "\"Neur\" = \"language2\""),
                "Neur",
                Some("Neur"),
            ),
        ),
        (
            "languages.toml",
            FileCase::new(
                "table: not UTF-8",
                not_utf8(&t("\"Nuer\" = \"language2\"", "\"Nuer\" = \"@@\"")),
                "Nuer",
                Some("Nuer"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: unknown key",
                d("design =", "colour = \"x\"\ndesign ="),
                "colour",
                Some("colour"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: unknown design",
                d("\"ping\"", "\"smoke-signals\""),
                "deployment.design",
                Some("design"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: empty country",
                d("\"Testland\"", "\"\""),
                "deployment.country",
                Some("country"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: wrong type (country is a number)",
                d("\"Testland\"", "7"),
                "country",
                Some("country"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: missing key (design)",
                d("design = \"ping\"\n", ""),
                "design",
                Some("[deployment]"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: unknown section",
                format!("{DEPLOYMENT}[shiping_processes]\nx = \"1\"\n"),
                "shiping_processes",
                Some("[shiping_processes]"),
            ),
        ),
        (
            "deployment.toml",
            FileCase::new(
                "deployment: unknown shipping process",
                format!("{DEPLOYMENT}[shipping_processes]\npending_referals = \"SHP-2747\"\n"),
                "pending_referals",
                Some("pending_referals"),
            ),
        ),
    ]
}

pub fn run() -> Vec<Row> {
    let mut rows = Vec::new();
    for (file_name, case) in cases() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("testland");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("deployment.toml"), DEPLOYMENT).unwrap();
        std::fs::write(dir.join("languages.toml"), TABLE).unwrap();
        let file = dir.join(file_name);
        std::fs::write(&file, &case.text).unwrap();
        let row = Row::new(
            SECTION,
            Kind::BadInput,
            case.name.clone(),
            expected(file_name, &case),
        );
        rows.push(match MappingSet::load_dir(&dir) {
            Ok(_) => row.observed("loaded without error", false),
            Err(e) => {
                let (pass, shown) = check(&e.to_string(), &file, &case);
                row.observed(shown, pass)
            }
        });
    }
    // Folder-level problems name the file (no line or key applies).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("testland");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("languages.toml"), TABLE).unwrap();
    type Setup = Box<dyn Fn(&std::path::Path)>;
    let folder_cases: Vec<(&str, Setup, &str)> = vec![
        (
            "folder: deployment.toml missing",
            Box::new(|_d: &std::path::Path| {}),
            "deployment.toml",
        ),
        (
            "folder: table file name not kebab-case",
            Box::new(|d: &std::path::Path| {
                std::fs::write(d.join("deployment.toml"), DEPLOYMENT).unwrap();
                std::fs::write(d.join("Languages_2.toml"), TABLE).unwrap();
            }),
            "Languages_2.toml",
        ),
        (
            "folder: a file that is not .toml",
            Box::new(|d: &std::path::Path| {
                let _ = std::fs::remove_file(d.join("Languages_2.toml"));
                std::fs::write(d.join("languages.json"), "{}").unwrap();
            }),
            "languages.json",
        ),
    ];
    for (name, setup, names) in folder_cases {
        setup(&dir);
        let row = Row::new(
            SECTION,
            Kind::BadInput,
            name,
            format!("error names {names}"),
        );
        rows.push(match MappingSet::load_dir(&dir) {
            Ok(_) => row.observed("loaded without error", false),
            Err(e) => {
                let text = e.to_string();
                let pass = text.contains(&dir.join(names).display().to_string());
                row.observed(text.replace(&dir.display().to_string(), "<dir>"), pass)
            }
        });
    }
    // Control: the valid folder loads.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("deployment.toml"), DEPLOYMENT).unwrap();
    std::fs::write(tmp.path().join("languages.toml"), TABLE).unwrap();
    std::fs::write(tmp.path().join("closed.toml"), CLOSED).unwrap();
    let ok = MappingSet::load_dir(tmp.path());
    rows.push(
        Row::new(
            SECTION,
            Kind::BadInput,
            "control: the unedited folder",
            "loads",
        )
        .observed(
            match &ok {
                Ok(_) => "loads".to_string(),
                Err(e) => e.to_string(),
            },
            ok.is_ok(),
        )
        .tried(0),
    );
    rows
}
