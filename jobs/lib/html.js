// HTML to plain text for proGres rich-text fields (spec §4.9, design B):
// tags become a space; &nbsp; &amp; &lt; &gt; (and &quot; &#39; &apos;,
// numeric &#NN; / &#xHH;) are decoded in one pass, so "&amp;lt;" gives "&lt;";
// whitespace runs collapse to one space; the result is trimmed.

const NAMED = { nbsp: ' ', amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntity(match, body) {
  if (body[0] === '#') {
    const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
    if (Number.isFinite(code) && code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff)) {
      return String.fromCodePoint(code);
    }
    return match;
  }
  return Object.prototype.hasOwnProperty.call(NAMED, body) ? NAMED[body] : match;
}

/** Plain text of an HTML fragment; '' for null/undefined. */
export function stripHtml(value) {
  if (value === null || value === undefined) return '';
  return String(value)
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);/g, decodeEntity)
    .replace(/\s+/g, ' ')
    .trim();
}

/** Strip each part, drop the empty ones, join with `separator`; null when none is left. */
export function joinText(parts, separator = ', ') {
  const kept = parts.map(stripHtml).filter((p) => p !== '');
  return kept.length ? kept.join(separator) : null;
}
