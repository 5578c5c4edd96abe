// The OpenFn side of `bridge bench` (bench/openfn/): run a bridge job's
// mapping code on @openfn/runtime, the way an OpenFn worker runs a compiled
// job, and print the timings as one JSON line on stdout.
//
//   node --experimental-vm-modules --no-warnings run.mjs \
//     --job ping-1.1 --input records.json --mappings mappings.json \
//     [--records N] [--warm] [--today YYYY-MM-DD]
//
// records.json: a JSON array of record bundles (the bench generates them with
// the same invented people it feeds the bridge); mappings.json: what the host
// hands to the job's configure() for a mapping folder.
//
// Fresh (default): one run over the first N records; `bridge bench` times the
// whole process from outside. --warm: a warm-up run, then one timed run of N
// records, then many one-record runs (the per-message cost of a worker that
// has the job and adaptor loaded).
import { register } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

register('./hooks.mjs', import.meta.url);

const here = dirname(fileURLToPath(import.meta.url));
const { default: run } = await import('@openfn/runtime');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = process.argv[i + 1];
  return v === undefined || v.startsWith('--') ? true : v;
}

const job = arg('job');
const input = arg('input');
const mappingsFile = arg('mappings');
if (!job || !input || !mappingsFile) {
  console.error('usage: run.mjs --job NAME --input records.json --mappings mappings.json [--records N] [--warm]');
  process.exit(2);
}
const warm = arg('warm', false) === true;
const today = arg('today', '2025-06-01');
const all = JSON.parse(readFileSync(input, 'utf8'));
const n = Number(arg('records', all.length));
const records = all.slice(0, n);
const mappings = JSON.parse(readFileSync(mappingsFile, 'utf8'));
const source = readFileSync(join(here, 'jobs', `${job}.js`), 'utf8');

const options = {
  // The bridge's jobs hand their output over as UTF-8 bytes (the WIT
  // contract's json-bytes); the runtime's sandbox has no text codecs of its own.
  globals: { TextEncoder, TextDecoder },
  linker: {
    modules: {
      '@openfn/language-common': { path: join(here, 'node_modules/@openfn/language-common') },
      [job]: { path: join(here, 'linked', job) },
    },
  },
};

const ctx = { flow: 'bench', runId: 'bench', today, dryRun: true };

async function once(recs) {
  const state = { configuration: { mappings }, data: { ctx, records: recs } };
  const result = await run(source, state, options);
  const results = result?.data?.results;
  if (!Array.isArray(results) || results.length !== recs.length) {
    throw new Error(`the OpenFn run returned ${Array.isArray(results) ? results.length : 'no'} results for ${recs.length} records`);
  }
  const counts = { emit: 0, skip: 0, error: 0 };
  for (const r of results) counts[r.outcome] += 1;
  return counts;
}

const out = { job, records: records.length, runtime_version: JSON.parse(readFileSync(join(here, 'node_modules/@openfn/runtime/package.json'), 'utf8')).version, node: process.version };
// Time since the process started (module loading included) until the run begins.
out.startup_ms = performance.now();
if (warm) {
  await once(records.slice(0, Math.min(records.length, 1000)));
  await once(records.slice(0, 1));
  let t = performance.now();
  out.counts = await once(records);
  out.batch_ms = performance.now() - t;
  out.per_record_us = (out.batch_ms * 1000) / records.length;
  const runs = Math.min(200, records.length);
  t = performance.now();
  for (let i = 0; i < runs; i++) await once(records.slice(i, i + 1));
  out.single_runs = runs;
  out.per_run_ms = (performance.now() - t) / runs;
} else {
  const t = performance.now();
  out.counts = await once(records);
  out.batch_ms = performance.now() - t;
}
out.total_ms = performance.now();
out.peak_rss_bytes = process.resourceUsage().maxRSS * 1024;
process.stdout.write(`${JSON.stringify(out)}\n`);
