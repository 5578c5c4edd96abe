// `npm run test:reproducible`: one job built twice, from this checkout and
// from a copy of it in another folder, must give the same bytes. Slow (two
// builds, ~10 s each, plus ~20 s once to link the engine when
// node_modules/.cache is empty), so it is not part of `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const jobsDir = dirname(dirname(fileURLToPath(import.meta.url)));
const rootDir = dirname(jobsDir);
// The smallest job: what is tested is the build, not the job.
const JOB = 'dtp-1.2';

function build(buildScript, out) {
  execFileSync(process.execPath, [buildScript, '--out', out, JOB], { stdio: ['ignore', 'ignore', 'inherit'] });
  const bytes = readFileSync(join(out, `${JOB}.wasm`));
  return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
}

test(`${JOB} builds to the same bytes twice, from two folders`, { timeout: 600_000 }, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'bridge-reproducible-'));
  try {
    // A second checkout: the job sources, lib/, wit/ and the build scripts
    // at another path; the same installed packages.
    const copy = join(tmp, 'elsewhere', 'checkout');
    cpSync(join(rootDir, 'wit'), join(copy, 'wit'), { recursive: true });
    cpSync(jobsDir, join(copy, 'jobs'), {
      recursive: true,
      filter: (src) => !['node_modules', 'dist', '.tools'].some((skip) => src === join(jobsDir, skip)),
    });
    symlinkSync(join(jobsDir, 'node_modules'), join(copy, 'jobs', 'node_modules'));

    const first = build(join(jobsDir, 'build.mjs'), join(tmp, 'first'));
    const second = build(join(copy, 'jobs', 'build.mjs'), join(tmp, 'second'));
    assert.equal(second.sha256, first.sha256, 'the same sources and lockfile built to different components');
    assert.ok(first.bytes.equals(second.bytes));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
