//! Log output: one tracing layer that writes human or JSON lines and keeps
//! only allow-listed fields ([`super::ALLOWED_FIELDS`]).
//!
//! Every line carries the fields of its enclosing spans, outermost first, so
//! a line inside `run{flow, run}` → `record{record}` names the flow, the run
//! and the record.
//!
//! Human (default; colours when stderr is a terminal):
//!
//! ```text
//! 2025-06-01T10:00:00.123456Z  INFO run{flow=ping-1.1 run=7f3c}:record{record=A-1}: bridge::flows::x: record delivered outcome=created
//! ```
//!
//! JSON (`--log-format json`, one object per line). Span fields and event
//! fields are flattened into top-level keys (an inner span or the event wins
//! over an outer span with the same key); `spans` lists the span names,
//! outermost first:
//!
//! ```text
//! {"timestamp":"…","level":"INFO","target":"bridge::flows::x","message":"record delivered","flow":"ping-1.1","run":"7f3c","record":"A-1","outcome":"created","spans":["run","record"]}
//! ```
//!
//! A field named like one of the line's own keys (`timestamp`, `level`,
//! `target`, `message`, `spans`) is written as `field.<name>`.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::str::FromStr;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::is_allowed;

/// Output format of the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format `{other}`: expected `human` or `json`"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Human => "human",
            Self::Json => "json",
        })
    }
}

/// Install the process-wide subscriber: `filter` in tracing env-filter syntax
/// (an invalid filter falls back to `warn`), lines on stderr. A second call
/// (or a subscriber already set) is a no-op.
pub fn init(filter: &str, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_new(quiet_compiler(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = format == LogFormat::Human && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = make_layer(format, std::io::stderr).with_ansi(ansi);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Log targets of wasmtime's compiler. At debug and trace they describe every
/// instruction of a job being compiled: megabytes for one job, on the first
/// start after an upgrade. `--log trace` asks for the bridge's own traces, so
/// these stay at `info` unless the filter names them.
const COMPILER_TARGETS: &[&str] = &[
    "cranelift",
    "regalloc2",
    "wasmtime_internal_cranelift",
    "wasmtime_environ",
];

/// `filter` with the compiler's targets at `info` where it does not name them.
fn quiet_compiler(filter: &str) -> String {
    let mut out = filter.to_string();
    for target in COMPILER_TARGETS {
        if !filter.contains(target) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(target);
            out.push_str("=info");
        }
    }
    out
}

/// The scrubbing log layer writing to `writer`; tests pass a buffer.
pub fn make_layer<W>(format: LogFormat, writer: W) -> ScrubLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    ScrubLayer {
        format,
        writer,
        ansi: false,
    }
}

/// See the module docs; built by [`make_layer`].
pub struct ScrubLayer<W> {
    format: LogFormat,
    writer: W,
    ansi: bool,
}

impl<W> ScrubLayer<W> {
    /// Colour the level (human format only).
    pub fn with_ansi(mut self, ansi: bool) -> Self {
        self.ansi = ansi;
        self
    }
}

/// A kept field value.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Value {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::I64(n) => (*n).into(),
            Value::U64(n) => (*n).into(),
            Value::F64(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(n.to_string())),
            Value::Bool(b) => (*b).into(),
        }
    }

    fn write_human(&self, out: &mut String) {
        match self {
            Value::Str(s) if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"') => {
                let _ = write!(out, "{s:?}");
            }
            Value::Str(s) => out.push_str(s),
            Value::I64(n) => {
                let _ = write!(out, "{n}");
            }
            Value::U64(n) => {
                let _ = write!(out, "{n}");
            }
            Value::F64(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
        }
    }
}

type Fields = Vec<(&'static str, Value)>;

/// Allow-listed fields of one span, kept in its extensions.
struct SpanFields(Fields);

/// Collects allow-listed fields; the message separately.
#[derive(Default)]
struct Collector {
    fields: Fields,
    message: Option<String>,
    /// `log.target` of an event bridged from the `log` crate.
    log_target: Option<String>,
}

impl Collector {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                Value::Str(s) => s,
                other => {
                    let mut s = String::new();
                    other.write_human(&mut s);
                    s
                }
            });
        } else if name == "log.target" {
            if let Value::Str(s) = value {
                self.log_target = Some(s);
            }
        } else if is_allowed(name) {
            // A field recorded again (span `record`) replaces the old value.
            if let Some(slot) = self.fields.iter_mut().find(|(n, _)| *n == name) {
                slot.1 = value;
            } else {
                self.fields.push((name, value));
            }
        }
    }
}

impl Visit for Collector {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formatting a forbidden value would be wasted work: skip it early.
        if field.name() == "message" || field.name() == "log.target" || is_allowed(field.name()) {
            self.put(field, Value::Str(format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_string()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}

impl<S, W> Layer<S> for ScrubLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut c = Collector::default();
        attrs.record(&mut c);
        span.extensions_mut().insert(SpanFields(c.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let old = ext.remove::<SpanFields>().map(|f| f.0).unwrap_or_default();
        let mut c = Collector {
            fields: old,
            ..Collector::default()
        };
        values.record(&mut c);
        ext.insert(SpanFields(c.fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut c = Collector::default();
        event.record(&mut c);
        let meta = event.metadata();
        let mut spans: Vec<(&'static str, Fields)> = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                let fields = span
                    .extensions()
                    .get::<SpanFields>()
                    .map(|f| f.0.clone())
                    .unwrap_or_default();
                spans.push((span.name(), fields));
            }
        }
        let line = Line {
            level: *meta.level(),
            target: c.log_target.as_deref().unwrap_or(meta.target()),
            message: c.message.as_deref().unwrap_or(""),
            spans: &spans,
            fields: &c.fields,
        };
        let mut text = match self.format {
            LogFormat::Human => line.human(self.ansi),
            LogFormat::Json => line.json(),
        };
        text.push('\n');
        let mut writer = self.writer.make_writer_for(meta);
        let _ = writer.write_all(text.as_bytes());
    }
}

struct Line<'a> {
    level: Level,
    target: &'a str,
    message: &'a str,
    spans: &'a [(&'static str, Fields)],
    fields: &'a Fields,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

const RESERVED: &[&str] = &["timestamp", "level", "target", "message", "spans"];

fn json_key(name: &str) -> String {
    if RESERVED.contains(&name) {
        format!("field.{name}")
    } else {
        name.to_string()
    }
}

impl Line<'_> {
    fn human(&self, ansi: bool) -> String {
        let mut out = now();
        let level = match self.level {
            Level::ERROR => ("ERROR", "\x1b[31m"),
            Level::WARN => (" WARN", "\x1b[33m"),
            Level::INFO => (" INFO", "\x1b[32m"),
            Level::DEBUG => ("DEBUG", "\x1b[34m"),
            Level::TRACE => ("TRACE", "\x1b[35m"),
        };
        out.push(' ');
        if ansi {
            let _ = write!(out, "{}{}\x1b[0m ", level.1, level.0);
        } else {
            let _ = write!(out, "{} ", level.0);
        }
        for (name, fields) in self.spans {
            out.push_str(name);
            if !fields.is_empty() {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push('=');
                    v.write_human(&mut out);
                }
                out.push('}');
            }
            out.push(':');
        }
        if !self.spans.is_empty() {
            out.push(' ');
        }
        out.push_str(self.target);
        out.push_str(": ");
        out.push_str(self.message);
        for (k, v) in self.fields {
            out.push(' ');
            out.push_str(k);
            out.push('=');
            v.write_human(&mut out);
        }
        // One event, one line: newlines inside a message or value are escaped.
        if out.contains('\n') || out.contains('\r') {
            out = out.replace('\r', "\\r").replace('\n', "\\n");
        }
        out
    }

    fn json(&self) -> String {
        let mut map = serde_json::Map::new();
        map.insert("timestamp".into(), now().into());
        map.insert("level".into(), self.level.as_str().into());
        map.insert("target".into(), self.target.into());
        map.insert("message".into(), self.message.into());
        for (_, fields) in self.spans {
            for (k, v) in fields {
                map.insert(json_key(k), v.to_json());
            }
        }
        for (k, v) in self.fields {
            map.insert(json_key(k), v.to_json());
        }
        map.insert(
            "spans".into(),
            self.spans
                .iter()
                .map(|(n, _)| serde_json::Value::from(*n))
                .collect::<Vec<_>>()
                .into(),
        );
        serde_json::Value::Object(map).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_compiler_stays_at_info_unless_named() {
        let f = quiet_compiler("trace");
        assert!(f.starts_with("trace,"));
        assert!(f.contains("cranelift=info") && f.contains("regalloc2=info"));
        let named = quiet_compiler("warn,regalloc2=trace");
        assert!(named.contains("regalloc2=trace") && !named.contains("regalloc2=info"));
        // Every result is a valid filter.
        for f in ["", "debug", "bridge=debug,warn"] {
            tracing_subscriber::EnvFilter::try_new(quiet_compiler(f)).unwrap();
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let sub = tracing_subscriber::registry().with(make_layer(format, buf.clone()));
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn parses_formats() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("Human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn recorded_span_fields_show_and_forbidden_ones_do_not() {
        let out = capture(LogFormat::Json, || {
            let span = tracing::info_span!(
                "call",
                endpoint = "cases",
                status = tracing::field::Empty,
                address = tracing::field::Empty
            );
            span.record("status", 200u64);
            span.record("address", "12 Hidden Street");
            let _e = span.enter();
            tracing::info!(target = "T-9", "done");
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["endpoint"], "cases");
        assert_eq!(v["field.target"], "T-9");
        assert!(!out.contains("Hidden"), "{out}");
    }

    #[test]
    fn human_lines_stay_one_line() {
        let out = capture(LogFormat::Human, || {
            tracing::warn!(error = "first\nsecond", "broken");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("WARN") && out.contains("error=\"first\\nsecond\""),
            "{out}"
        );
    }
}
