/**
 * End-to-end tests through real Envoy: the local rig (tools/rig/rig.ts) with the
 * stack's generated config, and a real WebSocket client (ws).
 */
import * as net from 'net';
import WebSocket from 'ws';
import { loadConfig } from '../../config/load';
import { StackConfig } from '../../config/schema';
import { LuaScalar } from '../../config/lua';
import { LocalRig } from '../../tools/rig/rig';
import { wsText } from '../../tools/rig/ws-data';

/** A config for tests: defaults with these values, nothing from the environment. */
export function testConfig(overrides: Partial<StackConfig>): StackConfig {
  return loadConfig({ env: {}, overrides });
}

export async function startRig(
  basePort: number,
  config: Partial<StackConfig>,
  more: {
    proxies?: number;
    backends?: number;
    settingsOverrides?: { [field: string]: LuaScalar };
    leaseLogRotateBytes?: number;
    redisFaults?: boolean;
    /** Envoy worker threads per proxy. @default 1 */
    concurrency?: number;
  } = {},
): Promise<LocalRig> {
  return LocalRig.start({
    // Every test client connects from 127.0.0.1, i.e. is one client: the per-client limits
    // are off unless the test is about them (fair-share.test.ts).
    config: testConfig({ maxConnectionsPerClientPercent: 0, rateLimitPerClientPerMinute: 0, ...config }),
    basePort,
    backendsIn: 'inline',
    proxies: more.proxies,
    backends: more.backends,
    // /metrics serves the agent's snapshot: a fresh one every 250 ms keeps the tests short.
    settingsOverrides: { metrics_snapshot_ms: 250, ...more.settingsOverrides },
    leaseLogRotateBytes: more.leaseLogRotateBytes,
    redisFaults: more.redisFaults,
    concurrency: more.concurrency,
    keepFiles: process.env.WS_E2E_KEEP === '1',
  });
}

export interface Opened {
  readonly kind: 'open';
  readonly ws: WebSocket;
  /** The backend's own answer: `x-backend` of the 101, checked against its first message. */
  readonly backend: string;
  readonly headers: { [k: string]: string | string[] | undefined };
  /** Messages received after the first (backend id) message. */
  readonly messages: string[];
}

export interface Refused {
  readonly kind: 'refused';
  readonly status: number;
  readonly headers: { [k: string]: string | string[] | undefined };
  readonly body: string;
}

/**
 * Opens a WebSocket and waits for the backend's first message, or for the refusal.
 * `localAddress`: the client's own loopback address (127.0.0.0/8), so tests can be many
 * clients.
 */
export function connect(
  url: string,
  headers: { [k: string]: string } = {},
  timeoutMs = 10000,
  localAddress?: string,
): Promise<Opened | Refused> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: timeoutMs, localAddress });
    let upgradeHeaders: Opened['headers'] = {};
    const messages: string[] = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no answer from ${url} within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on('upgrade', (res) => {
      upgradeHeaders = res.headers;
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ kind: 'refused', status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    ws.once('message', (first) => {
      clearTimeout(timer);
      const backend = String(upgradeHeaders['x-backend'] ?? '');
      if (wsText(first) !== `backend ${backend}`) {
        reject(new Error(`first message "${wsText(first)}" does not name the backend of the 101 (${backend})`));
        return;
      }
      ws.on('message', (m) => messages.push(wsText(m)));
      resolve({ kind: 'open', ws, backend, headers: upgradeHeaders, messages });
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      if (!(err.message || '').startsWith('Unexpected server response')) reject(err);
    });
  });
}

/** Sends a text message and waits for its echo. */
export async function echo(o: Opened, text: string, timeoutMs = 3000): Promise<string> {
  const before = o.messages.length;
  o.ws.send(text);
  await waitUntil(() => o.messages.length > before, timeoutMs, `echo of "${text}"`);
  return o.messages[before];
}

/** Closes with a close handshake the client starts; resolves when it is complete. */
export function closeFromClient(o: Opened): Promise<void> {
  return new Promise((resolve) => {
    o.ws.once('close', () => resolve());
    o.ws.close(1000, 'bye');
  });
}

/** Polls `pred` every 25 ms; resolves with the milliseconds it took, rejects after timeoutMs. */
export async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await pred()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Tries an upgrade every 25 ms until one is admitted; resolves with it and the time it took. */
export async function upgradeUntilAdmitted(url: string, timeoutMs: number): Promise<{ opened: Opened; ms: number }> {
  const start = Date.now();
  for (;;) {
    const r = await connect(url);
    if (r.kind === 'open') return { opened: r, ms: Date.now() - start };
    if (Date.now() - start > timeoutMs) throw new Error(`no upgrade admitted within ${timeoutMs} ms (last: ${r.status} ${r.body.trim()})`);
    await new Promise((res) => setTimeout(res, 25));
  }
}

/** One raw HTTP/1.1 exchange over TCP (for requests no client library would send). */
export function rawRequest(port: number, request: string | Buffer, timeoutMs = 3000, localAddress?: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    let out = '';
    const done = () => {
      clearTimeout(t);
      s.destroy();
      resolve(out);
    };
    const t = setTimeout(done, timeoutMs);
    s.on('data', (d) => {
      out += d.toString('latin1');
      // Enough once the status line and headers are in (a 101 never ends by itself).
      if (/\r\n\r\n/.test(out) && !/^HTTP\/1\.1 101/.test(out)) done();
      if (/^HTTP\/1\.1 101/.test(out) && /\r\n\r\n/.test(out)) setTimeout(done, 200);
    });
    s.on('error', done);
    s.on('end', done);
    s.write(request);
  });
}

/** A proxy protocol v2 header as the NLB sends it: TCP over IPv4, from `src` to `dst`. */
export function proxyProtocolV2(src: [string, number], dst: [string, number]): Buffer {
  const ip = (a: string) => Buffer.from(a.split('.').map(Number));
  const port = (n: number) => Buffer.from([n >> 8, n & 255]);
  const body = Buffer.concat([ip(src[0]), ip(dst[0]), port(src[1]), port(dst[1])]);
  const signature = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  // version 2, PROXY; AF_INET, STREAM; the address block's length.
  return Buffer.concat([signature, Buffer.from([0x21, 0x11, 0, body.length]), body]);
}

/** The status code of a raw HTTP response, or 0. */
export function statusOf(raw: string): number {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(raw);
  return m ? Number(m[1]) : 0;
}

export function closeAll(list: Array<Opened | Refused>): void {
  for (const o of list) if (o.kind === 'open') o.ws.terminate();
}

async function scrape(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(url)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/**
 * Parses one proxy's /metrics into `name{labels} -> value`, once its Redis-held numbers
 * (the agent's snapshot) were taken after this call began, or Redis is reported down.
 */
export async function metrics(url: string, timeoutMs = 5000): Promise<Map<string, number>> {
  const asked = Date.now();
  for (;;) {
    const m = await scrape(url);
    const age = m.get('ws_admission_snapshot_age_seconds');
    if (age === undefined || Date.now() - age * 1000 >= asked || Date.now() - asked > timeoutMs) return m;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The sum of every series of `metrics()` whose name{labels} starts with `prefix`. */
export function sum(m: Map<string, number>, prefix: string): number {
  let n = 0;
  for (const [k, v] of m) if (k.startsWith(prefix)) n += v;
  return n;
}
