// Shared by the node tests: find jobs and fixtures, load a mapping folder the
// way the host does, run one record the way `bridge job run` reports it.
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseToml } from 'smol-toml';

export const jobsDir = dirname(dirname(fileURLToPath(import.meta.url)));
export const rootDir = dirname(jobsDir);

/** Fixture conventions (jobs/README.md). */
export const FIXTURE_DEFAULTS = { today: '2025-06-01', mappings: 'kenya-dadaab', runId: 'fixture' };

/** Log field keys the host keeps (crates/runtime/src/bindings.rs ALLOWED_LOG_FIELDS). */
export const ALLOWED_LOG_FIELDS = [
  'record_id', 'intervention_id', 'case_id', 'service_id', 'referral_id',
  'transaction_id', 'status', 'code', 'table', 'field', 'count',
];

const NOT_JOBS = new Set(['lib', 'node_modules', 'dist', 'test']);

export function jobNames() {
  return readdirSync(jobsDir)
    .filter((n) => !NOT_JOBS.has(n) && existsSync(join(jobsDir, n, 'index.js')))
    .sort();
}

/** [{ name, record, expected }] for jobs/<job>/fixtures/<name>.record.json + .expected.json. */
export function fixtures(job) {
  const dir = join(jobsDir, job, 'fixtures');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.record.json'))
    .sort()
    .map((f) => {
      const name = f.slice(0, -'.record.json'.length);
      const expectedPath = join(dir, `${name}.expected.json`);
      return {
        name,
        recordPath: join(dir, f),
        expectedPath,
        record: JSON.parse(readFileSync(join(dir, f), 'utf8')),
        expected: existsSync(expectedPath) ? JSON.parse(readFileSync(expectedPath, 'utf8')) : undefined,
      };
    });
}

/** Optional jobs/<job>/fixtures/fixtures.json overriding FIXTURE_DEFAULTS (e.g. another mapping folder). */
export function fixtureSettings(job) {
  const p = join(jobsDir, job, 'fixtures', 'fixtures.json');
  return { ...FIXTURE_DEFAULTS, ...(existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : {}) };
}

const SHIPPING_KEYS = [
  'pending_referrals', 'intervention_details', 'transfer_status', 'referral_ingestion',
  'decision_list', 'decision_details', 'decision_synced',
];

/**
 * The JSON the host hands to configure() for mappings/<country>/ (mirrors
 * crates/mappings: deployment.toml's [deployment] and [shipping_processes],
 * every other .toml a table named by its file stem; .md and dotfiles ignored;
 * sharing.toml is the host's own declaration, never handed to a job).
 */
/** `"CHANGE-ME: <example>"` reads as its example, as the host gives it to jobs when placeholders are allowed. */
const PLACEHOLDER_MARK = 'CHANGE-ME:';
const unmark = (v) => {
  if (typeof v === 'string' && v.trimStart().startsWith(PLACEHOLDER_MARK)) {
    return v.trimStart().slice(PLACEHOLDER_MARK.length).trim();
  }
  if (Array.isArray(v)) return v.map(unmark);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unmark(x)]));
  return v;
};

export function loadMappings(country) {
  const dir = join(rootDir, 'mappings', country);
  const out = { deployment: null, shipping_processes: null, tables: {} };
  for (const file of readdirSync(dir).sort()) {
    const path = join(dir, file);
    if (file.startsWith('.') || file.endsWith('.md') || !statSync(path).isFile()) continue;
    if (!file.endsWith('.toml')) throw new Error(`${path}: a mapping folder holds only .toml and .md files`);
    if (file === 'sharing.toml') continue;
    const doc = parseToml(readFileSync(path, 'utf8'));
    if (file === 'deployment.toml') {
      out.deployment = unmark(doc.deployment);
      const sp = doc.shipping_processes ?? {};
      out.shipping_processes = Object.fromEntries(SHIPPING_KEYS.map((k) => [k, sp[k] ?? null]));
    } else {
      const table = { description: doc.description, map: unmark(doc.map ?? {}) };
      if (doc.default !== undefined) table.default = unmark(doc.default);
      if (doc.keys !== undefined) table.keys = doc.keys;
      if (doc.values !== undefined) table.values = doc.values;
      for (const k of Object.keys(doc)) {
        if (!['description', 'default', 'keys', 'values', 'map'].includes(k)) throw new Error(`${path}: unknown key ${k}`);
      }
      out.tables[file.slice(0, -'.toml'.length)] = table;
    }
  }
  if (!out.deployment) throw new Error(`${dir}: deployment.toml is missing`);
  return out;
}

const isStr = (v) => typeof v === 'string';

/**
 * Call a job's run() and report the result as `bridge job run` does. Shapes
 * that the component's bindings would reject (and so trap on) are reported as
 * kind "trap", like the host.
 */
export function runReport(job, ctx, record) {
  let result;
  try {
    result = job.run(ctx, JSON.stringify(record));
  } catch (e) {
    const v = e?.val;
    if (e?.tag === 'bad-input' && isStr(v?.field) && isStr(v?.reason)) {
      return { outcome: 'error', kind: 'bad-input', field: v.field, reason: v.reason };
    }
    if (e?.tag === 'unmapped' && isStr(v?.table) && isStr(v?.value)) {
      return { outcome: 'error', kind: 'unmapped', table: v.table, value: v.value };
    }
    if (e?.tag === 'fatal' && isStr(v)) return { outcome: 'error', kind: 'fatal', message: v };
    return { outcome: 'error', kind: 'trap', message: `run threw something that is not a job-error: ${e?.stack ?? e}` };
  }
  if (result?.tag === 'emit' && result.val instanceof Uint8Array) {
    let payload;
    try {
      payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(result.val));
    } catch {
      return { outcome: 'error', kind: 'trap', message: 'emit payload is not valid JSON' };
    }
    return { outcome: 'emit', payload };
  }
  if (result?.tag === 'skip' && isStr(result.val)) return { outcome: 'skip', reason: result.val };
  return { outcome: 'error', kind: 'trap', message: `run returned something that is not an outcome: ${JSON.stringify(result)}` };
}
