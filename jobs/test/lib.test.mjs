// Unit tests of the shared helpers in jobs/lib/.
import { register } from 'node:module';
import { test } from 'node:test';
import assert from 'node:assert/strict';

register('./hooks.mjs', import.meta.url);

const { lookup, lookupDistinct } = await import('../lib/mapping.js');
const { stripHtml, joinText } = await import('../lib/html.js');
const { datePart, wholeYears, isoDateTime } = await import('../lib/dates.js');
const { requireFields } = await import('../lib/fields.js');
const { defineJob, emit } = await import('../lib/job.js');

const tables = {
  sex: { description: 'x', map: { 125080000: 'female' } },
  lang: { description: 'x', default: 'language6', map: { Nuer: 'language2', Swahili: 'language1', Anyuak: 'language1' } },
};

test('lookup: listed, default, unmapped, numbers as strings', () => {
  assert.equal(lookup(tables, 'sex', 125080000), 'female');
  assert.equal(lookup(tables, 'sex', '125080000'), 'female');
  assert.equal(lookup(tables, 'lang', 'Klingon'), 'language6');
  assert.throws(() => lookup(tables, 'sex', 9), (e) => e.tag === 'unmapped' && e.val.table === 'sex' && e.val.value === '9');
  assert.throws(() => lookup(tables, 'nope', 'x'), (e) => e.tag === 'fatal');
  // inherited object keys are not entries
  assert.throws(() => lookup(tables, 'sex', 'constructor'), (e) => e.tag === 'unmapped');
});

test('lookupDistinct: de-duplicates mapped values, null when empty', () => {
  assert.deepEqual(lookupDistinct(tables, 'lang', ['Nuer', 'Swahili', 'Anyuak', 'Nuer', '']), ['language2', 'language1']);
  assert.equal(lookupDistinct(tables, 'lang', []), null);
  assert.equal(lookupDistinct(tables, 'lang', undefined), null);
});

test('stripHtml', () => {
  assert.equal(stripHtml('<p>Child needs interim care&nbsp;arrangement</p>'), 'Child needs interim care arrangement');
  assert.equal(stripHtml('a&lt;b&gt;c &amp;amp; <br/>d\n\t e'), 'a<b>c &amp; d e');
  assert.equal(stripHtml('<div><b>x</b>y</div>'), 'x y');
  assert.equal(stripHtml(null), '');
  assert.equal(joinText(['<p> </p>', '', 'b'], ', '), 'b');
  assert.equal(joinText(['', null]), null);
});

// The regex definition stripHtml implements with indexOf (lib/html.js says why).
function stripHtmlByRegex(value) {
  if (value === null || value === undefined) return '';
  const NAMED = { nbsp: ' ', amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
  const decode = (match, body) => {
    if (body[0] === '#') {
      const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      const ok = Number.isFinite(code) && code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
      return ok ? String.fromCodePoint(code) : match;
    }
    return Object.prototype.hasOwnProperty.call(NAMED, body) ? NAMED[body] : match;
  };
  return String(value)
    .replace(/<!--[\s\S]*?-->/g, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);/g, decode)
    .replace(/\s+/g, ' ')
    .trim();
}

test('stripHtml equals its regex definition on random fragments', () => {
  const pieces = ['<', '>', '<!--', '-->', '-', '!', '&', ';', '#', 'x', 'X', '0', '9', 'a', 'F', 'g', 'amp', 'nbsp', 'lt',
    '#65', '#x41', '#xZZ', '#0', '#55296', ' ', '  ', '\t', '\n', '\u00a0', 'é', '<p>', '</p>', '<br/>', 'word',
    'apos', 'quot', 'gt', 'copy', '#X4F', '#x1F600', '#1114112', '&amp;', '&nbsp;', '&#X41;', '&apos;', 'a b'];
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let n = 0; n < 50000; n++) {
    let s = '';
    const len = Math.floor(next() * 12);
    for (let i = 0; i < len; i++) s += pieces[Math.floor(next() * pieces.length)];
    assert.equal(stripHtml(s), stripHtmlByRegex(s), JSON.stringify(s));
  }
});

test('dates', () => {
  assert.equal(datePart('2012-03-15T00:00:00Z'), '2012-03-15');
  assert.equal(datePart('2012-02-30'), null);
  assert.equal(datePart('15/03/2012'), null);
  assert.equal(wholeYears('2012-03-15', '2025-06-01'), 13);
  assert.equal(wholeYears('2012-06-01', '2025-06-01'), 13);
  assert.equal(wholeYears('2012-06-02', '2025-06-01'), 12);
  assert.equal(wholeYears('2012-02-29', '2025-02-28'), 12);
  assert.equal(wholeYears('2012-02-29', '2025-03-01'), 13);
  assert.equal(isoDateTime('2024-05-02'), '2024-05-02T00:00:00Z');
  assert.equal(isoDateTime('2024-05-02T10:20:30.123Z'), '2024-05-02T10:20:30Z');
  assert.equal(isoDateTime('2024-05-02T01:00:00+03:00'), '2024-05-01T22:00:00Z');
  assert.equal(isoDateTime('yesterday'), null);
});

test('requireFields names the first missing key and lists all, without values', () => {
  assert.throws(
    () => requireFields({ a: 'x', b: '', c: '  ' }, ['a', 'b', 'c', 'd']),
    (e) => e.tag === 'bad-input' && e.val.field === 'b' && e.val.reason === 'required fields missing or empty: b, c, d',
  );
  assert.doesNotThrow(() => requireFields({ a: 0 }, ['a']));
});

test('defineJob turns stray exceptions into fatal errors and checks tables', () => {
  const job = defineJob({
    name: 't', version: '0.0.0', flow: 'f', tables: ['sex'],
    map(r) {
      if (r.boom) return r.nothing.here;
      return emit({ ok: true });
    },
  });
  assert.throws(() => job.run({}, '{}'), (e) => e.tag === 'fatal' && /before configure/.test(e.val));
  assert.throws(() => job.configure(JSON.stringify({ tables: {} })), (e) => e.tag === 'fatal' && /sex/.test(e.val));
  job.configure(JSON.stringify({ deployment: {}, tables }));
  const out = job.run({}, '{}');
  assert.equal(out.tag, 'emit');
  assert.equal(new TextDecoder().decode(out.val), '{"ok":true}');
  assert.throws(() => job.run({}, '{"boom":1}'), (e) => e.tag === 'fatal' && /TypeError/.test(e.val));
  assert.throws(() => job.run({}, 'not json'), (e) => e.tag === 'bad-input');
});

test('emit: every record of a batch keeps its own bytes, past the scratch buffer and in any script', () => {
  const job = defineJob({
    name: 't', version: '0.0.0', flow: 'f', tables: [],
    map(r) {
      return emit({ n: r.n, text: r.text });
    },
  });
  job.configure(JSON.stringify({ deployment: {}, tables: {} }));
  const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));
  // Multi-byte text, and records that outgrow the 64 KiB scratch buffer
  // part way through the batch, twice (the bytes before must stay intact).
  const records = [
    { n: 0, text: 'Nyakong Gatluak' },
    { n: 1, text: 'Ñuñez – ﻿ልጅ 👧' },
    { n: 2, text: 'x'.repeat(70_000) },
    { n: 3, text: 'é'.repeat(30_000) },
    { n: 4, text: 'y'.repeat(30_000) },
    { n: 5, text: 'last' },
  ];
  const results = job.runBatch({}, records.map((r) => JSON.stringify(r)));
  assert.deepEqual(results.map((r) => decode(r.val.val)), records);
  // The next call reuses the buffer; one call's bytes are whole until then.
  const again = job.runBatch({}, [JSON.stringify({ n: 6, text: 'again' })]);
  assert.deepEqual(decode(again[0].val.val), { n: 6, text: 'again' });
  assert.deepEqual(decode(job.run({}, JSON.stringify(records[1])).val), records[1]);
});
