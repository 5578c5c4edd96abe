//! Deny-by-default import policy, and the report auditors read
//! (`bridge job inspect`).

use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The only imports a job component may have: the structured log and the
/// type-only interface of the contract. No WASI of any kind.
pub const ALLOWED_IMPORTS: &[&str] = &["bridge:job/log@0.2.0", "bridge:job/types@0.2.0"];

/// How the allowed imports are named in a refusal: with a hint to rebuild when
/// `import` is another version of this contract (a job built for an older host).
pub fn allowed_imports_text(import: &str) -> String {
    let allowed = ALLOWED_IMPORTS.join(", ");
    let other_version = import.starts_with("bridge:job/")
        && !ALLOWED_IMPORTS.contains(&import)
        && ALLOWED_IMPORTS
            .iter()
            .any(|a| a.split('@').next() == import.split('@').next());
    if other_version {
        format!("{allowed} (it was built against another version of the job contract wit/job.wit: rebuild it with `node jobs/build.mjs`)")
    } else {
        allowed
    }
}

/// The exports the host calls.
pub const REQUIRED_EXPORTS: &[&str] = &["describe", "configure", "run"];

/// What a component imports and exports, and whether the host accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentReport {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Imports outside [`ALLOWED_IMPORTS`].
    pub forbidden_imports: Vec<String>,
    /// Required exports that are absent.
    pub missing_exports: Vec<String>,
}

impl ComponentReport {
    /// Whether the import and export *names* are the host's. Not the
    /// verdict: an allowed import may still declare what the host does not
    /// provide. `JobRuntime::link` (used by loading and `bridge job inspect`)
    /// decides.
    pub fn names_allowed(&self) -> bool {
        self.forbidden_imports.is_empty() && self.missing_exports.is_empty()
    }
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

pub fn inspect_component(engine: &Engine, component: &Component) -> ComponentReport {
    let ty = component.component_type();
    let mut imports = Vec::new();
    let mut forbidden_imports = Vec::new();
    for (name, ext) in ty.imports(engine) {
        imports.push(format!("{name} ({})", kind(&ext.ty)));
        if !ALLOWED_IMPORTS.contains(&name) {
            forbidden_imports.push(name.to_string());
        }
    }
    let mut exports = Vec::new();
    let mut names = Vec::new();
    for (name, ext) in ty.exports(engine) {
        exports.push(format!("{name} ({})", kind(&ext.ty)));
        names.push(name.to_string());
    }
    let missing_exports = REQUIRED_EXPORTS
        .iter()
        .filter(|r| !names.iter().any(|n| n == *r))
        .map(|r| r.to_string())
        .collect();
    ComponentReport {
        imports,
        exports,
        forbidden_imports,
        missing_exports,
    }
}
