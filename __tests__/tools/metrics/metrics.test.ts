// tools/metrics/metrics.ts (`npm run metrics`): one screen or a live view of a metrics endpoint,
// JSON, port-forward, refresh, resize and errors. What a screen shows: metrics-view.test.ts.
import * as fs from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import * as path from 'path';
import { MetricsDeps, fetchText, runMetrics } from '../../../tools/metrics/metrics';
import { FakeClock, FakeRunner } from '../../support/fakes';

/** The terminal's escape sequences (ESC [ ...): what the screens are stripped of before measuring. */
// eslint-disable-next-line no-control-regex -- ESC is the character matched
const ANSI_ESCAPES = /\x1b\[[0-9;?]*[a-zA-Z]/g;

const RECORDED = fs.readFileSync(path.join(__dirname, 'fixtures', 'metrics-recorded.txt'), 'utf8');
const AT = Date.UTC(2026, 10, 26, 5, 30, 0);

function serve(bodies: string[], status = 200): Promise<{ url: string; close: () => Promise<void>; hits: () => number }> {
  let hits = 0;
  const server = http.createServer((_req, res) => {
    const body = bodies[Math.min(hits, bodies.length - 1)];
    hits++;
    res.writeHead(status, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(body);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({ url: `http://127.0.0.1:${port}/metrics`, hits: () => hits, close: () => new Promise((r) => server.close(() => r())) });
    }),
  );
}

function capture(
  isTTY = false,
  columns?: number,
): { out: MetricsDeps['out']; err: MetricsDeps['err']; text: () => string; errText: () => string } {
  let o = '';
  let e = '';
  return {
    out: {
      write: (s: string) => {
        o += s;
        return true;
      },
      isTTY,
      columns,
    },
    err: {
      write: (s: string) => {
        e += s;
        return true;
      },
    },
    text: () => o,
    errText: () => e,
  };
}

function deps(c: ReturnType<typeof capture>, over: Partial<MetricsDeps> = {}): MetricsDeps {
  return {
    fetchText,
    runner: new FakeRunner(),
    out: c.out,
    err: c.err,
    clock: new FakeClock(AT),
    stopSignal: new Promise(() => undefined),
    env: {},
    ...over,
  };
}

describe('npm run metrics', () => {
  it('--once prints one screen from a live endpoint', async () => {
    const srv = await serve([RECORDED]);
    const c = capture();
    const code = await runMetrics(['--once', '--url', srv.url, '--width', '80'], deps(c));
    await srv.close();
    expect(code).toBe(0);
    expect(c.text()).toContain(`ws-admission · ${srv.url}`);
    expect(c.text()).toContain('  10.0.1.23:8080  [');
    expect(c.text()).not.toContain('\x1b[');
  });

  it('--once --json prints one JSON document', async () => {
    const srv = await serve([RECORDED]);
    const c = capture();
    const code = await runMetrics(['--once', '--json', '--url', srv.url], deps(c));
    await srv.close();
    expect(code).toBe(0);
    const doc = JSON.parse(c.text());
    expect(doc.pods).toHaveLength(3);
    expect(doc.at).toBe('2026-11-26T05:30:00.000Z');
    expect(doc.ratesPerMinute).toBeNull();
  });

  it('does not crash on an empty endpoint', async () => {
    const srv = await serve(['']);
    const c = capture();
    const code = await runMetrics(['--once', '--url', srv.url], deps(c));
    await srv.close();
    expect(code).toBe(1);
    expect(c.text()).toContain('no ws_admission_* metrics in the response: is this the metrics listener (:9901/metrics)?');
  });

  it('does not crash on an unreachable endpoint', async () => {
    const srv = await serve(['']);
    await srv.close();
    const c = capture();
    const code = await runMetrics(['--once', '--url', srv.url], deps(c));
    expect(code).toBe(1);
    expect(c.errText()).toBe(`metrics: cannot reach ${srv.url}: ECONNREFUSED\n`);
  });

  it('reports an HTTP error status', async () => {
    const srv = await serve(['no healthy upstream'], 503);
    const c = capture();
    const code = await runMetrics(['--once', '--url', srv.url], deps(c));
    await srv.close();
    expect(code).toBe(1);
    expect(c.errText()).toBe(`metrics: ${srv.url} answered HTTP 503: no healthy upstream\n`);
  });

  it('refreshes in place on a terminal, with rates from the second screen on, and keeps going when the endpoint drops', async () => {
    const later = RECORDED.replace('ws_admission_admitted_total 148', 'ws_admission_admitted_total 149');
    const srv = await serve([RECORDED, later]);
    const c = capture(true, 72);
    let stop!: () => void;
    const stopSignal = new Promise<void>((r) => {
      stop = r;
    });
    const clock = new FakeClock(AT);
    let fetches = 0;
    const fetchOrFail = async (url: string, t: number): Promise<string> => {
      fetches++;
      if (fetches === 3) throw new Error(`cannot reach ${url}: ECONNREFUSED`);
      if (fetches === 4) stop();
      return fetchText(url, t);
    };
    const code = await runMetrics(['--url', srv.url, '--interval', '2'], deps(c, { clock, stopSignal, fetchText: fetchOrFail }));
    await srv.close();
    expect(code).toBe(0);
    const screens = c.text().split('\x1b[H\x1b[2J').slice(1);
    expect(screens).toHaveLength(4);
    expect(screens[0]).toContain('(rates need two scrapes');
    expect(screens[1]).toMatch(/admitted\s+149\s+30\.0/);
    expect(screens[2]).toContain(`! cannot reach ${srv.url}: ECONNREFUSED`);
    expect(screens[2]).not.toContain('rates need two scrapes');
    expect(screens[2]).toContain('10.0.1.23:8080');
    for (const s of screens) for (const line of s.replace(ANSI_ESCAPES, '').split('\n')) expect([...line].length).toBeLessThanOrEqual(72);
    expect(c.text().startsWith('\x1b[?25l')).toBe(true);
    expect(c.text().endsWith('\x1b[?25h')).toBe(true);
  });

  it('follows a terminal that is resized between refreshes, down to a narrow one', async () => {
    const srv = await serve([RECORDED]);
    const c = capture(true, 100);
    const out = c.out as { columns?: number };
    let stop!: () => void;
    const stopSignal = new Promise<void>((r) => {
      stop = r;
    });
    let fetches = 0;
    const fetchAndResize = async (url: string, t: number): Promise<string> => {
      fetches++;
      if (fetches === 2) out.columns = 24;
      if (fetches === 3) stop();
      return fetchText(url, t);
    };
    await runMetrics(['--url', srv.url], deps(c, { stopSignal, fetchText: fetchAndResize }));
    await srv.close();
    const screens = c
      .text()
      .split('\x1b[H\x1b[2J')
      .slice(1)
      .map((s) => s.replace(ANSI_ESCAPES, ''));
    expect(screens.length).toBeGreaterThanOrEqual(2);
    expect(Math.max(...screens[0].split('\n').map((l) => [...l].length))).toBeGreaterThan(24);
    for (const s of screens.slice(1)) for (const line of s.split('\n')) expect([...line].length).toBeLessThanOrEqual(24);
  });

  it('--port-forward starts kubectl port-forward to the Envoy deployment and stops it on exit', async () => {
    const srv = await serve([RECORDED]);
    const runner = new FakeRunner();
    runner.startOutput = `Forwarding from ${srv.url.replace('http://', '').replace('/metrics', '')} -> 9901\n`;
    const c = capture();
    const code = await runMetrics(['--once', '--port-forward', '--namespace', 'ws-admission'], deps(c, { runner }));
    await srv.close();
    expect(code).toBe(0);
    expect(runner.started).toEqual([
      { cmd: 'kubectl', args: ['port-forward', '--namespace', 'ws-admission', 'deployment/ws-envoy', ':9901'], stopped: true },
    ]);
    expect(c.text()).toContain('deployment/ws-envoy (port-forward');
  });

  it('explains a port-forward that fails', async () => {
    const runner = new FakeRunner();
    runner.startOutput = 'error: services "ws-envoy" not found\n';
    const c = capture();
    const code = await runMetrics(['--once', '--port-forward'], deps(c, { runner }));
    expect(code).toBe(1);
    expect(c.errText()).toContain('metrics: kubectl port-forward to deployment/ws-envoy in namespace ws-admission failed');
  });

  it('refuses bad flags with usage', async () => {
    const c = capture();
    expect(await runMetrics(['--interval', '0'], deps(c))).toBe(2);
    expect(c.errText()).toContain('--interval must be a number of seconds >= 0.2, got 0');
    expect(c.errText()).toContain('usage: npm run metrics');
  });
});
