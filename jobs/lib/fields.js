// Reading source fields. proGres rows are flat objects whose keys contain dots
// (`progres_individual.individuals.progres_id`), so keys are looked up whole,
// never split on '.'.
import { badInput } from './errors.js';

/** Absent, null, or a string that is empty after trimming. */
export function isMissing(value) {
  return value === undefined || value === null || (typeof value === 'string' && value.trim() === '');
}

/**
 * Throw `bad-input` when any of `keys` is missing from `source`: `field` is the
 * first missing key, the reason lists all of them (names only, never values).
 */
export function requireFields(source, keys, what = 'required field') {
  let missing = null;
  for (let i = 0; i < keys.length; i++) {
    // isMissing() inline: this loop runs for every required field of every record.
    const v = source?.[keys[i]];
    if (v === undefined || v === null || (typeof v === 'string' && v.trim() === '')) (missing ??= []).push(keys[i]);
  }
  if (missing !== null) {
    const plural = missing.length > 1 ? 's' : '';
    throw badInput(missing[0], `${what}${plural} missing or empty: ${missing.join(', ')}`);
  }
}

/** The value as a trimmed string, or null when missing. Numbers become strings. */
export function text(value) {
  if (typeof value === 'string') {
    const t = value.trim();
    return t === '' ? null : t;
  }
  if (value === undefined || value === null || typeof value === 'object') return null;
  return String(value).trim();
}

/** The first of `keys` that is present in `source`, as text(); else null. */
export function firstText(source, keys) {
  for (let i = 0; i < keys.length; i++) {
    const v = text(source?.[keys[i]]);
    if (v !== null) return v;
  }
  return null;
}

/**
 * The `{Name, Value}` pairs of a PING ingestion record that carry a value.
 * A pair sent as `"Value": null` clears the proGres column when the record
 * updates one; the original jobs left such values `undefined`, which JSON
 * drops, so a field without a value is left out.
 */
export function valuedFields(pairs) {
  const out = [];
  for (let i = 0; i < pairs.length; i++) {
    const v = pairs[i].Value;
    if (v !== null && v !== undefined) out.push(pairs[i]);
  }
  return out;
}
