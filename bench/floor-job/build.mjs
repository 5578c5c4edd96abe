#!/usr/bin/env node
// Build bench/floor-job/index.js into a component, the way jobs/build.mjs
// builds a job (same componentize-js, same disabled features):
//   node bench/floor-job/build.mjs <out.wasm>
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const out = process.argv[2];
if (!out) {
  console.error('usage: node bench/floor-job/build.mjs <out.wasm>');
  process.exit(2);
}
const { componentize } = await import(
  pathToFileURL(join(root, 'jobs', 'node_modules', '@bytecodealliance', 'componentize-js', 'src', 'componentize.js')).href
);
// componentize-js reads sources under the current folder only.
process.chdir(here);
const { component } = await componentize({
  worldName: 'batch-job',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
  sourcePath: join(here, 'index.js'),
  witPath: join(root, 'wit'),
});
writeFileSync(out, component);
