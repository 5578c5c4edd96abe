// Dates as strings. A job has no clock: "today" is ctx.today (YYYY-MM-DD, the
// deployment's time zone). String arithmetic only, so results never depend
// on a time zone. Unary + rather than Number() and no array literals in
// hot paths: each call and allocation counts in the component's interpreter.

const DATE = /^(\d{4})-(\d{2})-(\d{2})/;

function daysIn(year, month) {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

// The last date datePart() returned, with its parts: a job that takes a
// date's part and then an age from it (every inbound referral) parses once.
let lastDate = null;
let lastDateParts = null;

/** [year, month, day] of a string starting with a valid calendar date, else null. */
export function parseDate(value) {
  if (value === lastDate) return lastDateParts;
  if (typeof value !== 'string') return null;
  const m = DATE.exec(value.trim());
  if (!m) return null;
  const y = +m[1];
  const mo = +m[2];
  const d = +m[3];
  if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo)) return null;
  return [y, mo, d];
}

/**
 * The `YYYY-MM-DD` date part of an ISO date or date-time string
 * ("2012-03-15T00:00:00Z" → "2012-03-15"), or null when it does not start with
 * a valid calendar date. The date is taken as written (no time-zone shift).
 */
export function datePart(value) {
  const p = parseDate(value);
  if (!p) return null;
  const date = value.trim().slice(0, 10);
  lastDate = date;
  lastDateParts = p;
  return date;
}

/**
 * Whole years from date `from` to date `to` (both strings starting with
 * YYYY-MM-DD): the age on `to` of someone born on `from`. Someone born on
 * 29 February turns a year older on 1 March in common years. Null when a date
 * is invalid; negative when `from` is after `to`.
 */
// `to` is the call context's today, the same for every record of a run.
let lastTo = null;
let lastToParsed = null;

export function wholeYears(from, to) {
  const a = parseDate(from);
  if (to !== lastTo) {
    lastToParsed = parseDate(to);
    lastTo = to;
  }
  const b = lastToParsed;
  if (!a || !b) return null;
  let years = b[0] - a[0];
  if (b[1] < a[1] || (b[1] === a[1] && b[2] < a[2])) years -= 1;
  return years;
}

/** Compare two date strings by their date part: -1, 0 or 1 (null if invalid). */
export function compareDates(x, y) {
  const a = datePart(x);
  const b = datePart(y);
  if (a === null || b === null) return null;
  return a < b ? -1 : a > b ? 1 : 0;
}

const BARE_DATE = /^\d{4}-\d{2}-\d{2}$/;
const UTC_OFFSET = /^[+-]00:?00$/;
const DATETIME = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/;

/**
 * An ISO 8601 UTC date-time `YYYY-MM-DDTHH:MM:SSZ` from a date or date-time
 * string: a bare date is midnight UTC ("2024-05-02" → "2024-05-02T00:00:00Z");
 * a time without a zone is taken as UTC; an offset is converted to UTC;
 * fractions of a second are dropped. Null when the input is not one of these.
 */
export function isoDateTime(value) {
  if (typeof value !== 'string') return null;
  const s = value.trim();
  if (BARE_DATE.test(s)) return parseDate(s) ? `${s}T00:00:00Z` : null;
  const m = DATETIME.exec(s);
  if (!m || !parseDate(m[1])) return null;
  const hh = +m[2];
  const mm = +m[3];
  const ss = m[4] === undefined ? 0 : +m[4];
  if (hh > 23 || mm > 59 || ss > 59) return null;
  const zone = m[6];
  if (!zone || zone === 'Z' || UTC_OFFSET.test(zone)) {
    return `${m[1]}T${m[2]}:${m[3]}:${m[4] ?? '00'}Z`;
  }
  // A real offset: let Date do the arithmetic (parsing is deterministic here).
  const d = new Date(`${m[1]}T${m[2]}:${m[3]}:${m[4] ?? '00'}${zone.length === 5 ? `${zone.slice(0, 3)}:${zone.slice(3)}` : zone}`);
  if (Number.isNaN(d.getTime())) return null;
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
