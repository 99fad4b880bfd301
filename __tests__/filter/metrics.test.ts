// lua/envoy/metrics.lua (the metrics listener's Lua filter): its output must parse
// with the Prometheus project's own text-format parser (python3-prometheus-client,
// prometheus_client.parser.text_string_to_metric_families) and match Redis state.
import { spawnSync } from 'child_process';
import * as net from 'net';
import { freePort, startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, PLAIN, openSocket, sleep, liveLeases, statsHash, Worker } from './harness/worker';

const PYTHON = process.env.TEST_PROM_PYTHON ?? '/usr/bin/python3';
const PARSE = `
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.stderr.write("python3-prometheus-client is missing: apt-get install python3-prometheus-client\\n")
    sys.exit(3)
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
`;

interface Sample {
  family: string;
  type: string;
  name: string;
  labels: Record<string, string>;
  value: number;
}

// The npm parser already in package.json; used only when the Python one is not installed
// (CI should install python3-prometheus-client: the Prometheus project's own parser).

// The package ships no types; this is its documented shape.
type NpmFamilies = Array<{ name: string; type: string; metrics: Array<{ value: string; labels?: Record<string, string> }> }>;
// eslint-disable-next-line @typescript-eslint/no-require-imports -- no type declarations to import
const parseNpm = require('parse-prometheus-text-format') as (t: string) => NpmFamilies;

let warned = false;
function parse(text: string): Sample[] {
  const r = spawnSync(PYTHON, ['-c', PARSE], { input: text, encoding: 'utf8' });
  if (r.status === 3 || (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT')) {
    if (!warned) {
      warned = true;

      console.warn('python3-prometheus-client not installed; parsing with parse-prometheus-text-format instead');
    }
    return parseNpm(text).flatMap((f) =>
      f.metrics.map((m) => ({
        family: f.name,
        type: f.type.toLowerCase(),
        name: f.name,
        labels: m.labels ?? {},
        value: Number(m.value),
      })),
    );
  }
  if (r.status !== 0) throw new Error(`prometheus parser failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const s = samples.find(
    (x) =>
      x.name === name &&
      Object.keys(labels).length === Object.keys(x.labels).length &&
      Object.entries(labels).every(([k, v]) => x.labels[k] === v),
  );
  return s?.value;
}

let redis: RedisServer;
let fleet: Fleet;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

async function scrape(m: Worker): Promise<{ text: string; samples: Sample[]; status: string; type: string }> {
  const r = await m.request([
    [':method', 'GET'],
    [':path', '/metrics'],
    [':authority', 'localhost:9901'],
  ]);
  expect(r.state).toBe('responded');
  const text = r.reply!.body ?? '';
  return { text, samples: parse(text), status: r.reply!.headers[':status'], type: r.reply!.headers['content-type'] };
}

const settings = { max_connections_per_pod: 2, lease_ttl_ms: 800, renew_interval_ms: 200, rate_limit: 8, rate_window_ms: 60000 };

describe('metrics endpoint', () => {
  it('parses with the Prometheus text parser, has HELP and TYPE for every family, and matches Redis', async () => {
    const a = await fleet.worker(settings, { podName: 'envoy-a' });
    const b = await fleet.worker(settings, { podName: 'envoy-b' });
    const m = await fleet.worker(settings, { podName: 'envoy-a', script: 'metrics.lua' });
    const kept = [await openSocket(a), await openSocket(a), await openSocket(b)];
    const released = await openSocket(b);
    await b.closeHandshake(released.sid);
    const dropped = await openSocket(a);
    await a.reset(dropped.sid); // will expire
    const full = await b.request(UPGRADE); // 2 pods x 2: full now
    expect(full.reply?.headers[':status']).toBe('503');
    // Wait until `dropped` has expired, keeping the others alive with traffic.
    const owner = [a, a, b];
    const t0 = Date.now();
    while (Date.now() - t0 < 1000) {
      for (let i = 0; i < kept.length; i++) await owner[i].data(kept[i].sid, 'response');
      await sleep(50);
    }
    // The rate limit (8) is not reached yet: 5 admitted.
    const { text, samples, status, type } = await scrape(m);
    expect(status).toBe('200');
    expect(type).toBe('text/plain; version=0.0.4; charset=utf-8');

    // Every sample belongs to a family declared with HELP and TYPE.
    const helps = new Set([...text.matchAll(/^# HELP (\S+) /gm)].map((x) => x[1]));
    const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((x) => [x[1], x[2]]));
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) {
      const name = line.split(/[{ ]/)[0];
      expect(types.has(name)).toBe(true);
      expect(helps.has(name)).toBe(true);
      if (name.endsWith('_total')) expect(types.get(name)).toBe('counter');
    }

    // Numbers = Redis state (the scrape prunes expired leases first).
    const st = statsHash(redis.cli);
    for (const pod of ['10.0.0.1:8080', '10.0.0.2:8080']) {
      const live = liveLeases(redis.cli, pod).length;
      expect(value(samples, 'ws_admission_active_connections', { pod })).toBe(live);
    }
    expect(
      (value(samples, 'ws_admission_active_connections', { pod: '10.0.0.1:8080' }) ?? 0) +
        (value(samples, 'ws_admission_active_connections', { pod: '10.0.0.2:8080' }) ?? 0),
    ).toBe(3);
    expect(value(samples, 'ws_admission_active_connections_by_proxy', { proxy: 'envoy-a' })).toBe(2);
    expect(value(samples, 'ws_admission_active_connections_by_proxy', { proxy: 'envoy-b' })).toBe(1);
    expect(value(samples, 'ws_admission_admitted_total')).toBe(st.admitted);
    expect(st.admitted).toBe(5);
    expect(value(samples, 'ws_admission_released_total')).toBe(1);
    expect(value(samples, 'ws_admission_expired_total')).toBe(1);
    expect(value(samples, 'ws_admission_rejected_total', { reason: 'capacity' })).toBe(1);
    expect(value(samples, 'ws_admission_rejected_total', { reason: 'rate_limited' })).toBe(0);
    expect(value(samples, 'ws_admission_rate_window_used')).toBe(Number(redis.cli('ZCARD', '{ws}:rate')));
    expect(value(samples, 'ws_admission_rate_window_used')).toBe(5);
    expect(value(samples, 'ws_admission_rate_limit')).toBe(8);
    expect(value(samples, 'ws_admission_rate_window_seconds')).toBe(60);
    expect(value(samples, 'ws_admission_max_connections_per_pod')).toBe(2);
    expect(value(samples, 'ws_admission_redis_up')).toBe(1);
  });

  it('when Redis is down: redis_up 0, Redis-held numbers omitted, per-worker counters still served', async () => {
    const a = await fleet.worker({ ...settings, failure_mode: 'open' }, { podName: 'envoy-a' });
    const m = await fleet.worker(settings, { podName: 'envoy-a', script: 'metrics.lua' });
    await openSocket(a);
    await redis.stop();
    try {
      await a.request(UPGRADE); // fail open, counted
      await a.request(UPGRADE);
      await sleep(1050);
      await a.request(PLAIN); // the counter file is rewritten on the next event after ~1 s
      const { samples } = await scrape(m);
      expect(value(samples, 'ws_admission_redis_up')).toBe(0);
      for (const gone of [
        'ws_admission_active_connections',
        'ws_admission_active_connections_by_proxy',
        'ws_admission_admitted_total',
        'ws_admission_released_total',
        'ws_admission_expired_total',
        'ws_admission_rate_window_used',
      ]) {
        expect(samples.filter((s) => s.name === gone)).toEqual([]);
      }
      // Redis-held refusals ({reason} only) are gone; the workers' own ({reason,proxy,worker}) stay.
      const rejected = samples.filter((s) => s.name === 'ws_admission_rejected_total');
      expect(rejected.filter((s) => !s.labels.proxy)).toEqual([]);
      expect(rejected.map((s) => s.labels.reason).sort()).toEqual(['capacity', 'rate_limited', 'redis_unavailable']);
      expect(rejected.every((s) => s.labels.proxy === 'envoy-a' && /^[0-9a-f]{6}$/.test(s.labels.worker))).toBe(true);
      const fo = samples.filter((s) => s.name === 'ws_admission_fail_open_total');
      expect(fo).toHaveLength(1);
      expect(fo[0].labels.proxy).toBe('envoy-a');
      expect(fo[0].labels.worker).toMatch(/^[0-9a-f]{6}$/);
      expect(fo[0].value).toBe(2);
      const errs = samples.find((s) => s.name === 'ws_admission_redis_errors_total');
      expect(errs?.value).toBeGreaterThanOrEqual(1);
      expect(value(samples, 'ws_admission_rate_limit')).toBe(8); // configuration is always known
    } finally {
      await redis.restart();
    }
  });

  it('a Redis that accepts but never answers costs one read timeout, then scrapes back off (no Redis call for 2 s)', async () => {
    const port = await freePort();
    const held: net.Socket[] = [];
    const srv = net.createServer((sock) => {
      held.push(sock);
      sock.on('data', () => undefined);
    }); // accepts, never answers
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    try {
      const fl = new Fleet(port);
      const m = await fl.worker({ ...settings, redis_read_timeout_ms: 200 }, { script: 'metrics.lua' });
      const t0 = Date.now();
      for (let i = 0; i < 10; i++) {
        const { samples } = await scrape(m);
        expect(value(samples, 'ws_admission_redis_up')).toBe(0);
      }
      // One attempt (one connection, one read timeout), not ten.
      expect(held).toHaveLength(1);
      expect(Date.now() - t0).toBeLessThan(10 * 200);
      await fl.closeAll();
    } finally {
      held.forEach((s) => s.destroy());
      srv.close();
    }
  });

  it('escapes label values (a lease written by someone else with ", \\ and a newline in its proxy part)', async () => {
    const m = await fleet.worker(settings, { script: 'metrics.lua' });
    const proxy = 'ev"il\\x\nq';
    redis.cli('ZADD', '{ws}:leases', String(Date.now() + 60000), `${proxy}|abcdef|1|abcdef 10.0.0.1:8080`);
    redis.cli('ZADD', '{ws}:load', '1', '10.0.0.1:8080', '1', 'not-a-pod"x');
    redis.cli('HSET', '{ws}:stats', `leases:${proxy}`, '1'); // the proxy's count, as the scripts keep it
    const { text, samples } = await scrape(m);
    expect(text).toContain('proxy="ev\\"il\\\\x\\nq"');
    expect(value(samples, 'ws_admission_active_connections_by_proxy', { proxy })).toBe(1);
    expect(value(samples, 'ws_admission_active_connections', { pod: '10.0.0.1:8080' })).toBe(1);
    expect(samples.filter((s) => s.labels.pod === 'not-a-pod"x')).toEqual([]); // pod ids from Redis are re-validated
  });

  it('serves only the metrics path: other paths pass through to their routes; POST is refused', async () => {
    const m = await fleet.worker(settings, { script: 'metrics.lua' });
    const other = await m.request([
      [':method', 'GET'],
      [':path', '/stats/prometheus'],
    ]);
    expect(other.state).toBe('done');
    expect(other.reply).toBeUndefined();
    const withQuery = await m.request([
      [':method', 'GET'],
      [':path', '/metrics?x=1'],
    ]);
    expect(withQuery.reply?.headers[':status']).toBe('200');
    const post = await m.request([
      [':method', 'POST'],
      [':path', '/metrics'],
    ]);
    expect(post.reply?.headers[':status']).toBe('405');
  });
});
