//! Job components of the `bridge:job` world written as WAT text, for tests
//! that need a job behaving in one exact way (trapping, looping, returning
//! 10 MiB, logging a record) that a JavaScript job cannot be made to do.
//!
//! A job's core module gets a bump allocator exported as `realloc`, its
//! data segments and its `describe`, `configure` and `run` bodies; the
//! component around it declares the world's types and lifts the three
//! functions. Results are laid out in memory by the test through [`Data`].

/// `n` as the escaped little-endian bytes of a WAT data string.
pub fn le(n: u32) -> String {
    esc(&n.to_le_bytes())
}

/// `bytes` escaped for a WAT data string.
pub fn esc(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The data segments of a job's core module.
#[derive(Debug, Default)]
pub struct Data(String);

impl Data {
    /// Places `bytes` (escaped, see [`le`] and [`esc`]) at address `at`.
    pub fn seg(&mut self, at: u32, bytes: impl AsRef<str>) {
        self.0
            .push_str(&format!("(data (i32.const {at}) \"{}\")\n", bytes.as_ref()));
    }

    /// The segments as WAT text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a job component imports.
#[derive(Debug, Clone, Copy)]
pub enum Imports<'a> {
    /// Component-level imports only (possibly none); the core module owns
    /// its memory.
    Own(&'a str),
    /// The `bridge:job/log` interface, whose `emit` the core module calls
    /// as `$emit`; memory lives in a module of its own so the lowered
    /// import can use it.
    Log,
}

/// A job component's parts.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub imports: Imports<'a>,
    /// Where the allocator starts handing out memory (above the data).
    pub heap_start: u32,
    /// Extra core-module globals.
    pub globals: &'a str,
    /// The data segments (see [`Data`]).
    pub data: &'a str,
    /// Address of `describe`'s `job-info`.
    pub describe_at: u32,
    /// Address of `configure`'s result.
    pub configure_at: u32,
    /// Locals and instructions of the core `run` function, which takes
    /// the flattened context and record (the record is locals 7 and 8) and
    /// returns the address of its result.
    pub run: &'a str,
}

const REALLOC: &str = r#"(func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
        (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (block $ok
        (br_if $ok (i32.le_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536))))
        (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16)) (i32.const 1)))))
      (local.get $p))"#;

const LOG_IMPORT: &str = r#"(core module $mem (memory (export "memory") 1))
  (core instance $memi (instantiate $mem))
  (alias core export $memi "memory" (core memory $memory))

  (import "bridge:job/log@0.2.0" (instance $log
    (type $level' (enum "debug" "info" "warn" "error"))
    (export "level" (type $level (eq $level')))
    (type $pair (tuple string string))
    (type $fields (list $pair))
    (export "emit" (func (param "level" $level) (param "message" string) (param "fields" $fields)))
  ))
  (alias export $log "emit" (func $emit))
  (core func $emit_core (canon lower (func $emit) (memory $memory)))
  (core instance $env (export "memory" (memory $memory)))
  (core instance $logc (export "emit" (func $emit_core)))"#;

const WORLD_TYPES: &str = r#"(type $field-error' (record (field "field" string) (field "reason" string)))
  (export $field-error "field-error" (type $field-error'))
  (type $unmapped-value' (record (field "table" string) (field "value" string)))
  (export $unmapped-value "unmapped-value" (type $unmapped-value'))
  (type $context' (record (field "flow" string) (field "run-id" string) (field "today" string) (field "dry-run" bool)))
  (export $context "context" (type $context'))
  (type $outcome' (variant (case "emit" (list u8)) (case "skip" string)))
  (export $outcome "outcome" (type $outcome'))
  (type $job-error' (variant (case "bad-input" $field-error) (case "unmapped" $unmapped-value) (case "fatal" string)))
  (export $job-error "job-error" (type $job-error'))
  (type $job-info' (record (field "name" string) (field "version" string) (field "flow" string) (field "tables" (list string))))
  (export $job-info "job-info" (type $job-info'))"#;

/// The component's WAT text; `wat::parse_str` turns it into bytes.
pub fn component_wat(job: &Job) -> String {
    let Job {
        imports,
        heap_start,
        globals,
        data,
        describe_at,
        configure_at,
        run,
    } = *job;
    let (before, memory_head, instance, memory) = match imports {
        Imports::Own(extra) => (
            extra.to_string(),
            r#"(memory (export "memory") 1)"#.to_string(),
            "(core instance $i (instantiate $m))",
            r#"(memory (core memory $i "memory"))"#,
        ),
        Imports::Log => (
            LOG_IMPORT.to_string(),
            r#"(import "env" "memory" (memory 1))
    (import "log" "emit" (func $emit (param i32 i32 i32 i32 i32)))"#
                .to_string(),
            r#"(core instance $i (instantiate $m (with "env" (instance $env)) (with "log" (instance $logc))))"#,
            "(memory $memory)",
        ),
    };
    let lift = |name: &str| {
        format!(
            r#"(canon lift (core func $i "{name}") {memory} (realloc (core func $i "realloc")))"#
        )
    };
    format!(
        r#"(component
  {before}

  (core module $m
    {memory_head}
    (global $bump (mut i32) (i32.const {heap_start}))
    {globals}
    {REALLOC}
    {data}
    (func (export "describe") (result i32) (i32.const {describe_at}))
    (func (export "configure") (param i32 i32) (result i32) (i32.const {configure_at}))
    (func (export "run") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      {run})
  )
  {instance}

  {WORLD_TYPES}

  (func $describe (result $job-info)
    {describe})
  (export "describe" (func $describe))
  (func $configure (param "mappings" string) (result (result (error $job-error)))
    {configure})
  (export "configure" (func $configure))
  (func $run (param "ctx" $context) (param "record" string) (result (result $outcome (error $job-error)))
    {run_lift})
  (export "run" (func $run))
)"#,
        describe = lift("describe"),
        configure = lift("configure"),
        run_lift = lift("run"),
    )
}

/// How many bytes the `o` record of [`test_job_wat`] emits.
pub const TEST_JOB_OUTPUT_BYTES: u32 = 10 * 1024 * 1024;

/// The test job (name `test-job`, version `1.0.0`, flow `test`) whose `run`
/// looks at the record's first byte: `b` traps, `l` loops forever, `m` grows
/// memory without bound, `e` returns a bad-input error on `record.id`, `j`
/// emits invalid JSON, `t` returns a fatal error, `o` emits
/// [`TEST_JOB_OUTPUT_BYTES`] of NULs; anything else emits `{"v":version}`.
/// `extra_imports` are component-level imports (to test refusal); `tables`
/// is the list the job declares in `describe`.
pub fn test_job_wat(version: u32, extra_imports: &str, tables: &[&str]) -> String {
    named_job_wat("test-job", "test", version, extra_imports, tables)
}

/// [`test_job_wat`] describing itself as job `name` (at most 20 bytes) of
/// flow `flow` (at most 10): a flow's own job or a variant of it.
pub fn named_job_wat(
    name: &str,
    flow: &str,
    version: u32,
    extra_imports: &str,
    tables: &[&str],
) -> String {
    assert!(name.len() <= 20 && flow.len() <= 10, "{name} / {flow}");
    let emit = format!("{{\"v\":{version}}}");
    let bad_json = "{not json";
    let thrown = "Error: thrown";
    let field = "record.id";
    let reason = "missing";
    // Static layout (all below 1024, where the bump allocator starts).
    let mut data = Data::default();
    let mut seg = |at: u32, bytes: String| data.seg(at, bytes);
    seg(100, esc(name.as_bytes()));
    seg(120, esc(b"1.0.0"));
    seg(130, esc(flow.as_bytes()));
    // tables: list<string> at 140 (8 bytes per element), names from 400.
    let mut at = 400u32;
    let mut elems = String::new();
    for t in tables {
        elems.push_str(&le(at));
        elems.push_str(&le(t.len() as u32));
        seg(at, esc(t.as_bytes()));
        at += 32;
    }
    if !elems.is_empty() {
        seg(140, elems);
    }
    // describe() -> job-info record at 200
    let info = [
        le(100),
        le(name.len() as u32),
        le(120),
        le(5),
        le(130),
        le(flow.len() as u32),
        le(140),
    ];
    seg(
        200,
        [&info[..], &[le(tables.len() as u32)]].concat().concat(),
    );
    // result<_, job-error> ok at 240
    seg(240, le(0));
    // result<outcome, job-error>: ok(emit(json)) at 260, json at 300
    seg(260, [le(0), le(0), le(300), le(emit.len() as u32)].concat());
    seg(300, esc(emit.as_bytes()));
    // err(bad-input({field, reason})) at 340, strings at 370/384
    let bad_input = [le(1), le(0), le(370), le(field.len() as u32), le(384)];
    seg(
        340,
        [&bad_input[..], &[le(reason.len() as u32)]]
            .concat()
            .concat(),
    );
    seg(370, esc(field.as_bytes()));
    seg(384, esc(reason.as_bytes()));
    // ok(emit("{not json")) at 700, text at 720
    seg(
        700,
        [le(0), le(0), le(720), le(bad_json.len() as u32)].concat(),
    );
    seg(720, esc(bad_json.as_bytes()));
    // err(fatal(thrown)) at 760, text at 780
    seg(
        760,
        [le(1), le(2), le(780), le(thrown.len() as u32)].concat(),
    );
    seg(780, esc(thrown.as_bytes()));
    // ok(emit(<NULs from 64 KiB>)) at 820
    seg(
        820,
        [le(0), le(0), le(65536), le(TEST_JOB_OUTPUT_BYTES)].concat(),
    );
    let pages = TEST_JOB_OUTPUT_BYTES / 65536 + 2;

    component_wat(&Job {
        imports: Imports::Own(extra_imports),
        heap_start: 1024,
        globals: "",
        data: data.as_str(),
        describe_at: 200,
        configure_at: 240,
        run: &format!(
            r#"(local $c i32)
      (local.set $c (i32.load8_u (local.get 7)))
      (if (i32.eq (local.get $c) (i32.const 98)) (then unreachable))
      (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $spin (br $spin))))
      (if (i32.eq (local.get $c) (i32.const 109))
        (then (loop $grow (drop (memory.grow (i32.const 16))) (br $grow))))
      (if (i32.eq (local.get $c) (i32.const 101)) (then (return (i32.const 340))))
      (if (i32.eq (local.get $c) (i32.const 106)) (then (return (i32.const 700))))
      (if (i32.eq (local.get $c) (i32.const 116)) (then (return (i32.const 760))))
      (if (i32.eq (local.get $c) (i32.const 111))
        (then
          (if (i32.lt_u (memory.size) (i32.const {pages}))
            (then (drop (memory.grow (i32.sub (i32.const {pages}) (memory.size))))))
          (return (i32.const 820))))
      (i32.const 260)"#
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_parse_as_components() {
        let mut data = Data::default();
        data.seg(100, esc(b"job"));
        data.seg(240, le(0));
        for imports in [Imports::Own(""), Imports::Log] {
            let text = component_wat(&Job {
                imports,
                heap_start: 1024,
                globals: "",
                data: data.as_str(),
                describe_at: 200,
                configure_at: 240,
                run: "(i32.const 260)",
            });
            let bytes = wat::parse_str(&text).expect("valid WAT");
            // Layer 1 in the preamble: a component, not a core module.
            assert_eq!(bytes[6..8], [1, 0], "{text}");
        }
    }

    #[test]
    fn the_test_job_parses_with_and_without_tables() {
        for tables in [&[][..], &["services", "sexes"][..]] {
            let text = test_job_wat(3, "", tables);
            wat::parse_str(&text).expect("valid WAT");
        }
    }
}
