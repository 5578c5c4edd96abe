// defineJob: the WIT exports (describe, configure, run, run-batch) around a job's
// own mapping function, so a job file holds only its mapping logic.
//
//   import { defineJob, emit } from '../lib/job.js';
//   export const { describe, configure, run, runBatch } = defineJob({
//     name: 'my-job', version: '0.1.0', flow: 'ping-1.1',
//     tables: ['inbound-sex'],            // checked in configure()
//     setup(config) { … return settings },   // optional: validate deployment values once
//     map(record, { ctx, tables, deployment, settings, log }) { … return emit({…}); },
//   });
//
// - `map` returns emit(payload) or skip(code, text), or throws a job error
//   from ./errors.js. Any other exception becomes a `fatal` error (a plain JS
//   Error escaping a component export would trap the instance).
// - `configure` receives the host's JSON:
//   { "deployment": {…}, "shipping_processes": {…}, "tables": { "<name>": { description, default?, map } } }
import { emit as hostLog } from 'bridge:job/log@0.2.0';
import { badInput, fatal, isJobError } from './errors.js';

const LEVELS = new Set(['debug', 'info', 'warn', 'error']);

/** Log field naming the record's position during `run-batch` (wit/job.wit). */
export const BATCH_INDEX_FIELD = 'batch_index';
// Position of the record being mapped by runBatch, -1 outside a batch.
let batchIndex = -1;

/** Structured log line; `fields` is an object of ids/codes only (never personal data). */
export function log(level, message, fields = {}) {
  const lvl = LEVELS.has(level) ? level : 'info';
  const pairs = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => [String(k), String(v)]);
  // Within `run-batch` the host knows the batch's record ids, not which one
  // is being mapped: the position tells it (the host takes the field out).
  if (batchIndex >= 0) pairs.push([BATCH_INDEX_FIELD, String(batchIndex)]);
  hostLog(lvl, String(message), pairs);
}

const UTF8 = new TextEncoder();

// Payloads are encoded into one scratch buffer, each record of a call at its
// own offset; every call starts again at 0 (the bindings have copied the
// previous call's bytes out by then). A new Uint8Array per record was memory
// the engine frees only in a full collection, which a job's instance hardly
// ever runs: measured, an instance grew by about 1.5 KB a record for it
// (85 MB after 30,000 WF 1.1 records, 41 MB with the scratch buffer).
const SCRATCH_BYTES = 64 * 1024;
let scratch = new Uint8Array(SCRATCH_BYTES);
let scratchUsed = 0;

/** A new call: the scratch buffer's bytes are free again. */
function newCall() {
  scratchUsed = 0;
}

/** `json` as UTF-8 bytes: a view of the scratch buffer, valid until the next call. */
function encodePayload(json) {
  // UTF-8 takes at most 3 bytes for each UTF-16 code unit.
  const most = json.length * 3;
  if (scratch.length - scratchUsed < most) {
    // The views handed out earlier in this call keep the old buffer alive;
    // doubling settles on a buffer that holds a whole call.
    scratch = new Uint8Array(Math.max(scratch.length * 2, most));
    scratchUsed = 0;
  }
  const { written } = UTF8.encodeInto(json, scratch.subarray(scratchUsed));
  const bytes = scratch.subarray(scratchUsed, scratchUsed + written);
  scratchUsed += written;
  return bytes;
}

/**
 * Outcome: send `payload` (any JSON value) to the target. The contract takes
 * the JSON as UTF-8 bytes: the component's bindings copy bytes in one go but
 * walk a returned string character by character. The bytes are valid until
 * the job's next call (the host has them by then).
 */
export function emit(payload) {
  return { tag: 'emit', val: encodePayload(JSON.stringify(payload)) };
}

/** Outcome: deliberately not sent. `code` is short and machine-readable; `text` has no personal data. */
export function skip(code, text) {
  return { tag: 'skip', val: text ? `${code}: ${text}` : String(code) };
}

function asFatal(e, where) {
  if (isJobError(e)) return e;
  const kind = e && typeof e === 'object' && typeof e.name === 'string' ? e.name : typeof e;
  const message = e && typeof e === 'object' && typeof e.message === 'string' ? e.message : '';
  return fatal(`${where}: internal ${kind}${message ? `: ${message}` : ''}`.slice(0, 300));
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

export function defineJob(spec) {
  const { name, version, flow, tables = [], setup, map } = spec;
  if (typeof map !== 'function') throw new Error(`defineJob(${name}): map(record, env) is required`);
  let env = null;

  function describe() {
    return { name, version, flow, tables: [...tables] };
  }

  function configure(mappingsJson) {
    try {
      let config;
      try {
        config = JSON.parse(mappingsJson);
      } catch {
        throw fatal('mappings: not valid JSON');
      }
      if (!isObject(config) || !isObject(config.tables)) throw fatal('mappings: expected an object with tables');
      const deployment = isObject(config.deployment) ? config.deployment : {};
      const missing = tables.filter((t) => !isObject(config.tables[t]) || !isObject(config.tables[t].map));
      if (missing.length) throw fatal(`mappings: missing table${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`);
      const settings = setup ? setup({ deployment, shippingProcesses: config.shipping_processes ?? {}, tables: config.tables }) : undefined;
      env = { ctx: null, log, tables: config.tables, deployment, settings };
    } catch (e) {
      throw asFatal(e, 'configure');
    }
  }

  // One record: the outcome, or throws a job error (never anything else).
  function runOne(recordJson) {
    try {
      if (!env) throw fatal('run called before configure');
      let record;
      try {
        record = JSON.parse(recordJson);
      } catch {
        throw badInput('record', 'record is not valid JSON');
      }
      const outcome = map(record, env);
      const valid = outcome && (outcome.tag === 'emit' ? outcome.val instanceof Uint8Array : outcome.tag === 'skip' && typeof outcome.val === 'string');
      if (!valid) {
        throw fatal('map must return emit or skip');
      }
      return outcome;
    } catch (e) {
      throw asFatal(e, 'run');
    }
  }

  function run(ctx, recordJson) {
    newCall();
    // One env object for every call (no copy per record); map() reads ctx from it.
    if (env) env.ctx = ctx;
    return runOne(recordJson);
  }

  // The WIT `run-batch`: each record's result as the bindings lower a
  // `result<outcome, job-error>` (a thrown job error becomes `err`).
  function runBatch(ctx, records) {
    newCall();
    if (env) env.ctx = ctx;
    const results = new Array(records.length);
    for (let i = 0; i < records.length; i++) {
      batchIndex = i;
      try {
        results[i] = { tag: 'ok', val: runOne(records[i]) };
      } catch (e) {
        results[i] = { tag: 'err', val: e };
      }
    }
    batchIndex = -1;
    return results;
  }

  return { describe, configure, run, runBatch };
}
