// Module-resolution hooks for running jobs in plain node (see fixtures.test.mjs).
// - `bridge:job/log@0.2.0` (the only import a component gets) → log-stub.mjs.
// - Job code (jobs/<name>/ and jobs/lib/) may import only relative files and
//   that interface, as in the component: node builtins, npm packages and other
//   `bridge:` interfaces are refused here so a job cannot pass in node and
//   fail in the build.
import { fileURLToPath } from 'node:url';
import { dirname, join, sep } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const jobsDir = dirname(here);
const LOG = 'bridge:job/log@0.2.0';
const stub = new URL('./log-stub.mjs', import.meta.url).href;

function isJobCode(parentURL) {
  if (!parentURL || !parentURL.startsWith('file:')) return false;
  const p = fileURLToPath(parentURL);
  return (
    p.startsWith(jobsDir + sep) &&
    !p.startsWith(join(jobsDir, 'node_modules') + sep) &&
    !p.startsWith(join(jobsDir, 'test') + sep) &&
    !p.startsWith(join(jobsDir, 'dist') + sep) &&
    p !== join(jobsDir, 'build.mjs')
  );
}

export async function resolve(specifier, context, nextResolve) {
  if (specifier === LOG) return { url: stub, shortCircuit: true };
  if (isJobCode(context.parentURL)) {
    const relative = specifier.startsWith('./') || specifier.startsWith('../');
    if (!relative) {
      throw new Error(
        `${fileURLToPath(context.parentURL)} imports "${specifier}": a job may import only relative files and ${LOG}`,
      );
    }
  }
  return nextResolve(specifier, context);
}
