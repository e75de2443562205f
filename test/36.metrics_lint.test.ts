/**
 * GET /metrics follows Prometheus' naming rules: `promtool check metrics` on the server's own
 * output (when promtool is installed; skipped with the reason otherwise), and the same rules
 * checked in JS so the test means something without it: HELP and TYPE for every family, counters
 * and only counters end in `_total`, base units (seconds, bytes), durations in seconds, histogram
 * samples complete. The JS lint is itself checked on an exposition that breaks each rule.
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BGEM3 } from '../lib';
import { createServer, type M3Server } from '../lib/server';
import { DEMO_MODEL } from './helpers';

interface Family {
  name: string;
  help?: string;
  type?: string;
  samples: Array<{ name: string; labels: string }>;
}

/** Families of a Prometheus text exposition, in order. */
function parseExposition(text: string): Family[] {
  const families = new Map<string, Family>();
  const family = (name: string) => families.get(name) ?? families.set(name, { name, samples: [] }).get(name)!;
  for (const line of text.split('\n')) {
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]);
      if (meta[1] === 'HELP') f.help = meta[3];
      else f.type = meta[3];
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? \S+/.exec(line);
    if (!sample) continue;
    // A histogram's or summary's samples belong to the family without their suffix.
    const base = sample[1].replace(/_(bucket|sum|count)$/, '');
    const owner = families.has(sample[1]) ? sample[1] : families.has(base) ? base : sample[1];
    family(owner).samples.push({ name: sample[1], labels: sample[2] ?? '' });
  }
  return [...families.values()];
}

/** Units Prometheus wants in base form, and the words that make a name a duration. */
const NON_BASE_UNITS = /_(milliseconds|millis|ms|microseconds|us|nanoseconds|ns|minutes|hours|days|kilobytes|megabytes|gigabytes|kb|mb|gb|percent)(_|$)/;
const DURATION_WORDS = /(^|_)(duration|latency|wait|lag|elapsed)(_|$)/;

/** Every rule a family breaks, as "name: rule". */
function lint(text: string): string[] {
  const problems: string[] = [];
  for (const f of parseExposition(text)) {
    const say = (rule: string) => problems.push(`${f.name}: ${rule}`);
    if (!/^[a-z_:][a-z0-9_:]*$/.test(f.name)) say('not snake_case');
    if (!f.help || !f.help.trim()) say('no HELP text');
    if (!f.type) say('no TYPE');
    if (f.type === 'counter' && !f.name.endsWith('_total')) say('a counter without the _total suffix');
    if (f.type !== 'counter' && f.name.endsWith('_total')) say('a non-counter with the _total suffix');
    if (NON_BASE_UNITS.test(f.name)) say('a unit that is not a base unit (seconds, bytes)');
    if (DURATION_WORDS.test(f.name) && !/_seconds(_total)?$/.test(f.name)) say('a duration not in _seconds');
    if (f.name.endsWith('_info') && f.type !== 'gauge') say('an info metric that is not a gauge');
    if (f.type === 'histogram') {
      const kinds = new Set(f.samples.map((s) => s.name.slice(f.name.length)));
      for (const k of ['_bucket', '_sum', '_count']) if (!kinds.has(k)) say(`a histogram without ${k}`);
      if (!f.samples.some((s) => s.name.endsWith('_bucket') && s.labels.includes('le="+Inf"'))) say('a histogram without its +Inf bucket');
    }
  }
  return problems;
}

describe('GET /metrics passes Prometheus naming rules', () => {
  let model: BGEM3;
  let server: M3Server;
  let text = '';

  before(async () => {
    model = await BGEM3.load(DEMO_MODEL);
    server = await createServer({ model });
    // Some traffic, so histograms and labelled counters have samples.
    const post = (url: string, payload: unknown) => server.app.inject({ method: 'POST', url, payload: payload as string });
    await post('/v1/embeddings', { input: ['one text', 'another text'] });
    await post('/rerank', { query: 'q', documents: ['a', 'b'] });
    await post('/encode', { texts: 5 });
    const res = await server.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    text = res.body;
  });
  after(async () => {
    await server.close();
    await model.dispose();
  });

  it('the JS lint finds nothing, and the server\'s own and Node\'s metrics are there', () => {
    assert.deepEqual(lint(text), []);
    const names = parseExposition(text).map((f) => f.name);
    for (const name of ['bge_m3_http_requests_total', 'bge_m3_http_request_duration_seconds', 'bge_m3_encoded_tokens_total',
      'bge_m3_model_info', 'process_cpu_seconds_total', 'nodejs_active_handles']) {
      assert.ok(names.includes(name), `${name} missing`);
    }
    // prom-client's gauges named like counters are dropped (their labelled gauges stay).
    assert.ok(!names.some((n) => /^nodejs_active_\w+_total$/.test(n)));
  });

  it('the JS lint catches each rule broken', () => {
    const bad = [
      '# HELP a_requests Requests', '# TYPE a_requests counter', 'a_requests 1',
      '# HELP a_open_total Open now', '# TYPE a_open_total gauge', 'a_open_total 1',
      '# TYPE a_nohelp gauge', 'a_nohelp 1',
      '# HELP a_latency_milliseconds Latency', '# TYPE a_latency_milliseconds gauge', 'a_latency_milliseconds 1',
      '# HELP a_wait Wait', '# TYPE a_wait histogram', 'a_wait_bucket{le="1"} 1', 'a_wait_sum 1', 'a_wait_count 1',
    ].join('\n');
    assert.deepEqual(lint(bad), [
      'a_requests: a counter without the _total suffix',
      'a_open_total: a non-counter with the _total suffix',
      'a_nohelp: no HELP text',
      'a_latency_milliseconds: a unit that is not a base unit (seconds, bytes)',
      'a_latency_milliseconds: a duration not in _seconds',
      'a_wait: a duration not in _seconds',
      'a_wait: a histogram without its +Inf bucket',
    ]);
  });

  const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  const skip = promtool.error || promtool.status !== 0 ? 'promtool is not installed (apt-get install prometheus provides it)' : false;
  it('promtool check metrics accepts it', { skip }, () => {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
  });
});
