// The floor of a job: what a call costs when the mapping does nothing. It
// parses the record (every real job does) and emits `{}`, one record per
// call or several (`run-batch`). `bridge bench`
// builds it and times it on the same records as the real jobs, so the report
// can split a record's cost into the component's floor and the mapping.
const EMPTY = new TextEncoder().encode('{}');

export function describe() {
  return { name: 'bench-floor', version: '0.1.0', flow: 'bench', tables: [] };
}

export function configure(_mappings) {}

export function run(_ctx, record) {
  JSON.parse(record);
  return { tag: 'emit', val: EMPTY };
}

// As jobs/lib/job.js does it: each record's result in the `result` shape.
export function runBatch(ctx, records) {
  const results = new Array(records.length);
  for (let i = 0; i < records.length; i++) results[i] = { tag: 'ok', val: run(ctx, records[i]) };
  return results;
}
