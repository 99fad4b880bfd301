// Envoy's edge bounds through the real listener (envoy/bootstrap.ts, EDGE): the global
// downstream connection limit (probes exempt), headers the edge removes or refuses, the
// JSON request log.
import * as fs from 'fs';
import * as net from 'net';
import { METRICS_SCRAPE_LIMIT } from '../../envoy/bootstrap';
import { LocalRig } from '../../tools/rig/rig';
import { Opened, closeAll, connect, echo, rawRequest, startRig, statusOf, waitUntil } from './support';

jest.setTimeout(60000);

let rig: LocalRig;
const LIMIT = 3;
/** The route's response timeout (handshakeTimeoutSeconds): short, so a socket can outlive it here. */
const HANDSHAKE_S = 1;

beforeAll(async () => {
  rig = await startRig(
    21900,
    { maxConnectionsPerPod: 10, rateLimitPerMinute: 0, envoyMaxConnections: LIMIT, handshakeTimeoutSeconds: HANDSHAKE_S },
    { proxies: 1, backends: 1 },
  );
});
afterAll(async () => rig?.stop());

it('past envoyMaxConnections open connections a new one is closed at once, while /ready still answers', async () => {
  const open = await Promise.all(Array.from({ length: LIMIT }, () => connect(rig.proxies[0].publicUrl)));
  try {
    expect(open.map((o) => o.kind)).toEqual(Array(LIMIT).fill('open'));
    // One more TCP connection: accepted by the kernel, closed by Envoy without an answer.
    const extra = await rawRequest(rig.proxies[0].publicPort, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 2000);
    expect(extra).toBe('');
    // The metrics listener is exempt: the kubelet's probe still gets its answer.
    const ready = await fetch(`http://127.0.0.1:${rig.proxies[0].metricsPort}/ready`);
    expect(ready.status).toBe(200);
    const stats = await (await fetch(`http://127.0.0.1:${rig.proxies[0].adminPort}/stats?filter=downstream_global_cx_overflow`)).text();
    expect(stats).toMatch(/listener\.127\.0\.0\.1_\d+\.downstream_global_cx_overflow: [1-9]/);
  } finally {
    closeAll(open);
  }
  // Below the limit again: a connection is served.
  await new Promise((r) => setTimeout(r, 300));
  expect((await connect(rig.proxies[0].publicUrl)).kind).toBe('open');
});

it('an open WebSocket outlives the handshake timeout: the 101 ends the route timeout', async () => {
  const o = await connect(rig.proxies[0].publicUrl);
  expect(o.kind).toBe('open');
  const opened = o as Opened;
  try {
    await new Promise((r) => setTimeout(r, HANDSHAKE_S * 1000 * 2.5));
    expect(opened.ws.readyState).toBe(opened.ws.OPEN);
    expect(await echo(opened, 'still here')).toBe('still here');
  } finally {
    closeAll([opened]);
  }
});

it('client Forwarded, X-Forwarded-Host and underscored header names never reach the backend', async () => {
  const a = await connect(rig.proxies[0].publicUrl, {
    forwarded: 'for=6.6.6.6;host=evil.example',
    'x-forwarded-host': 'evil.example',
    X_Ws_Pod: '127.0.1.1',
  });
  expect(a.kind).toBe('open');
  const seen = JSON.parse(await echo(a as Opened, 'headers'));
  expect(seen.forwarded).toBeUndefined();
  expect(seen['x-forwarded-host']).toBeUndefined();
  expect(Object.keys(seen).filter((k) => k.includes('_'))).toEqual([]); // dropped, the upgrade still admitted
  // Envoy set X-Forwarded-For itself (it is the edge): the client's own value is not trusted.
  expect(typeof seen['x-forwarded-for']).toBe('string');
  (a as Opened).ws.terminate();
});

it('headers that trickle in slower than the request headers timeout are cut off', async () => {
  const s = net.connect(rig.proxies[0].publicPort, '127.0.0.1');
  s.write('GET / HTTP/1.1\r\nHost: x\r\n');
  const started = Date.now();
  const ended = await new Promise<number>((resolve) => {
    const t = setTimeout(() => {
      s.destroy();
      resolve(-1);
    }, 20000);
    s.on('close', () => {
      clearTimeout(t);
      resolve(Date.now() - started);
    });
    s.on('error', () => undefined);
    s.resume();
  });
  expect(ended).toBeGreaterThan(9000);
  expect(ended).toBeLessThan(15000);
});

it("the request log is one JSON object per stream: a client's quotes and backslashes cannot break or forge a line", async () => {
  const ua = 'evil" "status":"200" \\ {"forged":1} end';
  const r = await rawRequest(
    rig.proxies[0].publicPort,
    `GET /json-log-probe?token=s3cret HTTP/1.1\r\nHost: x\r\nUser-Agent: ${ua}\r\nConnection: close\r\n\r\n`,
  );
  expect(statusOf(r)).toBe(200);
  let entry: { [k: string]: unknown } | undefined;
  await waitUntil(
    () => {
      const lines = fs
        .readFileSync(rig.proxies[0].logFile, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'));
      for (const l of lines) JSON.parse(l); // every request log line is JSON
      entry = lines.map((l) => JSON.parse(l)).find((j) => j.path === '/json-log-probe');
      return entry !== undefined;
    },
    5000,
    'the request log line',
  );
  expect(entry).toMatchObject({ method: 'GET', status: 200, user_agent: ua, upstream_host: rig.backendIds[0] });
  // The path is logged without its query string (clients carry tokens there).
  expect(fs.readFileSync(rig.proxies[0].logFile, 'utf8')).not.toContain('s3cret');
});

it('a scrape flood on the metrics port: past the token bucket Envoy answers 429 itself (before any Lua), and the probes still answer', async () => {
  const base = `http://127.0.0.1:${rig.proxies[0].metricsPort}`;
  // The bucket refills every second: wait for a full one.
  await new Promise((r) => setTimeout(r, 2100));
  const statuses = await Promise.all(
    Array.from({ length: METRICS_SCRAPE_LIMIT.burst + 40 }, async () => {
      const r = await fetch(`${base}/metrics`);
      await r.text();
      return { status: r.status, retryAfter: r.headers.get('retry-after') };
    }),
  );
  const served = statuses.filter((s) => s.status === 200).length;
  // The burst, and what refilled meanwhile (the requests take well under a second).
  expect(served).toBeGreaterThanOrEqual(METRICS_SCRAPE_LIMIT.burst);
  expect(served).toBeLessThanOrEqual(METRICS_SCRAPE_LIMIT.burst + METRICS_SCRAPE_LIMIT.perSecond);
  for (const s of statuses.filter((x) => x.status !== 200)) expect(s).toEqual({ status: 429, retryAfter: '1' });
  // The probes are not limited.
  for (const p of ['/ready', '/live']) expect((await fetch(base + p)).status).toBe(200);
  const stats = await (await fetch(`http://127.0.0.1:${rig.proxies[0].adminPort}/stats?filter=metrics_scrapes`)).text();
  expect(stats).toMatch(/metrics_scrapes\.http_local_rate_limit\.rate_limited: [1-9]/);
});
