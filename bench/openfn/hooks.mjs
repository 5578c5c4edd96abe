// Module-resolution hook for the OpenFn side of `bridge bench`: the bridge
// jobs import `bridge:job/log@0.2.0` (the one interface a component gets from
// the host); here it resolves to a no-op, as the host drops job logs below
// its log level.
const LOG = 'bridge:job/log@0.2.0';
const stub = new URL('./log-stub.mjs', import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (specifier === LOG) return { url: stub, shortCircuit: true };
  return nextResolve(specifier, context);
}
