// OpenFn job in its compiled form (what the OpenFn compiler would emit from
// `configure(...); each(...)`-style job code): the bridge job progres-referral-to-primero's own
// mapping code, loaded through the runtime's linker from
// ../linked/progres-referral-to-primero (which points at jobs/progres-referral-to-primero/index.js), run on every record of
// state.data.records. Input and output cross the job boundary as JSON text,
// as they do between the bridge host and its WebAssembly component.
import { fn } from '@openfn/language-common';
import { configure, run } from 'progres-referral-to-primero';

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
        out = outcome.tag === 'emit' ? { outcome: 'emit', payload: JSON.parse(outcome.val) } : { outcome: 'skip', reason: outcome.val };
      } catch (e) {
        out = { outcome: 'error', kind: e?.tag ?? 'fatal' };
      }
      results.push(out);
    }
    return { ...state, data: { results } };
  }),
];
