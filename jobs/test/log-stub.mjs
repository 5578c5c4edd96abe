// Stand-in for the host's `bridge:job/log@0.2.0` interface in node tests:
// records every call in globalThis.__bridgeJobLog for the test to inspect.
const calls = (globalThis.__bridgeJobLog ??= []);

export function emit(level, message, fields) {
  calls.push({ level, message, fields });
}
