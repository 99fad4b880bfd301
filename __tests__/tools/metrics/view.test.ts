// tools/metrics/view.ts and the metric contract (lua/envoy/metrics-contract.ts): what the
// view reads from a scrape, how it renders it, per-minute rates; and against the real
// metrics endpoint of the local rig (real Envoy, its agent, Redis with the library):
// lua/envoy/metrics.lua exports exactly the contract and the view reads it right, with
// Redis up, down, and back empty.
// RECORD_METRICS=<dir> writes the scraped texts there (the metrics-rig*.txt fixtures came
// from it).
import * as fs from 'fs';
import * as path from 'path';
import WebSocket from 'ws';
import { loadConfig } from '../../../config/load';
import { EXPORTED_METRICS, METRICS, REJECT_REASONS } from '../../../lua/envoy/metrics-contract';
import { MetricsSnapshot, ratesBetween, renderScreen, snapshotFrom } from '../../../tools/metrics/view';
import { parseExposition } from '../../../tools/metrics/prometheus';
import { LocalRig } from '../../../tools/rig/rig';
import { ROOT } from '../../support/synth';

const fixture = (name: string) => fs.readFileSync(path.join(__dirname, 'fixtures', name), 'utf8');
const RECORDED = fixture('metrics-recorded.txt');
const AT = Date.UTC(2026, 10, 26, 5, 30, 0);
const snapOf = (text: string, at = AT) => snapshotFrom(parseExposition(text), at);
/** The recorded scrape with one sample's value changed (`name{labels}` as written, not its HELP line). */
const withSample = (text: string, sample: string, from: string | number, to: string | number) => {
  const line = new RegExp(`^${sample.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} ${from}$`, 'm');
  expect(text).toMatch(line);
  return text.replace(line, `${sample} ${to}`);
};

describe('the metric contract', () => {
  it('is what lua/envoy/metrics.lua exports: every family it declares, and every refusal reason it counts', () => {
    const src = fs.readFileSync(path.join(ROOT, 'lua', 'envoy', 'metrics.lua'), 'utf8');
    const literal = [...src.matchAll(/"(ws_admission_[a-z_]+)"/g)].map((m) => m[1]);
    // Families declared in loops over a table of { name, help } ("ws_admission_" .. name, and
    // "_total" for the counters).
    const table = (name: string, suffix = '') => {
      const from = src.indexOf(`local ${name} = {`);
      const block = src.slice(from, src.indexOf('\n}\n', from));
      const names = [...block.matchAll(/^\s*\{ "([a-z_]+)", /gm)].map((m) => `ws_admission_${m[1]}${suffix}`);
      expect({ name, count: names.length > 0 }).toEqual({ name, count: true });
      return names;
    };
    const looped = [...table('COUNTERS', '_total'), ...table('GAUGES'), ...table('CONFIGURED')];
    expect([...new Set([...literal, ...looped])].sort()).toEqual([...EXPORTED_METRICS].sort());
    const reasons = [...src.matchAll(/(?:worker_sample\(|"reason", )"([a-z_]+)"/g)].map((m) => m[1]);
    expect([...new Set(reasons)].sort()).toEqual([...REJECT_REASONS].sort());
  });

  it('is named in docs/internals.md, every metric and nothing else of ours', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'internals.md'), 'utf8');
    expect([...new Set(doc.match(/\bws_admission_[a-z_]+\b/g))].sort()).toEqual([...EXPORTED_METRICS].sort());
  });
});

describe('the metrics view, from a recorded endpoint', () => {
  const snap = snapOf(RECORDED);

  it('reads every metric of the contract', () => {
    expect(snap).toMatchObject({
      pods: [
        { pod: '10.0.1.23:8080', active: 2 },
        { pod: '10.0.2.7:8080', active: 1 },
        { pod: '10.0.3.112:8080', active: 0 },
      ],
      proxies: [
        { proxy: 'envoy-7d9f8b6c4-kx2lp', active: 2 },
        { proxy: 'envoy-7d9f8b6c4-q8z5n', active: 1 },
      ],
      maxConnectionsPerPod: 2,
      admitted: 148,
      // Redis's refusals plus those the workers made from their cache.
      rejected: { rate_limited: 12, capacity: 5, redis_unavailable: 0, recovering: 4, no_backend: 0 },
      released: 139,
      expired: 6,
      reregistered: 3,
      failedUpstream: 2,
      rateWindowUsed: 17,
      podsReachable: 3,
      podsPenalised: 1,
      proxiesLive: 2,
      recovering: 0,
      snapshotAgeSeconds: 1.25,
      rateLimit: 60,
      rateWindowSeconds: 60,
      redisUp: 1,
      redisErrors: 1,
      failOpen: 1,
      reportingProxies: ['envoy-7d9f8b6c4-kx2lp'],
    });
  });

  it('renders the screen (snapshot, 80 columns)', () => {
    expect(renderScreen(snap, { width: 80, source: 'http://127.0.0.1:9901/metrics', intervalSeconds: 2 })).toMatchSnapshot();
  });

  it.each(['metrics-rig.txt', 'metrics-rig-redis-down.txt'])('renders what the local rig served (%s)', (file) => {
    // Recorded by the test below (RECORD_METRICS=...): lua/envoy/metrics.lua in real Envoy.
    expect(renderScreen(snapOf(fixture(file)), { width: 80, source: 'http://127.0.0.1:9901/metrics' })).toMatchSnapshot();
  });

  it.each([40, 60, 80, 132, 200])('keeps every line within %i columns', (width) => {
    const screen = renderScreen(snap, {
      width,
      source: 'deployment/ws-envoy (port-forward http://127.0.0.1:40123/metrics)',
      intervalSeconds: 2,
    });
    for (const line of screen.split('\n')) expect([...line].length).toBeLessThanOrEqual(width);
    expect(screen).toContain('10.0.1.23:8080');
  });

  it('computes per-minute rates from counter deltas, and none across a counter reset', () => {
    let text = withSample(RECORDED, 'ws_admission_admitted_total', 148, 154);
    text = withSample(text, 'ws_admission_rejected_total{reason="rate_limited"}', 9, 11);
    text = withSample(text, 'ws_admission_failed_upstream_total', 2, 3);
    text = withSample(text, 'ws_admission_released_total', 139, 100);
    const later = snapOf(text, AT + 10000);
    const r = ratesBetween(snap, later);
    expect(r.admitted).toBeCloseTo(36);
    expect(r.rejected.rate_limited).toBeCloseTo(12);
    expect(r.rejected.capacity).toBe(0);
    expect(r.failedUpstream).toBeCloseTo(6);
    expect(r.released).toBeUndefined();
    const screen = renderScreen(later, { width: 80, source: 'x', rates: r });
    expect(screen).toMatch(/admitted\s+154\s+36\.0/);
    expect(screen).toMatch(/released\s+100\s+-/);
    expect(screen).toMatch(/failed upstream \(pod passed over\)\s+3\s+6\.0/);
  });

  it('says so when Redis cannot be read: the Redis-held numbers are missing, not zero', () => {
    const down = snapOf(withSample(RECORDED, 'ws_admission_redis_up', 1, 0));
    const screen = renderScreen(down, { width: 100, source: 'x' });
    expect(screen).toContain('Redis DOWN');
    expect(screen).toContain('Redis-held numbers omitted: the agent cannot read Redis (or is not running)');
    expect(screen).not.toContain('Fleet');
  });

  it('says so while Redis recovers a lost state, and shows the fleet', () => {
    const screen = renderScreen(snapOf(withSample(RECORDED, 'ws_admission_recovering', 0, 1)), {
      width: 120,
      source: 'x',
    });
    expect(screen).toContain('RECOVERING: Redis lost its state; nothing is admitted until every proxy has put its streams back');
    expect(screen).toContain('Fleet: 3 pods reachable · 1 passed over · 2 proxies live · data 1.3 s old');
    expect(renderScreen(snap, { width: 120, source: 'x' })).not.toContain('RECOVERING');
  });

  it('colours only when asked, after fitting', () => {
    expect(renderScreen(snap, { width: 80, source: 'x' })).not.toContain('\x1b[');
    expect(renderScreen(snap, { width: 80, source: 'x', color: true })).toContain('\x1b[33m');
  });
});

describe('against the real metrics endpoint of the local rig', () => {
  const BASE_PORT = 22600;
  let rig: LocalRig;
  const sockets: WebSocket[] = [];

  /** Opens a WebSocket through proxy i; the 101, or the refusal's status and reason. */
  function upgrade(i: number): Promise<{ status: number; reason?: string; ws?: WebSocket }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(rig.proxies[i].publicUrl, { handshakeTimeout: 5000 });
      ws.once('upgrade', () => {
        sockets.push(ws);
        resolve({ status: 101, ws });
      });
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        ws.terminate();
        resolve({ status: res.statusCode ?? 0, reason: String(res.headers['x-ws-admission'] ?? '') });
      });
      ws.once('error', (e) => {
        if (!e.message.startsWith('Unexpected server response')) reject(e);
      });
    });
  }

  async function scrape(i = 0): Promise<string> {
    const r = await fetch(rig.proxies[i].metricsUrl);
    expect(r.status).toBe(200);
    return r.text();
  }

  /** Scrapes until the snapshot satisfies `ok` (the agent writes one every metrics_snapshot_ms). */
  async function scrapeUntil(
    what: string,
    ok: (s: MetricsSnapshot) => boolean,
    timeoutMs = 15000,
  ): Promise<{ text: string; snap: MetricsSnapshot }> {
    const start = Date.now();
    for (;;) {
      const text = await scrape();
      const snap = snapOf(text, Date.now());
      if (ok(snap)) return { text, snap };
      if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms; last scrape:\n${text}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  function record(name: string, text: string): void {
    if (process.env.RECORD_METRICS) fs.writeFileSync(path.join(process.env.RECORD_METRICS, name), text);
  }

  beforeAll(async () => {
    rig = await LocalRig.start({
      // Every test client is 127.0.0.1 (one client): the per-client limits are off here.
      config: loadConfig({
        env: {},
        overrides: {
          maxConnectionsPerPod: 2,
          rateLimitPerMinute: 8,
          capacityCacheMs: 0,
          maxConnectionsPerClientPercent: 0,
          rateLimitPerClientPerMinute: 0,
        },
      }),
      basePort: BASE_PORT,
      proxies: 2,
      backends: 2,
      backendsIn: 'inline',
      settingsOverrides: { metrics_snapshot_ms: 200 },
    });
  });
  afterAll(async () => {
    for (const s of sockets) s.terminate();
    await rig?.stop();
  });

  it('serves the contract, and the view reads it: per-pod counts, refusals by reason, the window, the fleet; then Redis down; then back empty', async () => {
    // 2 backends x 2 slots: two sockets through each proxy, one closed and opened again, then full.
    for (const i of [0, 0, 1, 1]) expect((await upgrade(i)).status).toBe(101);
    sockets[3].close(1000);
    await scrapeUntil('the closed socket released', (s) => s.released === 1);
    expect((await upgrade(1)).status).toBe(101);
    expect(await upgrade(0)).toEqual({ status: 503, reason: 'capacity' });

    const { text, snap } = await scrapeUntil(
      'five admitted, four open',
      (s) => s.admitted === 5 && s.pods.reduce((a, p) => a + p.active, 0) === 4,
    );
    record('metrics-rig.txt', text);
    expect(snap.pods.map((p) => p.active)).toEqual([2, 2]);
    expect(snap.proxies).toEqual([
      { proxy: 'envoy-0', active: 2 },
      { proxy: 'envoy-1', active: 2 },
    ]);
    expect(snap).toMatchObject({
      maxConnectionsPerPod: 2,
      admitted: 5,
      released: 1,
      expired: 0,
      reregistered: 0,
      failedUpstream: 0,
      rateWindowUsed: 5,
      rateLimit: 8,
      rateWindowSeconds: 60,
      redisUp: 1,
      podsReachable: 2,
      podsPenalised: 0,
      proxiesLive: 2,
      recovering: 0,
      redisErrors: 0,
      failOpen: 0,
    });
    expect(snap.rejected).toMatchObject({ capacity: 1, rate_limited: 0, redis_unavailable: 0, recovering: 0, no_backend: 0 });
    expect(snap.snapshotAgeSeconds).toBeLessThan(5);
    // Every family of the contract is declared, and nothing else of ours.
    const ours = parseExposition(text)
      .map((f) => f.name)
      .filter((n) => n.startsWith('ws_admission_'));
    expect([...ours].sort()).toEqual([...EXPORTED_METRICS].sort());
    const screen = renderScreen(snap, { width: 80, source: 'rig' });
    expect(screen).toMatch(/127\.0\.1\.1:\d+ +\[█+\] 2\/2 FULL/);
    expect(screen).toMatch(/refused: capacity +1/);
    expect(screen).toMatch(/Rate window \(60 s\) \[█+░+\] 5\/8/);
    expect(screen).toMatch(/Redis UP {3}errors 0 /);
    expect(screen).toContain('Fleet: 2 pods reachable · 0 passed over · 2 proxies live');

    // Redis gone: the endpoint still answers; the Redis-held numbers are omitted, not stale.
    await rig.killRedis();
    expect((await upgrade(0)).status).toBe(101); // fail open: counted per worker
    const down = await scrapeUntil('Redis down in the snapshot', (s) => s.redisUp === 0 && (s.failOpen ?? 0) >= 1);
    record('metrics-rig-redis-down.txt', down.text);
    expect(down.snap).toMatchObject({ pods: [], proxies: [], failOpen: 1, maxConnectionsPerPod: 2, rateLimit: 8 });
    expect(down.snap.redisErrors).toBeGreaterThanOrEqual(1);
    for (const m of [METRICS.admitted, METRICS.released, METRICS.rateWindowUsed, METRICS.podsReachable, METRICS.snapshotAgeSeconds]) {
      expect({ m, present: parseExposition(down.text).some((f) => f.name === m) }).toEqual({ m, present: false });
    }
    // Only the workers' own refusal counts are left (series with proxy and worker).
    const rejected = parseExposition(down.text).find((f) => f.name === METRICS.rejected);
    expect(rejected?.samples.filter((x) => !x.labels.proxy)).toEqual([]);
    const downScreen = renderScreen(down.snap, { width: 80, source: 'rig' });
    expect(downScreen).toContain('Redis DOWN');
    expect(downScreen).toContain('Redis-held numbers omitted');

    // Redis back, empty: the agents put every open stream back, the fail-open one included
    // (on the pod Envoy chose, over the limit if need be: it is open), before admitting again.
    await rig.restartRedis();
    const back = await scrapeUntil('the state recovered', (s) => s.redisUp === 1 && s.recovering === 0 && s.reregistered === 5, 20000);
    expect(back.snap.pods.reduce((a, p) => a + p.active, 0)).toBe(5);
    expect(back.snap.admitted).toBe(0); // a new state: its counters start again
    expect(back.snap.proxiesLive).toBe(2);
  });
});
