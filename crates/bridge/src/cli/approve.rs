//! `bridge job approve` and the approval lines of `bridge job inspect`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use bridge_runtime::approvals::{Approval, Approvals};
use bridge_runtime::{content_hash, inspect_component};

/// Approve `component`: show what is approved, then append it to `file`.
/// A component the host would refuse, or one approved already, is not
/// approved.
pub async fn approve(
    component: &Path,
    by: &str,
    file: &Path,
    cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        bridge_runtime::job_text::is_code(by),
        "--by `{by}`: give an id (1 to 64 of letters, digits and _.:/#-), not a name"
    );
    let bytes =
        std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let runtime = super::job_runtime(cache_dir)?;
    let name = component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "job".to_string());
    // Only what the host accepts can be approved: the same checks as loading.
    let job = runtime.load_bytes(&name, &bytes).await.with_context(|| {
        format!(
            "{} is not approved: the host refuses it",
            component.display()
        )
    })?;
    let compiled = wasmtime::component::Component::new(runtime.engine(), &bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid component: {e:#}", component.display()))?;
    let imports = inspect_component(runtime.engine(), &compiled).imports;
    let approval = Approval {
        sha256: content_hash(&bytes),
        job: job.info.name.clone(),
        version: job.info.version.clone(),
        flow: job.info.flow.clone(),
        imports,
        approved_by: by.to_string(),
        approved_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    println!("approving {}:", component.display());
    println!("  sha256:      {}", approval.sha256);
    println!(
        "  job:         {} {} for flow {}",
        approval.job, approval.version, approval.flow
    );
    println!("  imports:     {}", approval.imports.join(", "));
    println!("  approved_by: {}", approval.approved_by);
    println!("  approved_at: {}", approval.approved_at);
    let all = Approvals::append(file, &approval)?;
    println!(
        "approved: added to {} ({} component{} approved)",
        file.display(),
        all.entries.len(),
        if all.entries.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `bridge job inspect --approvals FILE`: whether the component is approved.
pub fn print_approval(bytes: &[u8], file: &Path) -> anyhow::Result<()> {
    let approvals = Approvals::load(file)?;
    let hash = content_hash(bytes);
    match approvals.find(&hash) {
        Some(a) => println!(
            "approved: yes, by {} at {} (job {} {} in {})",
            a.approved_by,
            a.approved_at,
            a.job,
            a.version,
            file.display()
        ),
        None => println!("approved: no: sha256 {hash} is not in {}", file.display()),
    }
    Ok(())
}
