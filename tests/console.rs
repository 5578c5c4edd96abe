//! The operator console in a real browser (issue 17 §1): headless Chromium
//! driven through chromedriver (Debian's `chromium` and `chromium-driver`;
//! `.ci/run` installs them), against `bridge run` on the simulators.
//!
//! An operator logs in, finds a record that failed on a mapping gap in the
//! dead letter with its reason, the mapping is fixed (hot reload), the
//! operator presses Replay and sees the record delivered. A viewer sees no
//! Replay button and is refused a replay; a forged form is refused; wrong
//! passwords are rate-limited. Screenshots of the main pages are taken;
//! with `BRIDGE_UPDATE_SCREENSHOTS=1` they replace docs/operator/console/.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bridge_demo::scenario::Simulators;
use bridge_runtime::toolchain::ProjectDirs;
use bridge_sim::people::PeopleGenerator;
use bridge_sim::ping::SimIntervention;
use bridge_testkit::cli::{sigterm, Streams};
use fantoccini::{Client, ClientBuilder, Locator};

const PASSWORD: &str = "correct horse battery staple";
const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdef";

fn project() -> ProjectDirs {
    let project = ProjectDirs::locate().expect("project folder");
    project
        .build_jobs(&["ping-1.1".to_string()])
        .expect("jobs build");
    project
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `bridge console hash-password`, as an operator makes an account.
fn password_hash() -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["console", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    hash
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromedriver runs (Debian packages `chromium` and `chromium-driver`; .ci/run installs them)",
        );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1360,900", "--no-first-run"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Load `url` until its page holds `text` (the service works in the
/// background); the page's HTML.
async fn until_page_has(client: &Client, url: &str, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        client.goto(url).await.unwrap();
        let html = client.source().await.unwrap();
        if html.contains(text) {
            return html;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never showed `{text}`:\n{html}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

fn screenshot_dir(tmp: &Path) -> PathBuf {
    if std::env::var_os("BRIDGE_UPDATE_SCREENSHOTS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/operator/console");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    } else {
        let dir = tmp.join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

async fn login(client: &Client, base: &str, name: &str, password: &str) {
    client.goto(&format!("{base}/login")).await.unwrap();
    client
        .find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys(name)
        .await
        .unwrap();
    client
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    submit(client, "form.login button").await;
}

/// Click the button `css` and wait for the answer's page (a click may
/// return before the new page loads).
async fn submit(client: &Client, css: &str) {
    let before = client.source().await.unwrap();
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.source().await.unwrap() == before {
        assert!(Instant::now() < deadline, "`{css}` was not answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_failed_record_after_a_mapping_fix_in_a_real_browser() {
    let project = project();
    let sims = Simulators::start_loopback().await.unwrap();
    // A referral whose sex code the country's table lacks: held as unmapped.
    let mut person = PeopleGenerator::new(4717).person();
    person.sex_code = 125_080_001;
    let referral = SimIntervention::for_person(person.clone(), 9171);
    sims.ping_sim().add_intervention(referral.clone());

    let tmp = tempfile::tempdir().unwrap();
    let mappings = tmp.path().join("mappings");
    copy_dir(&project.mappings("kenya-dadaab"), &mappings);
    let table = mappings.join("inbound-sex.toml");
    let full = std::fs::read_to_string(&table).unwrap();
    let male = "\"125080001\" = \"male\"\n";
    assert!(full.contains(male));
    std::fs::write(&table, full.replace(male, "")).unwrap();

    let console_port = free_port();
    let config = tmp.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "{}reload_secs = 1\n\n[schedule]\n\"ping-1.1\" = \"*/2 * * * * *\"\n\n[delivery]\nmax_attempts = 1\nmax_held_runs = 1\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[console]\nlisten = \"127.0.0.1:{console_port}\"\nlogin_failures = 3\n\n[[console.accounts]]\nname = \"amina.k\"\nrole = \"operator\"\npassword_hash = \"{hash}\"\n\n[[console.accounts]]\nname = \"monitoring\"\nrole = \"viewer\"\ntoken = {{ env = \"BRIDGE_CONSOLE_VIEWER_TOKEN\" }}\n",
            sims.config_toml(&project.jobs_dist(), &mappings),
            hash = password_hash(),
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["config", "check"])
        .arg(&config)
        .envs(sims.secret_env())
        .env("BRIDGE_CONSOLE_VIEWER_TOKEN", VIEWER_TOKEN)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["run", "--init", "--config"])
        .arg(&config)
        .envs(sims.secret_env())
        .env("BRIDGE_CONSOLE_VIEWER_TOKEN", VIEWER_TOKEN)
        .env_remove("BRIDGE_LOG")
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let streams = Streams::read(&mut child);
    let base = tokio::task::block_in_place(|| {
        streams.wait_for("console listening on ", Duration::from_secs(180))
    })
    .expect("the console listens")
    .trim_end_matches('/')
    .to_string();
    assert_eq!(base, format!("http://127.0.0.1:{console_port}"));

    let driver = chromedriver();
    let client = browser(&driver).await;
    let shots = screenshot_dir(tmp.path());

    // Not logged in: every page leads to the login form.
    client.goto(&format!("{base}/attention")).await.unwrap();
    assert!(client.current_url().await.unwrap().path() == "/login");
    login(&client, &base, "amina.k", "not the password").await;
    let html = client.source().await.unwrap();
    assert!(html.contains("Wrong account name or password."), "{html}");
    screenshot(&client, &shots, "login").await;

    login(&client, &base, "amina.k", PASSWORD).await;
    let html = client.source().await.unwrap();
    assert!(
        html.contains("amina.k (operator)"),
        "not logged in:\n{html}"
    );

    // The record fails on the gap and, held once, moves to the dead letter.
    let html = until_page_has(
        &client,
        &format!("{base}/attention"),
        ">Replay</button>",
        Duration::from_secs(120),
    )
    .await;
    assert!(
        html.contains(&referral.lpinterventionid) || html.contains(&referral.intervention_number),
        "{html}"
    );
    assert!(
        html.contains("unmapped"),
        "the reason names the gap:\n{html}"
    );
    assert!(
        html.contains("inbound-sex"),
        "the reason names the table:\n{html}"
    );
    for term in person.personal_data() {
        assert!(!html.contains(term), "personal data `{term}` on the page");
    }
    screenshot(&client, &shots, "attention").await;
    client.goto(&format!("{base}/")).await.unwrap();
    let html = client.source().await.unwrap();
    assert!(
        html.contains("ping-1.1") && html.contains("*/2 * * * * *"),
        "{html}"
    );
    screenshot(&client, &shots, "flows").await;
    client.goto(&format!("{base}/runs")).await.unwrap();
    screenshot(&client, &shots, "runs").await;
    client.goto(&format!("{base}/jobs")).await.unwrap();
    let html = client.source().await.unwrap();
    assert!(html.contains("ping-1.1"), "{html}");
    screenshot(&client, &shots, "jobs").await;
    assert_eq!(
        sims.primero_sim()
            .find_by_individual_no(&person.progres_id)
            .len(),
        0
    );

    // A viewer (token) sees the entry without a Replay button and is refused one.
    let http = reqwest::Client::new();
    let viewer_page = http
        .get(format!("{base}/attention"))
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(viewer_page.status(), 200);
    let viewer_html = viewer_page.text().await.unwrap();
    assert!(
        viewer_html.contains("an operator replays it"),
        "{viewer_html}"
    );
    assert!(!viewer_html.contains(">Replay</button>"));
    let entry: String = html_entry_id(
        &until_page_has(
            &client,
            &format!("{base}/attention"),
            ">Replay</button>",
            Duration::from_secs(5),
        )
        .await,
    );
    let refused = http
        .post(format!("{base}/dead-letter/{entry}/replay"))
        .bearer_auth(VIEWER_TOKEN)
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // A forged form (no session cookie, or a wrong CSRF token) changes nothing.
    let forged = http
        .post(format!("{base}/dead-letter/{entry}/replay"))
        .form(&[("csrf", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // The mapping fix: the table gets the code back; hot reload takes it.
    std::fs::write(&table, &full).unwrap();
    until_page_has(
        &client,
        &format!("{base}/jobs"),
        &bridge_mappings::MappingSet::load_dir(&mappings)
            .unwrap()
            .content_hash,
        Duration::from_secs(30),
    )
    .await;

    // Replay from the button: the run page says the record was created.
    client.goto(&format!("{base}/attention")).await.unwrap();
    submit(&client, &format!("#dead-letter-{entry} button")).await;
    let html = client.source().await.unwrap();
    assert!(
        html.contains(&format!("Dead-letter entry {entry} was replayed")),
        "{html}"
    );
    assert!(html.contains(">created</span>"), "not delivered:\n{html}");
    screenshot(&client, &shots, "replayed-run").await;
    let cases = sims.primero_sim().find_by_individual_no(&person.progres_id);
    assert_eq!(cases.len(), 1, "exactly one case after the replay");
    let html = until_page_has(
        &client,
        &format!("{base}/attention"),
        "The dead letter is empty.",
        Duration::from_secs(10),
    )
    .await;
    assert!(!html.contains(">Replay</button>"));

    // Logged out: the session cookie no longer opens a page.
    submit(&client, "form.account button").await;
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/login");

    // Wrong passwords: after `login_failures`, the form says to wait.
    // (One wrong password from this address came before.)
    let mut refused_after = None;
    for guess in 1..=3 {
        login(&client, &base, "amina.k", "guessing").await;
        if client
            .source()
            .await
            .unwrap()
            .contains("Too many failed logins")
        {
            refused_after = Some(guess);
            break;
        }
    }
    assert_eq!(
        refused_after,
        Some(3),
        "the third failure from this address is refused"
    );
    // Refused without a look at the password, the right one included.
    login(&client, &base, "amina.k", PASSWORD).await;
    let html = client.source().await.unwrap();
    assert!(html.contains("Too many failed logins"), "{html}");
    client.close().await.unwrap();

    sigterm(child.id());
    let status = child.wait().unwrap();
    let (_, stderr) = streams.finish();
    assert!(status.success(), "{stderr}");
    // Every operator action is in the log with the account name.
    for action in ["action=login", "action=replay", "action=logout"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(action) && l.contains("amina.k")),
            "no {action} line with the account:\n{stderr}"
        );
    }
    for term in person.personal_data() {
        assert!(!stderr.contains(term), "personal data `{term}` in the log");
    }
}

/// The id of the first dead-letter entry on the attention page.
fn html_entry_id(html: &str) -> String {
    let start = html.find("id=\"dead-letter-").expect("an entry") + "id=\"dead-letter-".len();
    html[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}
