// What makes `build.mjs` give the same component, byte for byte, for the
// same sources and package-lock.json (measured before: three builds of one
// job, three different hashes). Two things differed between builds:
//
// 1. The engine's memory snapshot. componentize-js pre-initializes the
//    SpiderMonkey engine with wizer and keeps the memory it leaves. The
//    engine reads random bytes (hash seeds) and the clocks (GC timing, which
//    moves where objects land) while it initializes; it keeps the last file
//    stat it made (inode, times) and the paths of componentize-js's random
//    temporary folder and of the jobs folder. wizer.mjs stands in for wizer
//    (componentize-js's `wizerBin` option) and gives the initializer a fixed
//    random stream, a fixed clock, stats without inode or times, and fixed
//    folder names.
// 2. The build time. With the `clocks` feature off, componentize-js replaces
//    the clock imports by stubs that return the time the build ran (read
//    from @bytecodealliance/preview2-shim in this process). pinBuildTools()
//    pins that clock to BUILD_TIME, and the shim's random bytes to a fixed
//    stream, before componentize-js is loaded. A job reading Date.now() sees
//    BUILD_TIME (jobs take their dates from ctx.today, never from the clock).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The time every build claims to run at: 2020-01-01T00:00:00Z, in seconds. */
export const BUILD_TIME = 1577836800n;

/** A splitmix64 stream from a fixed seed: the same bytes in every build. */
export function fixedBytes(seed = 0x243f6a8885a308d3n) {
  let state = seed;
  return (n) => {
    const out = new Uint8Array(Number(n));
    for (let i = 0; i < out.length; i++) {
      state = BigInt.asUintN(64, state + 0x9e3779b97f4a7c15n);
      let z = state;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      out[i] = Number((z ^ (z >> 31n)) & 0xffn);
    }
    return out;
  };
}

/**
 * Pins the wall clock, monotonic clock and random bytes that
 * @bytecodealliance/preview2-shim gives the build tools running in this
 * process (componentize-js's splicer, jco's wasm-tools). Must run before
 * componentize-js is imported: its bindings copy the functions when loaded.
 */
export async function pinBuildTools() {
  // Resolved from jobs/, as componentize-js resolves it: the same module.
  const { wallClock, monotonicClock } = await import('@bytecodealliance/preview2-shim/clocks');
  const { random } = await import('@bytecodealliance/preview2-shim/random');
  wallClock.now = () => ({ seconds: BUILD_TIME, nanoseconds: 0 });
  let ticks = 0n;
  monotonicClock.now = () => (ticks += 1_000_000n);
  const bytes = fixedBytes();
  random.getRandomBytes = (n) => bytes(n);
  random.getRandomU64 = () => new DataView(bytes(8).buffer).getBigUint64(0, true);
}

/**
 * An executable that runs wizer.mjs, to pass as componentize-js's
 * `wizerBin`: componentize-js starts wizer with an environment of its own
 * (no PATH, so `#!/usr/bin/env node` would not find node). Returns its path
 * and a function that removes it.
 */
export function wizerLauncher() {
  const dir = mkdtempSync(join(tmpdir(), 'bridge-wizer-'));
  const path = join(dir, 'wizer');
  const script = new URL('./wizer.mjs', import.meta.url).href;
  writeFileSync(
    path,
    `#!${process.execPath}\nimport(${JSON.stringify(script)}).then((m) => m.main()).catch((e) => {\n` +
      `  console.error(\`reproducible wizer: \${e?.message ?? e}\`);\n  process.exit(1);\n});\n`,
    { mode: 0o755 },
  );
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
