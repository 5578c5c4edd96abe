// Mapping-table lookups. `tables` is the `tables` object of the JSON the host
// hands to configure():
//   { "<table>": { "description": "…", "default": "…" (optional), "map": { "<from>": "<to>" } } }
import { fatal, unmapped } from './errors.js';

const own = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

/**
 * The value `value` maps to in `table`; the table's declared `default` when the
 * value is not listed; otherwise throws the `unmapped` job error naming the
 * table and the value. Keys are matched exactly (numbers are compared as their
 * decimal string, so 125080000 and "125080000" find the same entry).
 */
export function lookup(tables, table, value) {
  const t = tables && own(tables, table) ? tables[table] : undefined;
  if (!t || typeof t.map !== 'object' || t.map === null) {
    throw fatal(`mapping table ${table} is not loaded`);
  }
  const key = value === null || value === undefined ? '' : String(value);
  if (own(t.map, key)) return t.map[key];
  if (typeof t.default === 'string') return t.default;
  throw unmapped(table, key);
}

/** True when `value` has its own entry in `table` (the default does not count). */
export function isListed(tables, table, value) {
  const t = tables?.[table];
  return !!t && typeof t.map === 'object' && t.map !== null && own(t.map, String(value));
}

/**
 * Map every value of a list, drop repeats of the mapped value (first
 * occurrence wins, order kept) and return `null` for an empty result.
 * Missing or empty source values are ignored.
 */
export function lookupDistinct(tables, table, values) {
  const out = [];
  const list = values ?? [];
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (v === null || v === undefined || String(v).trim() === '') continue;
    const mapped = lookup(tables, table, v);
    if (!out.includes(mapped)) out.push(mapped);
  }
  return out.length ? out : null;
}
