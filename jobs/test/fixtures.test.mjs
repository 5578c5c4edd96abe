// Runs every jobs/<job>/fixtures/<case>.record.json through jobs/<job>/index.js
// in plain node and compares with <case>.expected.json, in the format of
// `bridge job run --expect`. No component build needed: the job's only import,
// bridge:job/log@0.2.0, is mapped to a stub by ./hooks.mjs.
import { register } from 'node:module';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import {
  ALLOWED_LOG_FIELDS, fixtureSettings, fixtures, jobNames, jobsDir, loadMappings, runReport,
} from './harness.mjs';

register('./hooks.mjs', import.meta.url);

const logCalls = (globalThis.__bridgeJobLog ??= []);
const LEVELS = ['debug', 'info', 'warn', 'error'];
// Source keys holding personal data: their values must never reach a log line.
const PERSONAL_KEY = /givenname|familyname|middlename|commonyusedname|dateofbirth|phonenumber|mobilephone|emailaddress|coalocationlevel/i;

function personalValues(value, key = '', out = new Set()) {
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) personalValues(v, k, out);
  } else if (PERSONAL_KEY.test(key) && value !== null && value !== undefined && String(value).length >= 3) {
    out.add(String(value));
  }
  return out;
}

for (const name of jobNames()) {
  describe(name, async () => {
    const job = await import(pathToFileURL(join(jobsDir, name, 'index.js')).href);
    const settings = fixtureSettings(name);
    const info = job.describe();

    test('describe() matches the folder and is complete', () => {
      assert.equal(info.name, name);
      assert.match(info.version, /^\d+\.\d+\.\d+/);
      assert.equal(typeof info.flow, 'string');
      assert.ok(Array.isArray(info.tables) && info.tables.every((t) => typeof t === 'string'));
    });

    const mappings = loadMappings(settings.mappings);
    test(`configure() accepts mappings/${settings.mappings}`, () => {
      const missing = info.tables.filter((t) => !(t in mappings.tables));
      assert.deepEqual(missing, [], `tables missing from mappings/${settings.mappings}`);
      assert.equal(job.configure(JSON.stringify(mappings)), undefined);
    });

    const cases = fixtures(name);
    test('has fixtures', () => assert.ok(cases.length > 0, `no ${name}/fixtures/*.record.json`));

    const ctx = { flow: settings.flow ?? info.flow, runId: settings.runId, today: settings.today, dryRun: true };
    for (const fx of cases) {
      test(`fixture ${fx.name}`, () => {
        assert.ok(fx.expected !== undefined, `${fx.expectedPath} is missing`);
        logCalls.length = 0;
        const actual = runReport(job, ctx, fx.record);
        assert.deepStrictEqual(actual, fx.expected, `${fx.name}: outcome differs from ${fx.expectedPath}`);

        const secrets = personalValues(fx.record);
        for (const call of logCalls) {
          assert.ok(LEVELS.includes(call.level), `log level ${call.level}`);
          assert.equal(typeof call.message, 'string');
          assert.ok(Array.isArray(call.fields), 'log fields must be a list of [key, value]');
          for (const pair of call.fields) {
            assert.ok(Array.isArray(pair) && pair.length === 2 && pair.every((s) => typeof s === 'string'), 'log field must be [string, string]');
            assert.ok(ALLOWED_LOG_FIELDS.includes(pair[0]), `log field "${pair[0]}" is not on the host's allow-list (it would be dropped)`);
          }
          const line = JSON.stringify(call);
          for (const s of secrets) assert.ok(!line.includes(s), `a log line carries a personal value from the record (${fx.name})`);
        }
        if (actual.outcome === 'error') {
          const text = actual.reason ?? actual.message ?? '';
          for (const s of secrets) assert.ok(!text.includes(s), `the error reason carries a personal value (${fx.name})`);
        }
      });
    }
  });
}
