// Job errors, in the shape componentize-js turns into the WIT `job-error`
// variant (see wit/job.wit). Throw them; never return them.
//
//   throw badInput('progres_id', 'required field missing or empty');
//
// Reasons and messages must not carry personal data: name fields, codes and
// tables, never the values of a person's record (the mapping table value of an
// `unmapped` error is a code or a label, e.g. an intervention type).

const KINDS = new Set(['bad-input', 'unmapped', 'fatal']);

/** A source field is missing or malformed. `field` is the source key. */
export function badInput(field, reason) {
  return { tag: 'bad-input', val: { field: String(field), reason: String(reason) } };
}

/** A value has no entry in mapping table `table`, which declares no default. */
export function unmapped(table, value) {
  return { tag: 'unmapped', val: { table: String(table), value: String(value) } };
}

/** Anything else: the record is held for an operator. */
export function fatal(message) {
  return { tag: 'fatal', val: String(message) };
}

/** True for a value built by one of the functions above (well-formed). */
export function isJobError(e) {
  if (e === null || typeof e !== 'object' || !KINDS.has(e.tag)) return false;
  const v = e.val;
  switch (e.tag) {
    case 'bad-input':
      return v !== null && typeof v === 'object' && typeof v.field === 'string' && typeof v.reason === 'string';
    case 'unmapped':
      return v !== null && typeof v === 'object' && typeof v.table === 'string' && typeof v.value === 'string';
    case 'fatal':
      return typeof v === 'string';
  }
  return false;
}
