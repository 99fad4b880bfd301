// lua/envoy/metrics.lua, the metrics listener's filter: it never calls Redis. It serves the
// snapshot the agent writes from one ws_snapshot call (lua/envoy/snapshot_file.lua), the
// public filter's per-worker counter files (worker_stats.lua) and the settings. Its output
// must pass the Prometheus project's own text parser and equal what Redis holds.
import * as fs from 'fs';
import * as path from 'path';
import { STATE_FILES } from '../../envoy/bootstrap';
import { PODS, useAdmissionRig } from '../support/admission-rig';
import { Sample, parsePrometheus, sampleValue } from '../support/prometheus';
import { PLAIN, UPGRADE, Worker, defaultSettings, openSocket, settingsLua } from './harness/worker';

const rig = useAdmissionRig();
const [P1, P2] = PODS;
const P3 = '10.0.0.3:8080';
const settings = { max_connections_per_pod: 2, rate_limit: 8, rate_window_ms: 60000, penalty_ms: 60000 };

async function scrape(m: Worker, p = '/metrics', method = 'GET') {
  const r = await m.request([
    [':method', method],
    [':path', p],
    [':authority', 'localhost:9901'],
  ]);
  const text = r.reply?.body ?? '';
  return { r, text, status: r.reply?.headers[':status'], samples: text === '' ? [] : parsePrometheus(text) };
}

/** Families (name -> type) declared with both HELP and TYPE; every sample must belong to one. */
function expectDeclared(text: string, samples: Sample[]): void {
  const helps = new Set([...text.matchAll(/^# HELP (\S+) \S/gm)].map((x) => x[1]));
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((x) => [x[1], x[2]]));
  expect([...helps].sort()).toEqual([...types.keys()].sort());
  for (const s of samples) {
    expect({ sample: s.name, declared: types.has(s.name) }).toEqual({ sample: s.name, declared: true });
    if (s.name.endsWith('_total')) expect(types.get(s.name)).toBe('counter');
  }
}

describe('the metrics endpoint', () => {
  it("GIVEN admissions, releases, a failed upgrade, a refusal and an expiry over 3 proxies WHEN the agent's snapshot is served THEN it parses and equals Redis", async () => {
    const a = await rig.worker(settings, { proxy: 'envoy-a' });
    const b = await rig.worker(settings, { proxy: 'envoy-b' });
    const c = await rig.worker({ ...settings, lease_ttl_ms: 300, renew_interval_ms: 100 }, { proxy: 'envoy-c', pods: [P3] });
    const m = await rig.worker(settings, { proxy: 'envoy-a', script: 'metrics.lua' });
    expect([(await openSocket(a)).pod, (await openSocket(a)).pod, (await openSocket(b)).pod]).toEqual([P1, P2, P1]);
    const refusedByBackend = await b.request(UPGRADE);
    await b.response(refusedByBackend.sid, '403'); // X
    const neverReached = await a.request(UPGRADE);
    await a.localReply(neverReached.sid, 'UF'); // F: P2 penalised, its window entry back
    expect((await b.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity'); // P1 full, P2 passed over
    expect((await openSocket(c)).pod).toBe(P3);
    await new Promise((r) => setTimeout(r, 400)); // c's lease expires; the snapshot gives it back
    await rig.agentSnapshot(settings);

    const { r, text, status, samples } = await scrape(m);
    expect(status).toBe('200');
    expect(r.reply?.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    expectDeclared(text, samples);
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(samples, name, labels);
    expect(samples.filter((s) => s.name === 'ws_admission_active_connections').map((s) => [s.labels.pod, s.value])).toEqual([
      [P1, 2],
      [P2, 1],
    ]);
    expect(v('ws_admission_active_connections_by_proxy', { proxy: 'envoy-a' })).toBe(2);
    expect(v('ws_admission_active_connections_by_proxy', { proxy: 'envoy-b' })).toBe(1);
    expect(v('ws_admission_active_connections_by_proxy', { proxy: 'envoy-c' })).toBeUndefined();
    expect(await rig.stats()).toEqual({ admitted: 6, released: 2, failed_upstream: 1, rejected_capacity: 1, expired: 1 });
    expect({
      admitted: v('ws_admission_admitted_total'),
      released: v('ws_admission_released_total'),
      failed: v('ws_admission_failed_upstream_total'),
      expired: v('ws_admission_expired_total'),
      reregistered: v('ws_admission_reregistered_total'),
      capacity: v('ws_admission_rejected_total', { reason: 'capacity' }),
      rateLimited: v('ws_admission_rejected_total', { reason: 'rate_limited' }),
    }).toEqual({ admitted: 6, released: 2, failed: 1, expired: 1, reregistered: 0, capacity: 1, rateLimited: 0 });
    expect(v('ws_admission_rate_window_used')).toBe(await rig.admin.zcard(rig.f.keys.rate));
    expect(v('ws_admission_rate_window_used')).toBe(5);
    expect({
      reachable: v('ws_admission_pods_reachable'),
      penalised: v('ws_admission_pods_penalised'),
      live: v('ws_admission_proxies_live'),
      recovering: v('ws_admission_recovering'),
    }).toEqual({ reachable: 3, penalised: 1, live: 3, recovering: 0 });
    expect({
      limit: v('ws_admission_rate_limit'),
      window: v('ws_admission_rate_window_seconds'),
      max: v('ws_admission_max_connections_per_pod'),
    }).toEqual({
      limit: 8,
      window: 60,
      max: 2,
    });
    expect(v('ws_admission_redis_up')).toBe(1);
    expect(v('ws_admission_snapshot_age_seconds')).toBeLessThan(5);
  });

  it('GIVEN a client over its own limits THEN its refusals count under reason "client" (never a label per client), and clients_tracked counts the clients holding a socket', async () => {
    const perClient = { ...settings, rate_limit_per_client: 2, max_connections_per_client: 1 };
    const a = await rig.worker(perClient, { proxy: 'envoy-a' });
    const m = await rig.worker(perClient, { proxy: 'envoy-a', script: 'metrics.lua' });
    const from = (remote: string) => a.request(UPGRADE, undefined, remote);
    const first = await from('198.51.100.7:5000');
    await a.response(first.sid, '101');
    expect((await from('198.51.100.7:5001')).reply?.headers['x-ws-admission']).toBe('client'); // its one socket
    expect((await from('198.51.100.7:5002')).reply?.headers['x-ws-admission']).toBe('client');
    const other = await from('198.51.100.8:5000');
    await a.response(other.sid, '101');
    await rig.agentSnapshot(perClient);
    const { text, samples } = await scrape(m);
    expectDeclared(text, samples);
    expect(sampleValue(samples, 'ws_admission_rejected_total', { reason: 'client' })).toBe(2);
    expect(sampleValue(samples, 'ws_admission_clients_tracked')).toBe(2);
    expect(samples.filter((x) => x.name === 'ws_admission_rejected_total' && !x.labels.proxy).map((x) => x.labels)).toEqual([
      { reason: 'rate_limited' },
      { reason: 'capacity' },
      { reason: 'client' },
    ]);
    expect({
      max: sampleValue(samples, 'ws_admission_max_connections_per_client'),
      percent: sampleValue(samples, 'ws_admission_max_connections_per_client_percent'),
      rate: sampleValue(samples, 'ws_admission_rate_limit_per_client'),
    }).toEqual({ max: 1, percent: 0, rate: 2 });
  });

  it('GIVEN no snapshot, or the agent\'s "Redis unavailable", or a stale one THEN redis_up 0, Redis-held series omitted, the workers\' counters and the limits still served', async () => {
    const a = await rig.worker({ ...settings, failure_mode: 'open' }, { proxy: 'envoy-a' });
    const m = await rig.worker(settings, { proxy: 'envoy-a', script: 'metrics.lua' });
    await a.clock({ at: Date.now() });
    await rig.stopRedis();
    await a.request(UPGRADE); // fail open, counted at once
    await a.request(UPGRADE);
    await a.clock({ advance: 1001 });
    await a.request(PLAIN);
    const snapshotFile = path.join(rig.fleet.stateDir, STATE_FILES.snapshot);
    const cases: Array<[string, () => void, RegExp]> = [
      ['missing', () => undefined, /no snapshot yet/],
      [
        'Redis unavailable',
        () => fs.writeFileSync(snapshotFile, `ws-admission-snapshot 1\nwritten_ms ${Date.now()}\nredis_up 0\nerror connect refused\nend\n`),
        /connect refused/,
      ],
      [
        'stale',
        () => fs.writeFileSync(snapshotFile, `ws-admission-snapshot 1\nwritten_ms ${Date.now() - 60000}\nredis_up 1\nwindow_used 3\nend\n`),
        /snapshot \d+ ms old/,
      ],
    ];
    for (const [what, make, logged] of cases) {
      make();
      const { samples, text } = await scrape(m);
      expectDeclared(text, samples);
      expect({ what, up: sampleValue(samples, 'ws_admission_redis_up') }).toEqual({ what, up: 0 });
      for (const gone of [
        'active_connections',
        'active_connections_by_proxy',
        'admitted_total',
        'released_total',
        'rate_window_used',
        'pods_reachable',
      ]) {
        expect(samples.filter((s) => s.name === `ws_admission_${gone}`)).toEqual([]);
      }
      // Redis-held refusals ({reason} only) are gone; the workers' own ({reason,proxy,worker}) stay.
      const rejected = samples.filter((s) => s.name === 'ws_admission_rejected_total');
      expect(rejected.filter((s) => !s.labels.proxy)).toEqual([]);
      expect(rejected.map((s) => s.labels.reason).sort()).toEqual([
        'capacity',
        'no_backend',
        'rate_limited',
        'recovering',
        'redis_unavailable',
      ]);
      const fo = samples.filter((s) => s.name === 'ws_admission_fail_open_total');
      expect(fo).toEqual([
        expect.objectContaining({ labels: { proxy: 'envoy-a', worker: expect.stringMatching(/^[0-9a-f]{6}$/) }, value: 2 }),
      ]);
      expect(sampleValue(samples, 'ws_admission_redis_errors_total', fo[0].labels)).toBe(1);
      expect(sampleValue(samples, 'ws_admission_rate_limit')).toBe(8);
      expect((await m.logs()).logs.map((l) => l.msg)).toContainEqual(expect.stringMatching(logged)); // once per change of reason
    }
  });

  it('never calls Redis: 20 scrapes, no connection to it', async () => {
    const m = await rig.worker(settings, { script: 'metrics.lua' });
    await rig.agentSnapshot(settings);
    const connections = async () => Number(/total_connections_received:(\d+)/.exec(await rig.admin.info('stats'))![1]);
    const before = await connections();
    for (let i = 0; i < 20; i++) expect((await scrape(m)).status).toBe('200');
    expect(await connections()).toBe(before);
  });

  it('escapes label values it did not make (a counter file with " and \\ in its proxy)', async () => {
    const m = await rig.worker(settings, { script: 'metrics.lua' });
    const dir = rig.fleet.stateDir;
    fs.writeFileSync(path.join(dir, 'odd.abcdef.counters'), 'proxy ev"il\\x\nworker abcdef\nfail_open_total 3\n');
    fs.appendFileSync(path.join(dir, 'workers.index'), 'odd.abcdef.counters\n');
    const { text, samples } = await scrape(m);
    expect(text).toContain('proxy="ev\\"il\\\\x"');
    expect(sampleValue(samples, 'ws_admission_fail_open_total', { proxy: 'ev"il\\x', worker: 'abcdef' })).toBe(3);
  });

  it('serves only its path: other paths pass through to their routes; POST is refused, HEAD has no body', async () => {
    const m = await rig.worker(settings, { script: 'metrics.lua' });
    const other = await scrape(m, '/stats/prometheus');
    expect({ state: other.r.state, reply: other.r.reply }).toEqual({ state: 'done', reply: undefined });
    expect((await scrape(m, '/metrics?x=1')).status).toBe('200');
    expect((await scrape(m, '/metrics', 'POST')).r.reply?.headers).toEqual({ ':status': '405', allow: 'GET, HEAD' });
    const head = await scrape(m, '/metrics', 'HEAD');
    expect([head.status, head.text]).toEqual(['200', '']);
  });

  it('GIVEN metrics_path /ws-metrics THEN it is served there and /metrics passes through', async () => {
    const m = await rig.worker({ ...settings, metrics_path: '/ws-metrics' }, { script: 'metrics.lua' });
    expect((await scrape(m, '/ws-metrics')).status).toBe('200');
    expect((await scrape(m, '/metrics')).r.reply).toBeUndefined();
  });

  it('GIVEN settings it refuses THEN it still serves what it knows (no limits), and logs why once', async () => {
    const s: Record<string, unknown> = { ...defaultSettings(rig.redis.port) };
    delete s.rate_limit;
    const m = await rig.worker({}, { script: 'metrics.lua', settings: settingsLua(s) });
    const { samples } = await scrape(m);
    expect(sampleValue(samples, 'ws_admission_redis_up')).toBe(0);
    expect(samples.filter((x) => x.name === 'ws_admission_rate_limit')).toEqual([]);
    await scrape(m);
    expect((await m.logs()).logs.filter((l) => l.msg.includes('settings.rate_limit is missing'))).toHaveLength(1);
  });
});
