// Hostile input: no client-controlled or unchecked value may reach a Redis key name.
// Every command Redis executes (including those inside scripts) is captured with
// MONITOR and every key-like argument is checked against the key schema.
import { spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, HeaderList, sleep } from './harness/worker';

let redis: RedisServer;
let fleet: Fleet;
let monitor: ChildProcess;
let monitorOut = '';

const GOOD_PODS = ['10.0.0.1:8080', '10.0.0.2:8080'];
const KEY = new RegExp(
  '^\\{ws\\}:(rate|rate:requests|stats|leases|load|views|hosts' + '|conn:envoy-test-0\\|[0-9a-f]{6}\\|\\d+\\|[0-9a-f]{6})$',
);
const INJECTED = ['evil', '10.0.0.99', '1.2.3.4', '\\r', '\\n', 'x-ws', '999.1.1.1', '6.6.6.6'];

/** Arguments of one MONITOR line: `<ts> [<db> <client>] "ARG" "ARG" ...` */
function monitorArgs(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) out.push(m[1]);
  return out;
}

beforeAll(async () => {
  redis = await startRedis();
  monitor = spawn('redis-cli', ['-p', String(redis.port), 'MONITOR']);
  monitor.stdout!.on('data', (d) => {
    monitorOut += d.toString();
  });
  for (let i = 0; i < 100 && !monitorOut.startsWith('OK'); i++) await sleep(20);
});
afterAll(async () => {
  monitor.kill();
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

function checkEverythingRedisSaw() {
  const lines = monitorOut.split('\n').filter((l) => l.includes('"'));
  expect(lines.length).toBeGreaterThan(0);
  for (const line of lines) {
    const args = monitorArgs(line);
    if ((args[0] ?? '').toUpperCase() === 'SCRIPT') continue; // SCRIPT LOAD carries the script text
    for (const a of args) {
      if (a.startsWith('{')) expect(a).toMatch(KEY);
      for (const bad of INJECTED) expect(a.toLowerCase()).not.toContain(bad.toLowerCase());
    }
  }
  const keys = redis
    .cli('--scan')
    .split('\n')
    .filter((k) => k !== '');
  for (const k of keys) expect(k).toMatch(KEY);
}

describe('hostile requests', () => {
  it('strips spoofed internal headers and never lets a header choose the pod', async () => {
    const w = await fleet.worker({ connection_inventory: true });
    const spoofed: HeaderList = [
      ...UPGRADE,
      ['x-ws-pod', '10.0.0.99:8080'],
      ['X-WS-Connection-Id', 'evil|0|0|0'],
      ['x-ws-admission', 'admitted'],
      ['x-envoy-original-dst-host', '1.2.3.4:80'],
      ['x-pod', '6.6.6.6:80'],
    ];
    const r = await w.request(spoofed);
    expect(GOOD_PODS).toContain(r.override?.host);
    const names = r.headers.map(([k]) => k);
    expect(names.filter((n) => n.startsWith('x-ws-'))).toEqual([]);
    expect(names).not.toContain('x-envoy-original-dst-host');
    expect(names).toContain('x-pod'); // not ours: forwarded, never read
    // Plain requests are stripped too (the headers are ours whatever the request is).
    const plain = await w.request([
      [':method', 'GET'],
      [':path', '/'],
      ['x-ws-pod', 'evil'],
    ]);
    expect(plain.headers.map(([k]) => k)).not.toContain('x-ws-pod');
    checkEverythingRedisSaw();
  });

  it('header values with CR/LF are not upgrades and reach nothing', async () => {
    const w = await fleet.worker();
    for (const [conn, upg] of [
      ['Upgrade', 'websocket\r\nx-evil: 1'],
      ['Upgrade\r\nx-evil: 1', 'websocket\r\n'],
      ['Upgrade\n', 'evil\nwebsocket'],
    ]) {
      const r = await w.request([
        [':method', 'GET'],
        [':path', '/'],
        ['connection', conn],
        ['upgrade', upg],
      ]);
      expect(r.state).toBe('done');
      expect(r.override).toBeUndefined();
    }
    checkEverythingRedisSaw();
  });

  it('a 64 KiB header is handled: a huge Upgrade list with the websocket token is admitted normally', async () => {
    const w = await fleet.worker();
    const big = 'x'.repeat(64 * 1024);
    const r1 = await w.request([...UPGRADE, ['x-big', big]]);
    expect(GOOD_PODS).toContain(r1.override?.host);
    const r2 = await w.request([
      [':method', 'GET'],
      [':path', '/'],
      ['connection', 'upgrade'],
      ['upgrade', `${big}, websocket`],
    ]);
    expect(GOOD_PODS).toContain(r2.override?.host);
    const r3 = await w.request([
      [':method', 'GET'],
      [':path', '/'],
      ['connection', 'upgrade'],
      ['upgrade', big],
    ]);
    expect(r3.override).toBeUndefined(); // not a WebSocket upgrade
    checkEverythingRedisSaw();
  });

  it('a long run of blanks inside a header element is read in linear time, and the upgrade is still admitted', async () => {
    // "a<60000 blanks>b, upgrade": Envoy sees the upgrade token, so the filter must too
    // (else the WebSocket would bypass admission), and quickly (a quadratic trim took 9 s).
    const w = await fleet.worker();
    const conn = `a${' \t'.repeat(30000)}b, upgrade`;
    const started = Date.now();
    const r = await w.request([
      [':method', 'GET'],
      [':path', '/'],
      ['connection', conn],
      ['upgrade', `websocket${' '.repeat(30000)}x, websocket`],
    ]);
    const took = Date.now() - started;
    expect(GOOD_PODS).toContain(r.override?.host);
    expect(took).toBeLessThan(2000); // the quadratic version needs far longer (about 9 s here)
    checkEverythingRedisSaw();
  });

  it('Upgrade: websocket without Connection: upgrade is not an upgrade (Envoy does not upgrade it either)', async () => {
    const w = await fleet.worker();
    const calls = monitorOut.length;
    for (const extra of [[], [['connection', 'keep-alive']], [['connection', 'upgrades']]] as HeaderList[]) {
      const r = await w.request([[':method', 'GET'], [':path', '/'], ['upgrade', 'websocket'], ...extra]);
      expect(r.state).toBe('done');
      expect(r.override).toBeUndefined();
    }
    await sleep(50);
    expect(monitorOut.slice(calls)).not.toContain('EVALSHA');
  });

  it('token matching is case-insensitive and list-aware', async () => {
    const w = await fleet.worker({ max_connections_per_pod: 10 });
    for (const [conn, upg] of [
      ['UPGRADE', 'WebSocket'],
      ['keep-alive, Upgrade', 'websocket'],
      ['keep-alive,upgrade', 'h2c, WEBSOCKET'],
      [' Upgrade ', '\twebsocket '],
    ]) {
      const r = await w.request([
        [':method', 'GET'],
        [':path', '/'],
        ['connection', conn],
        ['upgrade', upg],
      ]);
      expect(GOOD_PODS).toContain(r.override?.host);
    }
    const h2c = await w.request([
      [':method', 'GET'],
      [':path', '/'],
      ['connection', 'upgrade'],
      ['upgrade', 'h2c'],
    ]);
    expect(h2c.override).toBeUndefined();
    checkEverythingRedisSaw();
  });

  it('malformed hosts in the admin host list are ignored (logged), never used as keys', async () => {
    const w = await fleet.worker(
      {},
      {
        hosts: [
          ['999.1.1.1:80', 'healthy'],
          ['10.0.0.1:0', 'healthy'],
          ['evil}:{ws}:stats', 'healthy'],
          ['10.0.0.1', 'healthy'],
          ['10.0.0.99:8080', '/failed_active_hc'],
          ['10.0.0.2:8080', 'healthy'],
        ],
      },
    );
    const r = await w.request(UPGRADE);
    expect(r).toMatchObject({ override: { host: '10.0.0.2:8080' } });
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/ignored 4 host\(s\) of cluster backend that are not ip:port/);
    checkEverythingRedisSaw();
  });

  it('hostile lines in the host list file (WS_STATE_DIR/hosts) are skipped (logged), never used as keys', async () => {
    const w = await fleet.worker({ max_connections_per_pod: 10 });
    const hostile = [
      'evil}:{ws}:stats',
      '999.1.1.1:80',
      '10.0.0.1:0',
      '10.0.0.99',
      '10.0.0.2:8080 x-ws',
      '1.2.3.4:80\r',
      '[::1]:80:{ws}',
      '6.6.6.6:080',
      '10.0.0.2:8080\u0000evil',
    ];
    const lines = [
      'ws-admission-hosts 1',
      `written_ms ${Date.now()}`,
      'cluster backend',
      ...hostile.map((h) => `host ${h}`),
      'host 10.0.0.2:8080',
      'evil line',
      `end ${hostile.length + 2}`,
    ];
    fs.writeFileSync(path.join(fleet.stateDir, 'hosts'), lines.join('\n') + '\n');
    for (let i = 0; i < 3; i++) {
      const r = await w.request(UPGRADE);
      expect(r.override?.host).toBe('10.0.0.2:8080');
      expect(r.state).toBe('waiting_body'); // from the file: no admin call
    }
    const { logs, admin_calls } = await w.logs();
    expect(admin_calls).toBe(0);
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/ignored 10 line\(s\) of \S+\/hosts that are not a valid host/);
    checkEverythingRedisSaw();
  });
});
