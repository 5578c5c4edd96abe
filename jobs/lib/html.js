// HTML to plain text for proGres rich-text fields (spec §4.9, design B):
// tags become a space; &nbsp; &amp; &lt; &gt; (and &quot; &#39; &apos;,
// numeric &#NN; / &#xHH;) are decoded in one pass, so "&amp;lt;" gives "&lt;";
// whitespace runs collapse to one space; the result is trimmed.
//
// Written with indexOf and slices rather than regex replaces: in the
// component's interpreter a String.prototype.replace with a regex runs
// self-hosted JavaScript (a callback replace more so), and four of them cost
// ~30 µs a field, a third of a record. test/lib.test.mjs checks this against
// the regex definition on random input.

const NAMED = { nbsp: ' ', amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

// Text with no tag, no entity and no whitespace but single inner spaces: most fields.
const PLAIN = /^[^<&\s]+(?: [^<&\s]+)*$/;
// Whitespace that the final collapse would change (trim handles the ends).
const COLLAPSE = /\s\s|[^\S ]/;
const SPACES = /\s+/g;

/** `s` with every match of open…close (the first `close` after each `open`) replaced by a space. */
function dropSpans(s, open, close) {
  let i = s.indexOf(open);
  if (i === -1) return s;
  let out = '';
  let from = 0;
  while (i !== -1) {
    const j = s.indexOf(close, i + open.length);
    if (j === -1) break;
    out += `${s.slice(from, i)} `;
    from = j + close.length;
    i = s.indexOf(open, from);
  }
  return from === 0 ? s : out + s.slice(from);
}

const HAS_OWN = Object.prototype.hasOwnProperty;
// The body of a numeric entity, between `&` and `;`.
const NUMERIC = /^#(?:[xX][0-9a-fA-F]+|[0-9]+)$/;

/** The text an entity body (between `&` and `;`) stands for, or null when it is not one we decode. */
function entityText(body) {
  if (HAS_OWN.call(NAMED, body)) return NAMED[body];
  if (body.charCodeAt(0) !== 35 /* # */ || !NUMERIC.test(body)) return null;
  const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
  return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : null;
}

/**
 * `s` with every entity decoded, left to right, in one pass. An entity runs
 * from `&` to the next `;`; a body that is not one (`&foo;`, `&a b;`) stays
 * as written and the scan goes on at the next `&`. (The next `;` rather than
 * a character loop: each character read costs a call in the interpreter.)
 */
function decodeEntities(s) {
  let i = s.indexOf('&');
  if (i === -1) return s;
  let out = '';
  let from = 0;
  while (i !== -1) {
    const end = s.indexOf(';', i + 1);
    if (end === -1) break;
    const text = entityText(s.slice(i + 1, end));
    if (text === null) {
      i = s.indexOf('&', i + 1);
      continue;
    }
    out += s.slice(from, i) + text;
    from = end + 1;
    i = s.indexOf('&', from);
  }
  return from === 0 ? s : out + s.slice(from);
}

/** Plain text of an HTML fragment; '' for null/undefined. */
export function stripHtml(value) {
  if (value === null || value === undefined) return '';
  let s = String(value);
  if (PLAIN.test(s)) return s;
  s = decodeEntities(dropSpans(dropSpans(s, '<!--', '-->'), '<', '>'));
  if (COLLAPSE.test(s)) s = s.replace(SPACES, ' ');
  return s.trim();
}

/** Strip each part, drop the empty ones, join with `separator`; null when none is left. */
export function joinText(parts, separator = ', ') {
  let out = null;
  for (let i = 0; i < parts.length; i++) {
    const p = stripHtml(parts[i]);
    if (p !== '') out = out === null ? p : `${out}${separator}${p}`;
  }
  return out;
}
