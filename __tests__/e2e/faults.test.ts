// Faults through real Envoy: Redis killed and restarted empty, a backend killed, no host list file.
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { LocalRig } from '../../tools/lib/local-rig';
import {
  Opened,
  Refused,
  closeFromClient,
  connect,
  echo,
  metrics,
  startRig,
  sum,
  upgradeUntilAdmitted,
  statusOf,
  waitUntil,
} from './support';

jest.setTimeout(120000);

const RENEW_MS = 500;

/** The first answer that is not Redis being unavailable (the filter backs off 500 ms after a failure). */
async function upgradeUntilAnswered(url: string): Promise<Opened | Refused> {
  for (let i = 0; i < 40; i++) {
    const r = await connect(url);
    if (r.kind === 'open' || r.headers['x-ws-admission'] !== 'redis_unavailable') return r;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('Redis stayed unavailable');
}

describe('Redis goes away (fail open, the default)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      21300,
      { maxConnectionsPerPod: 1, rateLimitPerMinute: 0, idleTimeoutSeconds: 30, renewIntervalSeconds: 3, leaseTtlSeconds: 38 },
      {
        backends: 2,
        settingsOverrides: { renew_interval_ms: RENEW_MS },
      },
    );
  });
  afterAll(async () => rig?.stop());

  it('admits while Redis is down (counted outside Redis), and open connections, the fail-open one too, re-register within a renew interval of an empty restart', async () => {
    const a = await connect(rig.proxies[0].publicUrl);
    const b = await connect(rig.proxies[1].publicUrl);
    expect([a.kind, b.kind]).toEqual(['open', 'open']);
    const held = [a, b] as Opened[];
    expect(new Set(held.map((o) => o.backend)).size).toBe(2);

    await rig.killRedis();
    const c = await connect(rig.proxies[0].publicUrl);
    expect(c.kind).toBe('open'); // fail open: no admission, still pinned to a candidate and tracked
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(m.get('ws_admission_redis_up')).toBe(0);
    expect(sum(m, 'ws_admission_fail_open_total{')).toBeGreaterThanOrEqual(1);
    // Nothing Redis-held is reported as current while Redis is unreachable.
    expect([...m.keys()].some((k) => k.startsWith('ws_admission_active_connections{'))).toBe(false);
    held.push(c as Opened);

    await rig.restartRedis();
    const restarted = Date.now();
    // Traffic on the open connections renews, finds the lease gone, re-registers it; the
    // fail-open one too, so the counts are the truth again (one pod holds two).
    const ticker = setInterval(() => held.forEach((o) => o.ws.send('tick')), 100);
    try {
      await waitUntil(
        async () => {
          const l = await rig.leases();
          return rig.backendIds.reduce((n, id) => n + l[id], 0) === 3;
        },
        5000,
        'all three leases re-registered',
      );
    } finally {
      clearInterval(ticker);
    }
    // One renew interval, plus the filter's 500 ms back-off after the failed calls (and
    // slack for a loaded machine: the lease's own TTL here is 38 s).
    expect(Date.now() - restarted).toBeLessThan(RENEW_MS + 500 + 2500);
    // And the limit holds again: both pods are full.
    const d = await connect(rig.proxies[1].publicUrl);
    expect(d.kind === 'refused' && d.status).toBe(503);
    for (const o of held) await closeFromClient(o);
  });
});

describe('Redis restarted empty while connections are quiet', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(22300, { maxConnectionsPerPod: 1, rateLimitPerMinute: 0, capacityCacheMs: 0 }, { proxies: 1, backends: 2 });
  });
  afterAll(async () => rig?.stop());

  it('the next upgrade first re-registers every open connection of the worker, at once, and is refused: no over-admission', async () => {
    const a = await connect(rig.proxies[0].publicUrl);
    const b = await connect(rig.proxies[0].publicUrl);
    expect([a.kind, b.kind]).toEqual(['open', 'open']); // both pods full (limit 1)
    await rig.killRedis();
    await rig.restartRedis();
    expect(Object.values(await rig.leases())).toEqual([0, 0]); // the state is gone
    // No traffic on a or b: only the new upgrade reaches the worker.
    const c = await upgradeUntilAnswered(rig.proxies[0].publicUrl);
    expect(c.kind === 'refused' && c.headers['x-ws-admission']).toBe('capacity');
    expect(await rig.leases()).toEqual({ [rig.backendIds[0]]: 1, [rig.backendIds[1]]: 1 });
    for (const o of [a, b] as Opened[]) await closeFromClient(o);
  });
});

describe('fail closed, and a backend killed', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(21400, { maxConnectionsPerPod: 2, rateLimitPerMinute: 0, redisFailureMode: 'closed' }, { backends: 2 });
  });
  afterAll(async () => rig?.stop());

  it('a killed backend: the strict override answers 503, the lease is released, and after health checks the host is no candidate', async () => {
    const [dead, alive] = rig.backendIds;
    // One connection on each backend (least-loaded choice).
    const a = await connect(rig.proxies[0].publicUrl);
    const b = await connect(rig.proxies[1].publicUrl);
    expect([a.kind, b.kind]).toEqual(['open', 'open']);
    expect(new Set([a, b].map((o) => (o as Opened).backend))).toEqual(new Set([dead, alive]));
    await rig.backendAction('kill', dead);
    await waitUntil(async () => (await rig.leases())[dead] === 0, 5000, 'the dropped connection released');
    // The dead host is now the least loaded and still a candidate (its health checks have
    // not failed yet): admitted, pinned, and refused by Envoy itself.
    const r = await connect(rig.proxies[1].publicUrl);
    expect(r.kind).toBe('refused');
    if (r.kind !== 'refused') return;
    expect(r.status).toBe(503);
    expect(r.headers['x-ws-admission']).toBeUndefined(); // Envoy's own 503, not a refusal of ours
    await waitUntil(async () => (await rig.leases())[dead] === 0, 2000, "the refused upgrade's lease released");
    // Two failed checks 5 s apart, then the next host list: upgrades go to the live backend only.
    const ms = await waitUntil(
      async () => {
        const x = await connect(rig.proxies[0].publicUrl);
        if (x.kind === 'open') {
          expect(x.backend).toBe(alive);
          return true;
        }
        return false;
      },
      30000,
      'the killed host to leave the candidates',
    );
    expect(ms).toBeLessThan(30000);
    // The live backend is now full. Once the other proxy's own health checks have dropped
    // the dead host too (each Envoy checks on its own), it answers: capacity.
    await waitUntil(
      async () => {
        const x = await connect(rig.proxies[1].publicUrl);
        expect(x.kind).toBe('refused'); // never admitted: the live backend is full
        return x.kind === 'refused' && x.headers['x-ws-admission'] === 'capacity';
      },
      30000,
      'the other proxy to drop the killed host',
    );
    expect((await rig.leases())[dead]).toBe(0);
  });

  it('Redis killed: upgrades get 503 redis_unavailable with Retry-After, counted per worker', async () => {
    await rig.killRedis();
    const r = await connect(rig.proxies[0].publicUrl);
    expect(r.kind).toBe('refused');
    if (r.kind !== 'refused') return;
    expect(r.status).toBe(503);
    expect(r.headers['x-ws-admission']).toBe('redis_unavailable');
    expect(r.headers['retry-after']).toBe('1');
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(sum(m, 'ws_admission_rejected_total{reason="redis_unavailable"')).toBeGreaterThanOrEqual(1);
    expect(m.get('ws_admission_redis_up')).toBe(0);
  });
});

describe('no host list file (no probe reached metrics.lua): the one-way fallback through real Envoy', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    // The rig probes once to get ready, then never again (as outside Kubernetes).
    rig = await startRig(21700, { maxConnectionsPerPod: 1, rateLimitPerMinute: 0 }, { backends: 1, probeIntervalMs: 3_600_000 });
  });
  afterAll(async () => rig?.stop());

  it("the upgrade that fetched the host list itself (httpCall) is passed on by Envoy, counted one-way, and released on the backend's Close", async () => {
    for (const p of rig.proxies) fs.rmSync(path.join(p.stateDir, 'hosts'), { force: true });
    const a = await connect(rig.proxies[0].publicUrl);
    expect(a.kind).toBe('open'); // not held: Envoy continued the headers after the httpCall
    const o = a as Opened;
    expect(await echo(o, 'through')).toBe('through');
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(sum(m, 'ws_admission_one_way_streams_total{')).toBe(1);
    const full = await connect(rig.proxies[1].publicUrl);
    expect(full.kind === 'refused' && full.status).toBe(503);
    // The client starts the close; the backend's answering Close releases the lease.
    await closeFromClient(o);
    const t = await upgradeUntilAdmitted(rig.proxies[1].publicUrl, 3000);
    expect(t.ms).toBeLessThan(1000);
    await closeFromClient(t.opened);
  });
});

describe('a cold worker with no host list file: one admin fetch, not one per upgrade', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      22200,
      { maxConnectionsPerPod: 100, rateLimitPerMinute: 0 },
      { proxies: 1, backends: 2, probeIntervalMs: 3_600_000 },
    );
  });
  afterAll(async () => rig?.stop());

  // Refused, not each fetching too: every fetch makes its stream one-way (renewed on
  // server data only), so 50 fetches would be 50 leases that can lapse while open.
  it('50 concurrent upgrades before the first list: one fetches it, the others are admitted with it or told to retry in 1 s', async () => {
    const adminCalls = async (): Promise<number> => {
      const url = `http://127.0.0.1:${rig.proxies[0].adminPort}/stats?filter=^cluster\\.envoy_admin\\.upstream_rq_total$`;
      return Number(/: (\d+)/.exec(await (await fetch(url)).text())?.[1]);
    };
    const before = await adminCalls();
    expect(before).toBeGreaterThan(0);
    fs.rmSync(path.join(rig.proxies[0].stateDir, 'hosts'), { force: true });
    // Connections first, then every request in the same tick: all 50 reach the worker
    // while the first one waits for the admin.
    const port = rig.proxies[0].publicPort;
    const sockets = await Promise.all(
      Array.from(
        { length: 50 },
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const c = net.connect(port, '127.0.0.1', () => resolve(c));
            c.on('error', reject);
          }),
      ),
    );
    const heads = sockets.map(
      (c) =>
        new Promise<string>((resolve) => {
          let got = '';
          c.on('data', (d) => {
            got += d.toString('latin1');
            if (got.includes('\r\n\r\n')) resolve(got);
          });
          c.on('close', () => resolve(got));
        }),
    );
    const request =
      'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
    for (const c of sockets) c.write(request);
    const answers = await Promise.all(heads);
    for (const c of sockets) c.destroy();
    const upgraded = answers.filter((a) => statusOf(a) === 101).length;
    const retry = answers.filter(
      (a) => statusOf(a) === 503 && /x-ws-admission: no_backend/i.test(a) && /retry-after: 1\r\n/i.test(a),
    ).length;
    expect(upgraded + retry).toBe(50);
    expect(upgraded).toBeGreaterThanOrEqual(1);
    // Envoy's own count of httpCalls to the admin cluster (metrics.lua's probes made some
    // before): one more, the fetch.
    expect(await adminCalls()).toBe(before + 1);
  });
});

describe('the lease log rotated through the real Envoy admin (/reopen_logs)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    // Rotate past ~3 lines, so the loop below rotates many times.
    rig = await startRig(21800, { maxConnectionsPerPod: 1, rateLimitPerMinute: 0 }, { backends: 1, leaseLogRotateBytes: 150 });
  });
  afterAll(async () => rig?.stop());

  it('every dropped connection is still released across rotations, and no old file is left', async () => {
    const id = rig.backendIds[0];
    for (let i = 0; i < 15; i++) {
      const a = await connect(rig.proxies[i % 2].publicUrl);
      expect(a.kind).toBe('open');
      const o = a as Opened;
      const gone = new Promise((r) => o.ws.once('close', r));
      o.ws.terminate(); // no close handshake: only the lease log can release it
      await gone;
      await waitUntil(async () => (await rig.leases())[id] === 0, 5000, `lease ${i} released by the lease log`);
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const p of rig.proxies) {
      expect(fs.existsSync(path.join(p.stateDir, 'leases.log.old'))).toBe(false);
      expect(fs.readFileSync(path.join(rig.workDir, `${p.name}-lease-log.log`), 'utf8')).not.toMatch(/cannot rotate|did not reopen/);
      // Rotated: the file holds only what came since the last rotation.
      expect(fs.statSync(path.join(p.stateDir, 'leases.log')).size).toBeLessThan(400);
    }
  });
});
