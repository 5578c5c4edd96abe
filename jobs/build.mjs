#!/usr/bin/env node
// Build every job jobs/<name>/index.js into the WebAssembly component
// jobs/dist/<name>.wasm with componentize-js.
//
//   node jobs/build.mjs               # all jobs
//   node jobs/build.mjs name1 name2   # only these
//
// A job is rebuilt only when its inputs changed: a SHA-256 over the job's
// folder, jobs/lib/, wit/, jobs/package-lock.json and this script is kept in
// jobs/dist/<name>.sha256. Components are written atomically (temp file +
// rename), so a reader never sees half a file. Works from any current folder.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const jobsDir = dirname(fileURLToPath(import.meta.url));
const rootDir = dirname(jobsDir);
const witDir = join(rootDir, 'wit');
const libDir = join(jobsDir, 'lib');
const distDir = join(jobsDir, 'dist');
const lockFile = join(jobsDir, 'package-lock.json');
const componentizeDir = join(jobsDir, 'node_modules', '@bytecodealliance', 'componentize-js');
const NOT_JOBS = new Set(['lib', 'node_modules', 'dist', 'test']);

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
function inputsHash(name) {
  const files = [
    ...filesUnder(join(jobsDir, name)),
    ...filesUnder(libDir),
    ...filesUnder(witDir),
    lockFile,
    fileURLToPath(import.meta.url),
  ];
  const hash = createHash('sha256');
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
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((n) => !known.includes(n));
  if (unknown.length) {
    fail(`no job named ${unknown.join(', ')}: a job is a folder jobs/<name>/ with an index.js (known jobs: ${known.join(', ') || 'none'})`);
  }
  const names = wanted.length ? [...new Set(wanted)] : known;
  if (!existsSync(join(witDir, 'job.wit'))) fail(`the WIT contract ${join(witDir, 'job.wit')} is missing`);
  if (!existsSync(componentizeDir)) {
    fail(`@bytecodealliance/componentize-js is not installed (${componentizeDir}): run \`npm ci\` in jobs/`);
  }

  mkdirSync(distDir, { recursive: true });
  let componentize;
  let failures = 0;
  for (const name of names) {
    const wasmPath = join(distDir, `${name}.wasm`);
    const hashPath = join(distDir, `${name}.sha256`);
    const hash = inputsHash(name);
    const previous = existsSync(hashPath) ? readFileSync(hashPath, 'utf8').trim() : null;
    if (previous === hash && existsSync(wasmPath)) {
      console.log(`${name}: up to date`);
      continue;
    }
    console.log(`${name}: building…`);
    const started = performance.now();
    try {
      componentize ??= (await import(pathToFileURL(join(componentizeDir, 'src', 'componentize.js')).href)).componentize;
      // componentize-js lets the engine read only files under the current
      // folder: running from jobs/ makes ../lib/ imports resolvable.
      process.chdir(jobsDir);
      const { component } = await componentize({
        ...BUILD_OPTIONS,
        sourcePath: join(jobsDir, name, 'index.js'),
        witPath: witDir,
      });
      rmSync(hashPath, { force: true });
      writeAtomic(wasmPath, component);
      writeAtomic(hashPath, `${hash}\n`);
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const mb = (statSync(wasmPath).size / 1e6).toFixed(1);
      console.log(`${name}: built in ${seconds} s (${mb} MB)`);
    } catch (e) {
      failures += 1;
      const message = String(e?.message ?? e).trim();
      console.error(`${name}: build FAILED\n${message}`);
    }
  }
  if (failures) fail(`${failures} of ${names.length} job${names.length > 1 ? 's' : ''} failed to build`);
}

main().catch((e) => fail(e?.stack ?? String(e)));
