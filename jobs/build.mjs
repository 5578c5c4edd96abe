#!/usr/bin/env node
// Build every job jobs/<name>/index.js into the WebAssembly component
// jobs/dist/<name>.wasm with componentize-js.
//
//   node jobs/build.mjs               # all jobs
//   node jobs/build.mjs name1 name2   # only these
//   node jobs/build.mjs --aot         # compiled ahead of time with weval
//   node jobs/build.mjs --interpreted # back to the default build
//   node jobs/build.mjs --out DIR …   # components into DIR, not jobs/dist
//
// A job keeps the mode it was last built in (kept in its .sha256 file), so
// the plain `node jobs/build.mjs` the host runs before its commands rebuilds
// an AOT job AOT when its sources change, rather than undoing it.
//
// --aot: componentize-js's AOT mode specialises SpiderMonkey's interpreter
// to the job's code with weval (measured: a WF 1.1 record 20% faster; the
// component ~16 MB instead of 12). weval is built from crates.io into
// jobs/.tools by `npm run install-weval` (once, ~13 min on 2 cores), or
// named by $BRIDGE_WEVAL. The default build needs neither.
//
// A job is rebuilt only when its inputs changed: a SHA-256 over the job's
// folder, jobs/lib/, wit/, jobs/package-lock.json and this script is kept in
// jobs/dist/<name>.sha256. Components are written atomically (temp file +
// rename), so a reader never sees half a file. Works from any current folder.
//
// Reproducible: the same sources and package-lock.json give the same bytes
// (the default build; reproducible/index.mjs says what used to differ and
// how it is pinned). `npm run test:reproducible` builds a job twice and
// compares.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pinBuildTools, wizerLauncher } from './reproducible/index.mjs';

const jobsDir = dirname(fileURLToPath(import.meta.url));
const rootDir = dirname(jobsDir);
const witDir = join(rootDir, 'wit');
const libDir = join(jobsDir, 'lib');
const reproducibleDir = join(jobsDir, 'reproducible');
const distDir = join(jobsDir, 'dist');
const lockFile = join(jobsDir, 'package-lock.json');
const componentizeDir = join(jobsDir, 'node_modules', '@bytecodealliance', 'componentize-js');
const NOT_JOBS = new Set(['lib', 'node_modules', 'dist', 'test']);
const wevalPath = process.env.BRIDGE_WEVAL || join(jobsDir, '.tools', 'bin', 'weval');

// What the component may use: no WASI stdio, random, clocks or HTTP; its only
// imports are bridge:job/log and bridge:job/types (the host refuses any other).
const BUILD_OPTIONS = {
  worldName: 'batch-job',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
};

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

function jobNames() {
  return readdirSync(jobsDir)
    .filter((n) => !NOT_JOBS.has(n) && !n.startsWith('.') && existsSync(join(jobsDir, n, 'index.js')))
    .sort();
}

/** Every regular file under `dir`, sorted, as absolute paths. */
function filesUnder(dir) {
  const out = [];
  const walk = (d) => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'node_modules') walk(p);
      } else if (entry.isFile()) {
        out.push(p);
      }
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

/** SHA-256 over names and contents of everything the component of `name` depends on. */
function inputsHash(name, aot) {
  const files = [
    ...filesUnder(join(jobsDir, name)),
    ...filesUnder(libDir),
    ...filesUnder(witDir),
    ...filesUnder(reproducibleDir),
    lockFile,
    fileURLToPath(import.meta.url),
  ];
  const hash = createHash('sha256');
  hash.update(aot ? 'aot\0' : 'interpreted\0');
  for (const file of files) {
    hash.update(relative(rootDir, file).split(sep).join('/'));
    hash.update('\0');
    hash.update(existsSync(file) ? readFileSync(file) : Buffer.alloc(0));
    hash.update('\0');
  }
  return hash.digest('hex');
}

/** Write `data` to `path` via a temporary file in the same folder and a rename. */
function writeAtomic(path, data) {
  const tmp = join(dirname(path), `.${process.pid}.${Date.now()}.tmp`);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}

async function main() {
  const known = jobNames();
  const args = process.argv.slice(2);
  const forced = args.includes('--aot') ? 'aot' : args.includes('--interpreted') ? 'interpreted' : null;
  const outAt = args.indexOf('--out');
  if (outAt !== -1 && !args[outAt + 1]) fail('--out needs a folder');
  const outDir = outAt === -1 ? distDir : resolve(args[outAt + 1]);
  // The folder after --out is not a job name (and without --out, no argument is skipped).
  const wanted = args.filter((a, i) => !a.startsWith('--') && (outAt === -1 || i !== outAt + 1));
  const noWeval = `weval is not at ${wevalPath}: run \`npm run install-weval\` in jobs/ (cargo install from crates.io, ~13 min once), or set BRIDGE_WEVAL`;
  if (forced === 'aot' && !existsSync(wevalPath)) fail(`--aot: ${noWeval}`);
  const unknown = wanted.filter((n) => !known.includes(n));
  if (unknown.length) {
    fail(`no job named ${unknown.join(', ')}: a job is a folder jobs/<name>/ with an index.js (known jobs: ${known.join(', ') || 'none'})`);
  }
  const names = wanted.length ? [...new Set(wanted)] : known;
  if (!existsSync(join(witDir, 'job.wit'))) fail(`the WIT contract ${join(witDir, 'job.wit')} is missing`);
  if (!existsSync(componentizeDir)) {
    fail(`@bytecodealliance/componentize-js is not installed (${componentizeDir}): run \`npm ci\` in jobs/`);
  }

  mkdirSync(outDir, { recursive: true });
  let componentize;
  let wizer;
  let failures = 0;
  for (const name of names) {
    const wasmPath = join(outDir, `${name}.wasm`);
    const hashPath = join(outDir, `${name}.sha256`);
    const [previous, previousMode] = existsSync(hashPath) ? readFileSync(hashPath, 'utf8').trim().split(' ') : [null, null];
    const aot = (forced ?? (previousMode === 'aot' ? 'aot' : 'interpreted')) === 'aot';
    const hash = inputsHash(name, aot);
    if (previous === hash && existsSync(wasmPath)) {
      console.log(`${name}: up to date${aot ? ' (AOT)' : ''}`);
      continue;
    }
    if (aot && !existsSync(wevalPath)) {
      failures += 1;
      console.error(`${name}: was built AOT and changed since, but ${noWeval} (or rebuild it with --interpreted)`);
      continue;
    }
    console.log(`${name}: building${aot ? ' (AOT)' : ''}…`);
    const started = performance.now();
    // In AOT mode the engine may read only the source's own folder: an
    // entry file in jobs/ re-exports the job so ../lib/ stays reachable.
    const entry = join(jobsDir, `.aot-${name}.js`);
    try {
      if (!componentize) {
        await pinBuildTools();
        componentize = (await import(pathToFileURL(join(componentizeDir, 'src', 'componentize.js')).href)).componentize;
      }
      // componentize-js lets the engine read only files under the current
      // folder: running from jobs/ makes ../lib/ imports resolvable.
      process.chdir(jobsDir);
      if (aot) writeFileSync(entry, `export * from './${name}/index.js';\n`);
      const { component } = await componentize({
        ...BUILD_OPTIONS,
        sourcePath: aot ? entry : join(jobsDir, name, 'index.js'),
        witPath: witDir,
        ...(aot ? { enableAot: true, wevalBin: wevalPath } : { wizerBin: (wizer ??= wizerLauncher()).path }),
      });
      rmSync(hashPath, { force: true });
      writeAtomic(wasmPath, component);
      writeAtomic(hashPath, `${hash}${aot ? ' aot' : ''}\n`);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const mb = (statSync(wasmPath).size / 1e6).toFixed(1);
      console.log(`${name}: built in ${seconds} s (${mb} MB)`);
    } catch (e) {
      failures += 1;
      const message = String(e?.message ?? e).trim();
      console.error(`${name}: build FAILED\n${message}`);
    } finally {
      if (aot) {
        rmSync(entry, { force: true });
        // weval leaves its intermediate module in the current folder.
        rmSync(join(jobsDir, 'binary.wasm'), { force: true });
      }
    }
  }
  wizer?.remove();
  if (failures) fail(`${failures} of ${names.length} job${names.length > 1 ? 's' : ''} failed to build`);
}

main().catch((e) => fail(e?.stack ?? String(e)));
