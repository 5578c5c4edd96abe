// OpenFn job in its compiled form (what the OpenFn compiler would emit from
// `configure(...); each(...)`-style job code): the bridge job ping-2.1's own
// mapping code, loaded through the runtime's linker from
// ../linked/ping-2.1 (which points at jobs/ping-2.1/index.js), run on every record of
// state.data.records. Input crosses the job boundary as JSON text and output
// as UTF-8 JSON bytes, as they do between the bridge host and its component.
import { fn } from '@openfn/language-common';
import { configure, run } from 'ping-2.1';

const UTF8 = new TextDecoder();

export default [
  fn((state) => {
    configure(JSON.stringify(state.configuration.mappings));
    return state;
  }),
  fn((state) => {
    const ctx = state.data.ctx;
    const results = [];
    for (const record of state.data.records) {
      let out;
      try {
        const outcome = run(ctx, JSON.stringify(record));
        out = outcome.tag === 'emit' ? { outcome: 'emit', payload: JSON.parse(UTF8.decode(outcome.val)) } : { outcome: 'skip', reason: outcome.val };
      } catch (e) {
        out = { outcome: 'error', kind: e?.tag ?? 'fatal' };
      }
      results.push(out);
    }
    return { ...state, data: { results } };
  }),
];
