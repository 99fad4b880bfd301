/**
 * `npm run e2e:check`: drives the compose kit (e2e/docker-compose.yml) through the
 * public listeners of both proxies and checks, against the limits in .e2e/expect.json:
 *
 *   1. the per-pod limit: maxConnectionsPerPod x backends are admitted (spread over
 *      every backend), the next one is refused 503;
 *   2. release on close: closing one frees its slot for the next client;
 *   3. the rate limit: the window's remaining upgrades are admitted, the next one is
 *      refused 429 with Retry-After;
 *   4. the metrics of both proxies agree with what the client saw (each proxy's agent
 *      snapshots Redis every few seconds: the checks wait for a snapshot that does).
 *
 * Redis state is flushed first (the kit's Redis is published on 127.0.0.1:16379): Redis
 * then has no state epoch, the agents recover it (register their hosts again) and the
 * check waits for that before the first upgrade.
 */
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';
import WebSocket from 'ws';
import { READY_PATH } from '../envoy/bootstrap';
import { parseExposition, SampleSet } from '../tools/metrics/prometheus';
import { METRICS } from '../lua/envoy/metrics-contract';
import type { Expectations } from './generate';
import { wsText } from '../tools/rig/ws-data';

interface Opened {
  readonly status: number;
  readonly ws?: WebSocket;
  readonly servedBy?: string;
  readonly headers: Record<string, string | string[] | undefined>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Opens a WebSocket; answers 101 with the socket (and the echo server's greeting) or the refusal status. */
export function open(url: string, timeoutMs = 5000): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
      ws.terminate();
    });
    ws.once('upgrade', (res) => {
      // jmalloc/echo-server greets with "Request served by <hostname>".
      const t = setTimeout(() => resolve({ status: 101, ws, headers: res.headers }), 1500);
      ws.once('message', (data) => {
        clearTimeout(t);
        const m = /served by (\S+)/.exec(wsText(data));
        resolve({ status: 101, ws, servedBy: m?.[1], headers: res.headers });
      });
    });
    ws.once('error', reject);
  });
}

function closeAll(list: Opened[]): Promise<void> {
  return Promise.all(
    list.map(
      (o) =>
        new Promise<void>((r) => {
          if (!o.ws || o.ws.readyState === WebSocket.CLOSED) return r();
          o.ws.once('close', () => r());
          o.ws.close(1000, 'e2e');
        }),
    ),
  ).then(() => undefined);
}

async function scrape(url: string): Promise<SampleSet> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return new SampleSet(parseExposition(await res.text()));
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
    await sleep(500);
  }
}

/** Scrapes `url` until `ok` holds for its samples (the agent's next snapshot); undefined when it never did. */
async function scrapeUntil(url: string, timeoutMs: number, ok: (s: SampleSet) => boolean): Promise<SampleSet | undefined> {
  let last: SampleSet | undefined;
  return until(`${url} to show it`, timeoutMs, async () => {
    last = await scrape(url);
    return ok(last) ? last : undefined;
  }).catch(() => last);
}

const sum = (m: Map<string, number>): number => [...m.values()].reduce((p, n) => p + n, 0);

class Report {
  passed = 0;
  failed = 0;
  check(name: string, ok: boolean, detail: string): void {
    if (ok) this.passed++;
    else this.failed++;
    process.stdout.write(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}\n`);
  }
}

export async function main(): Promise<number> {
  const root = path.resolve(__dirname, '..');
  const expectFile = path.join(root, '.e2e', 'expect.json');
  if (!fs.existsSync(expectFile)) {
    process.stderr.write(`e2e: ${expectFile} is missing; run npm run e2e:generate and start the compose kit first\n`);
    return 2;
  }
  const x = JSON.parse(fs.readFileSync(expectFile, 'utf8')) as Expectations;
  const password = fs.readFileSync(path.join(root, '.e2e', 'redis', 'admin-password'), 'utf8').trim();
  const report = new Report();
  const [a, b] = x.proxies;
  const proxyFor = (i: number) => x.proxies[i % x.proxies.length];
  const held: Opened[] = [];
  // A snapshot that shows a change comes within a snapshot interval or two.
  const fresh = (x.metricsSnapshotSeconds * 3 + 5) * 1000;

  try {
    // Ready: both proxies answer /ready (Envoy and its agent), see every backend healthy,
    // and their agents read Redis.
    for (const p of x.proxies) {
      const base = p.metrics.replace(/\/metrics$/, '');
      await until(`${p.name} to see ${x.backendReplicas} healthy backends`, 120000, async () => {
        const ready = await fetch(`${base}${READY_PATH}`, { signal: AbortSignal.timeout(2000) });
        if (!ready.ok) return undefined;
        const stats = await scrape(`${base}/stats/prometheus`);
        const healthy = stats.all('envoy_cluster_membership_healthy').find((s) => s.labels.envoy_cluster_name === 'backend')?.value;
        return healthy === x.backendReplicas ? true : undefined;
      });
      const m = await until(`${p.name} metrics with Redis up`, 30000, async () => {
        const s = await scrape(p.metrics);
        return s.scalar(METRICS.redisUp) === 1 ? s : undefined;
      });
      report.check(`${p.name} ready`, true, `${x.backendReplicas} backends healthy, Redis up, ${m.names.length} metric families`);
    }
    const redis = new Redis({ host: '127.0.0.1', port: 16379, username: 'ws-admin', password, lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    await redis.flushall();
    await redis.quit();
    // A Redis without its state admits nothing until the agents have recovered it.
    for (const p of x.proxies) {
      const m = await until(`${p.name}: the state recovered after FLUSHALL`, 60000, async () => {
        const s = await scrape(p.metrics);
        const back =
          s.scalar(METRICS.recovering) === 0 &&
          s.scalar(METRICS.podsReachable) === x.backendReplicas &&
          s.scalar(METRICS.proxiesLive) === x.proxies.length &&
          s.scalar(METRICS.admitted) === 0;
        return back ? s : undefined;
      });
      report.check(
        `${p.name}: state recovered`,
        true,
        `${m.scalar(METRICS.podsReachable)} pods reachable, ${m.scalar(METRICS.proxiesLive)} proxies live, not recovering`,
      );
    }

    // 1. Per-pod limit, across both proxies.
    const capacity = x.maxConnectionsPerPod * x.backendReplicas;
    for (let i = 0; i < capacity; i++) held.push(await open(proxyFor(i).ws));
    const admitted = held.filter((o) => o.status === 101).length;
    report.check(
      'per-pod limit: fill every slot',
      admitted === capacity,
      `${admitted}/${capacity} upgrades answered 101 (alternating ${a.name}/${b.name})`,
    );
    const byBackend = new Map<string, number>();
    for (const o of held) if (o.servedBy) byBackend.set(o.servedBy, (byBackend.get(o.servedBy) ?? 0) + 1);
    if (byBackend.size) {
      const spread = [...byBackend.values()];
      report.check(
        'per-pod limit: spread',
        byBackend.size === x.backendReplicas && spread.every((n) => n === x.maxConnectionsPerPod),
        `connections per backend: ${[...byBackend].map(([k, v]) => `${k}=${v}`).join(', ')}`,
      );
    }
    const extra = await open(proxyFor(capacity).ws);
    report.check(
      'per-pod limit: refuse the next',
      extra.status === 503,
      `upgrade ${capacity + 1} answered ${extra.status} (want 503), retry-after ${String(extra.headers['retry-after'] ?? '-')}`,
    );
    await closeAll([extra]);

    const full = (s: SampleSet) => s.scalar(METRICS.admitted) === capacity && sum(s.byLabel(METRICS.activeConnections, 'pod')) === capacity;
    const m1 = (await scrapeUntil(a.metrics, fresh, full)) ?? new SampleSet([]);
    const perPod = [...m1.byLabel(METRICS.activeConnections, 'pod').values()];
    report.check(
      'metrics: per-pod gauge',
      perPod.length === x.backendReplicas && perPod.every((n) => n === x.maxConnectionsPerPod),
      `${METRICS.activeConnections} = [${perPod.join(', ')}]`,
    );
    const capacityRefusals = (s: SampleSet) =>
      s.all(METRICS.rejected).find((r) => r.labels.reason === 'capacity' && !r.labels.proxy)?.value;
    report.check(
      'metrics: admitted and refused',
      m1.scalar(METRICS.admitted) === capacity && capacityRefusals(m1) === 1,
      `admitted_total ${m1.scalar(METRICS.admitted)}, rejected_total{reason="capacity"} ${capacityRefusals(m1) ?? '-'}`,
    );
    const m1b = (await scrapeUntil(b.metrics, fresh, full)) ?? new SampleSet([]);
    report.check(
      'metrics: both proxies agree',
      m1b.scalar(METRICS.admitted) === m1.scalar(METRICS.admitted),
      `admitted_total ${a.name}=${m1.scalar(METRICS.admitted)} ${b.name}=${m1b.scalar(METRICS.admitted)}`,
    );

    // 2. Release on close.
    const first = held.shift()!;
    await closeAll([first]);
    const released = await until('the closed connection to be released', fresh, async () => {
      const s = await scrape(a.metrics);
      return (s.scalar(METRICS.released) ?? 0) >= 1 ? s : undefined;
    }).then(
      () => true,
      () => false,
    );
    report.check('release on close: lease released', released, `${METRICS.released} >= 1 after closing one connection`);
    const again = await open(b.ws);
    if (again.status === 101) held.push(again);
    report.check(
      'release on close: slot reused',
      again.status === 101,
      `a new upgrade after the close answered ${again.status}${again.servedBy ? ` (served by ${again.servedBy})` : ''}`,
    );
    await closeAll(held.splice(0));
    const drained = await until('every lease to be released', fresh, async () => {
      const s = await scrape(a.metrics);
      return s.has(METRICS.activeConnections) && sum(s.byLabel(METRICS.activeConnections, 'pod')) === 0 ? true : undefined;
    }).then(
      () => true,
      () => false,
    );
    report.check('release on close: all released', drained, 'no live lease after closing every connection');

    // 3. Rate limit: use what is left of the window, then one more. Every admission so far
    // is in the window (capacity, then the one after the close).
    const m3 = (await scrapeUntil(a.metrics, fresh, (s) => s.scalar(METRICS.rateWindowUsed) === capacity + 1)) ?? new SampleSet([]);
    const used = m3.scalar(METRICS.rateWindowUsed) ?? 0;
    const left = x.rateLimitPerMinute - used;
    let ok = 0;
    for (let i = 0; i < left; i++) {
      const o = await open(proxyFor(i).ws);
      if (o.status === 101) ok++;
      await closeAll([o]);
    }
    report.check(
      'rate limit: admit the rest of the window',
      ok === left,
      `${ok}/${left} answered 101 (window had ${used}/${x.rateLimitPerMinute} used)`,
    );
    const limited = await open(proxyFor(left).ws);
    const retryAfter = Number(limited.headers['retry-after']);
    report.check(
      'rate limit: refuse the next with 429',
      limited.status === 429 && retryAfter > 0 && retryAfter <= x.rateWindowSeconds,
      `answered ${limited.status}, Retry-After ${String(limited.headers['retry-after'] ?? '-')}`,
    );
    await closeAll([limited]);
    const m4 = (await scrapeUntil(b.metrics, fresh, (s) => s.scalar(METRICS.rateWindowUsed) === x.rateLimitPerMinute)) ?? new SampleSet([]);
    report.check(
      'metrics: rate limited counted',
      (m4.byLabel(METRICS.rejected, 'reason').get('rate_limited') ?? 0) >= 1 && m4.scalar(METRICS.rateWindowUsed) === x.rateLimitPerMinute,
      `rejected_total{reason="rate_limited"} ${m4.byLabel(METRICS.rejected, 'reason').get('rate_limited') ?? 0}, rate_window_used ${m4.scalar(METRICS.rateWindowUsed)}`,
    );
  } catch (err) {
    report.check('e2e run', false, err instanceof Error ? err.message : String(err));
  } finally {
    await closeAll(held);
  }
  process.stdout.write(`${report.passed} passed, ${report.failed} failed\n`);
  return report.failed ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`e2e: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
