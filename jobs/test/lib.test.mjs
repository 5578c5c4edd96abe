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
