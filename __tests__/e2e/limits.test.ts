// The limits through real Envoy: two proxies, three backends, the stack's config.
import { LocalRig } from '../../tools/rig/rig';
import { Opened, Refused, closeAll, connect, echo, metrics, startRig, waitUntil } from './support';

jest.setTimeout(120000);

describe('per-pod limit across two real Envoys', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(21000, { maxConnectionsPerPod: 2, rateLimitPerMinute: 0 });
  });
  afterAll(async () => rig?.stop());

  it('300 concurrent upgrades over both proxies open exactly 6 WebSockets, never more than 2 on a backend; the rest get 503 with Retry-After and never reach a backend', async () => {
    const urls = rig.proxies.map((p) => p.publicUrl);
    const results: Array<Opened | Refused> = await Promise.all(Array.from({ length: 300 }, (_, i) => connect(urls[i % urls.length])));
    try {
      const opened = results.filter((r): r is Opened => r.kind === 'open');
      const refused = results.filter((r): r is Refused => r.kind === 'refused');
      expect(opened).toHaveLength(6);
      expect(refused).toHaveLength(294);
      for (const r of refused) {
        expect(r.status).toBe(503);
        expect(r.headers['x-ws-admission']).toBe('capacity');
        expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      }
      // The backends' own counts: 2 each now, never more at any instant, and only the
      // 6 admitted upgrades ever reached them.
      const counts = await rig.backendCounts();
      for (const id of rig.backendIds) {
        expect(counts[id]).toEqual({ open: 2, peak: 2, upgrades: 2 });
      }
      const perBackend = new Map<string, number>();
      for (const o of opened) perBackend.set(o.backend, (perBackend.get(o.backend) ?? 0) + 1);
      expect([...perBackend.values()]).toEqual([2, 2, 2]);
      // Messages echo through every admitted WebSocket.
      for (const [i, o] of opened.entries()) expect(await echo(o, `hello ${i}`)).toBe(`hello ${i}`);
      // Each proxy's /metrics agrees with the backends' counts and with Redis.
      const leases = await rig.leases();
      // Workers write their cached-refusal counters at most once a second, on an event:
      // a plain request after that second brings every file up to date.
      await new Promise((r) => setTimeout(r, 1100));
      for (const p of rig.proxies) await fetch(p.publicUrl.replace(/^ws:/, 'http:'));
      let byRedis = -1;
      let byWorkers = 0;
      for (const p of rig.proxies) {
        const m = await metrics(p.metricsUrl);
        for (const id of rig.backendIds) {
          expect(m.get(`ws_admission_active_connections{pod="${id}"}`)).toBe(2);
          expect(leases[id]).toBe(2);
        }
        expect(m.get('ws_admission_admitted_total')).toBe(6);
        // Refusals by Redis (every proxy reports the same) and by this proxy's workers
        // from their "full until" cache (capacityCacheMs): together, every refusal once.
        byRedis = m.get('ws_admission_rejected_total{reason="capacity"}')!;
        for (const [k, v] of m) if (k.startsWith('ws_admission_rejected_total{reason="capacity",proxy=')) byWorkers += v;
      }
      expect(byRedis + byWorkers).toBe(294);
      expect(byWorkers).toBeGreaterThan(0); // most of the flood never reached Redis
    } finally {
      closeAll(results);
    }
    // All slots come back (close without handshake from the client: terminate()).
    await waitUntil(async () => Object.values(await rig.leases()).every((n) => n === 0), 5000, 'every lease released');
  });
});

describe('global rate limit across two real Envoys', () => {
  let rig: LocalRig;
  const WINDOW_MS = 3000;
  const LIMIT = 5;
  beforeAll(async () => {
    rig = await startRig(
      21100,
      { maxConnectionsPerPod: 1000, rateLimitPerMinute: LIMIT },
      {
        settingsOverrides: { rate_window_ms: WINDOW_MS },
      },
    );
  });
  afterAll(async () => rig?.stop());

  it('no rolling window admits more than the limit; 429 carries Retry-After and RateLimit-*', async () => {
    const admittedAt: number[] = [];
    const all: Array<Opened | Refused> = [];
    let limited: Refused | undefined;
    const end = Date.now() + 2.5 * WINDOW_MS;
    let i = 0;
    while (Date.now() < end && i < 2000) {
      // Bursts of 4 at once, alternating proxies.
      const burst = await Promise.all([0, 1, 2, 3].map((k) => connect(rig.proxies[(i + k) % 2].publicUrl)));
      i += 4;
      for (const r of burst) {
        all.push(r);
        if (r.kind === 'open') admittedAt.push(Date.now());
        else if (!limited) limited = r;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    closeAll(all);
    // The client sees an admission a little after Redis decided it; 250 ms absorbs that
    // jitter. Over-admission (a race, or fixed buckets meeting at a boundary) puts LIMIT+1
    // admissions within far less than a window.
    admittedAt.sort((a, b) => a - b);
    for (let k = LIMIT; k < admittedAt.length; k++) {
      expect(admittedAt[k] - admittedAt[k - LIMIT]).toBeGreaterThanOrEqual(WINDOW_MS - 250);
    }
    expect(admittedAt.length).toBeGreaterThanOrEqual(LIMIT * 2);
    expect(admittedAt.length).toBeLessThanOrEqual(LIMIT * 3);
    expect(limited).toBeDefined();
    expect(limited!.status).toBe(429);
    expect(Number(limited!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(limited!.headers['ratelimit-limit']).toBe(String(LIMIT));
    expect(limited!.headers['ratelimit-remaining']).toBe('0');
    expect(Number(limited!.headers['ratelimit-reset'])).toBeGreaterThanOrEqual(1);
    // Upgrades refused by the rate limit reached no backend.
    const counts = await rig.backendCounts();
    const upgrades = Object.values(counts).reduce((n, c) => n + c.upgrades, 0);
    expect(upgrades).toBe(admittedAt.length);
  });
});
