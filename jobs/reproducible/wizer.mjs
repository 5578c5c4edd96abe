// Stands in for wizer in componentize-js (its `wizerBin` option; see
// index.mjs for why), taking wizer's own command line:
//
// 1. The engine module's imports of wasi random_get, clock_time_get and
//    path_filestat_get are renamed to a module of their own (in place: the
//    names have the same length), and binaryen's wasm-merge links that
//    module to deterministic.wat, which gives them answers that are the same
//    in every build while the initializer runs and forwards to the real
//    imports afterwards (which componentize-js then stubs, as before). The linked
//    engine is the same for every job (it depends on the WIT world, not the
//    job), so it is cached by the hash of its inputs: wasm-merge takes ~20 s.
// 2. wizer runs the initializer on the linked engine, with componentize-js's
//    random temporary sources folder shown to the engine as
//    /.componentize-sources and PREFIX_GUEST for the path of the jobs folder
//    (the engine keeps both strings in its memory).
// 3. The exports the linking needed are dropped again.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const jobsDir = dirname(here);
const binaryenBin = join(jobsDir, 'node_modules', 'binaryen', 'bin');
const cacheDir = join(jobsDir, 'node_modules', '.cache', 'bridge-reproducible');
/** The module name the two imports are moved to: as long as `wasi_snapshot_preview1`, so they are renamed in place. */
const LINKED = 'bridge_reproducible_01';
const WASI = 'wasi_snapshot_preview1';
const REDIRECTED = new Set(['random_get', 'clock_time_get', 'path_filestat_get']);
/** Where the engine sees componentize-js's random temporary sources folder. */
const SOURCES_GUEST = '/.componentize-sources';
/**
 * What the engine is told to strip from script paths in stack traces instead
 * of the jobs folder's path on this machine. The engine sees the jobs folder
 * as `/` and loads scripts by relative paths, so neither ever matches: stack
 * traces are unchanged, and the path of the checkout is not in the component.
 */
const PREFIX_GUEST = '/.componentize-workspace/';

function leb(bytes, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (!(byte & 0x80)) return [value, at];
  }
}

function encodeLeb(value) {
  const out = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value) byte |= 0x80;
    out.push(byte);
  } while (value);
  return Buffer.from(out);
}

/** The sections of a core module: [{id, start, end}], `start` after the size. */
function sections(wasm) {
  if (wasm.readUInt32LE(0) !== 0x6d736100) throw new Error('not a core WebAssembly module');
  const out = [];
  let at = 8;
  while (at < wasm.length) {
    const id = wasm[at];
    const [size, start] = leb(wasm, at + 1);
    out.push({ id, head: at, start, end: start + size });
    at = start + size;
  }
  return out;
}

function skipLimits(wasm, at) {
  const flags = wasm[at++];
  [, at] = leb(wasm, at);
  if (flags & 1) [, at] = leb(wasm, at);
  return at;
}

/** Renames the module of the engine's REDIRECTED imports (same length: the bytes stay in place). */
export function redirectImports(wasm) {
  const out = Buffer.from(wasm);
  const section = sections(out).find((s) => s.id === 2);
  if (!section) throw new Error('the engine module has no imports');
  let [count, at] = leb(out, section.start);
  let moved = 0;
  for (; count > 0; count--) {
    let length;
    [length, at] = leb(out, at);
    const moduleAt = at;
    const module = out.toString('utf8', at, at + length);
    at += length;
    [length, at] = leb(out, at);
    const name = out.toString('utf8', at, at + length);
    at += length;
    const kind = out[at++];
    if (kind === 0x00 || kind === 0x04) [, at] = leb(out, at + (kind === 0x04 ? 1 : 0));
    else if (kind === 0x01) at = skipLimits(out, at + 1);
    else if (kind === 0x02) at = skipLimits(out, at);
    else if (kind === 0x03) at += 2;
    else throw new Error(`unknown import kind ${kind}`);
    if (kind === 0x00 && module === WASI && REDIRECTED.has(name)) {
      out.write(LINKED, moduleAt, 'utf8');
      moved += 1;
    }
  }
  if (moved !== REDIRECTED.size) {
    throw new Error(`expected the engine to import ${[...REDIRECTED].join(' and ')} from ${WASI}, found ${moved} of them`);
  }
  return out;
}

/** The names a module exports. */
export function exportNames(wasm) {
  const section = sections(wasm).find((s) => s.id === 7);
  const names = [];
  if (!section) return names;
  let [count, at] = leb(wasm, section.start);
  for (; count > 0; count--) {
    let length;
    [length, at] = leb(wasm, at);
    names.push(wasm.toString('utf8', at, at + length));
    at += length + 1;
    [, at] = leb(wasm, at);
  }
  return names;
}

/** Drops the exports named in `names` (the linked module's, which the component must not export). */
export function dropExports(wasm, names) {
  const section = sections(wasm).find((s) => s.id === 7);
  if (!section) return wasm;
  let [count, at] = leb(wasm, section.start);
  const kept = [];
  let total = 0;
  for (; count > 0; count--) {
    const from = at;
    let length;
    [length, at] = leb(wasm, at);
    const name = wasm.toString('utf8', at, at + length);
    at += length + 1;
    [, at] = leb(wasm, at);
    total += 1;
    if (!names.has(name)) kept.push(wasm.subarray(from, at));
  }
  if (kept.length === total) return wasm;
  const body = Buffer.concat([encodeLeb(kept.length), ...kept]);
  return Buffer.concat([
    wasm.subarray(0, section.head),
    Buffer.from([7]),
    encodeLeb(body.length),
    body,
    wasm.subarray(section.end),
  ]);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', ...options });
  if (result.error) throw result.error;
  if (result.status !== 0 || result.signal) {
    process.stderr.write(result.stderr ?? '');
    throw new Error(`${command} ${args[0] ?? ''} failed (${result.signal ?? `exit ${result.status}`})`);
  }
  return result;
}

/** The engine linked with deterministic.wat, from the cache or made now. */
function linkedEngine(engine, init, work) {
  const wat = readFileSync(join(here, 'deterministic.wat'), 'utf8').replace('"INIT_FUNC"', JSON.stringify(init));
  const binaryen = readFileSync(join(jobsDir, 'node_modules', 'binaryen', 'package.json'));
  const key = createHash('sha256').update(engine).update('\0').update(wat).update('\0').update(binaryen).digest('hex');
  const cached = join(cacheDir, `${key}.wasm`);
  if (existsSync(cached)) return cached;
  const clash = exportNames(engine).filter((name) => REDIRECTED.has(name) || name.startsWith('bridge-reproducible.'));
  if (clash.length) throw new Error(`the engine already exports ${clash.join(', ')}`);
  writeFileSync(join(work, 'engine.wasm'), redirectImports(engine));
  writeFileSync(join(work, 'deterministic.wat'), wat);
  run(process.execPath, [join(binaryenBin, 'wasm-as'), join(work, 'deterministic.wat'), '-o', join(work, 'deterministic.wasm')]);
  run(process.execPath, [
    join(binaryenBin, 'wasm-merge'),
    '--enable-multimemory', // only to validate deterministic.wat's memory import before it is resolved
    join(work, 'engine.wasm'), 'main',
    join(work, 'deterministic.wasm'), LINKED,
    '-o', join(work, 'linked.wasm'),
  ]);
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  renameSync(join(work, 'linked.wasm'), tmp);
  renameSync(tmp, cached);
  return cached;
}

export async function main() {
  const args = process.argv.slice(2);
  const stdin = readFileSync(0, 'utf8');
  const initAt = args.indexOf('--init-func');
  const outArg = args.find((a) => a.startsWith('-o='));
  const sourcesArg = args.find((a) => a.startsWith('--dir='));
  if (initAt === -1 || !outArg || !sourcesArg) throw new Error(`unexpected wizer command line: ${args.join(' ')}`);
  const init = args[initAt + 1];
  const input = args.at(-1);
  const output = outArg.slice('-o='.length);
  const sources = sourcesArg.slice('--dir='.length);
  const workspaceArg = args.find((a) => a.startsWith('--mapdir=/::'));
  const prefix = workspaceArg && `--strip-path-prefix ${workspaceArg.slice('--mapdir=/::'.length)}/ `;
  if (!prefix || !stdin.includes(prefix) || !stdin.includes(`${sources}/`)) {
    throw new Error(`unexpected engine arguments (${stdin}) for wizer ${args.join(' ')}`);
  }
  const engineArgs = stdin.replace(prefix, `--strip-path-prefix ${PREFIX_GUEST} `).split(sources).join(SOURCES_GUEST);
  const work = mkdtempSync(join(dirname(output), 'reproducible-'));
  try {
    const linked = linkedEngine(readFileSync(input), init, work);
    const wizer = (await import('@bytecodealliance/wizer')).default;
    const wizerArgs = args.slice(0, -1).map((a, i) => {
      if (i === initAt + 1) return 'bridge-reproducible.init';
      if (a === sourcesArg) return `--mapdir=${SOURCES_GUEST}::${sources}`;
      return a;
    });
    run(wizer, [...wizerArgs, linked], {
      input: engineArgs,
      stdio: ['pipe', 'inherit', 'inherit'],
      // exactly the environment componentize-js gave: the engine keeps it
      env: process.env,
    });
    writeFileSync(output, dropExports(readFileSync(output), REDIRECTED));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
