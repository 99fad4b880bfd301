/**
 * What the node suite drives and reads from the host: WebSocket clients through the
 * Service (or to one Envoy pod), each echo backend's own count of its open WebSockets
 * (GET /counts on the pod), and a proxy's metrics (GET :9901/metrics, Envoy's own
 * /stats/prometheus). Every wait is bounded.
 */
import * as http from 'http';
import { WebSocket } from 'ws';
import type { BackendReport } from '../../../tools/rig/echo';
import { parseExposition } from '../../../tools/metrics/prometheus';

export interface Upgrade {
  /** 101, or the refusal's status (429, 503). */
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** The open socket after a 101. */
  readonly ws?: WebSocket;
}

/** One upgrade; after a 101 the socket stays open and sends a message every `pingMs` (traffic renews its lease). */
export function upgrade(url: string, pingMs = 3000, timeoutMs = 10_000): Promise<Upgrade> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
      ws.terminate();
    });
    ws.on('upgrade', (res) => {
      const timer = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('ping'), pingMs);
      ws.on('close', () => clearInterval(timer));
      ws.once('open', () => resolve({ status: 101, headers: res.headers, ws }));
    });
    ws.on('error', (e) => (ws.readyState === WebSocket.CONNECTING ? reject(e) : undefined));
  });
}

/** Closes the sockets (close handshake) and waits until each is closed. */
export async function closeAll(sockets: readonly (WebSocket | undefined)[]): Promise<void> {
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (!ws || ws.readyState === WebSocket.CLOSED) return resolve();
          const t = setTimeout(() => (ws.terminate(), resolve()), 5000);
          ws.once('close', () => (clearTimeout(t), resolve()));
          ws.close();
        }),
    ),
  );
}

export function httpGet(url: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
  });
}

/** An echo backend's own view (tools/rig/echo.ts, GET /counts). */
export async function backendReport(podIp: string, port: number): Promise<BackendReport> {
  const r = await httpGet(`http://${podIp}:${port}/counts`);
  if (r.status !== 200) throw new Error(`backend ${podIp}:${port} /counts answered ${r.status}`);
  return JSON.parse(r.body) as BackendReport;
}

export interface Series {
  readonly labels: { readonly [name: string]: string };
  readonly value: number;
}

/** Every sample of a Prometheus text page, by metric name. */
export async function scrape(url: string): Promise<Map<string, Series[]>> {
  const r = await httpGet(url);
  if (r.status !== 200) throw new Error(`${url} answered ${r.status}`);
  const out = new Map<string, Series[]>();
  for (const f of parseExposition(r.body))
    out.set(
      f.name,
      f.samples.map((x) => ({ labels: x.labels, value: x.value })),
    );
  return out;
}

/** The sum of a metric's samples whose labels include `match`. */
export function total(page: Map<string, Series[]>, name: string, match: { readonly [label: string]: string } = {}): number {
  return (page.get(name) ?? []).filter((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

/** One line on stderr at once, for the CI log (jest shows a file's results only at its end). */
export function progress(line: string): void {
  process.stderr.write(`node suite: ${line}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a value (not undefined) or `timeoutMs` passes; throws naming `what` and the last value seen. */
export async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, intervalMs = 500): Promise<T> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last: Error | undefined;
  let said = started;
  while (Date.now() < deadline) {
    // Long waits say so as they go (jest shows a file's results only at its end).
    if (Date.now() - said >= 10_000) {
      said = Date.now();
      progress(`still waiting for ${what} (${Math.round((said - started) / 1000)} s)`);
    }
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e instanceof Error ? e : new Error(String(e));
    }
    await sleep(intervalMs);
  }
  throw new Error(`${what}: not within ${timeoutMs / 1000} s${last ? ` (last error: ${last.message})` : ''}`);
}
