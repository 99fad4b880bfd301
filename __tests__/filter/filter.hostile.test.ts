// lua/envoy/filter.lua (and upgrade.lua) against hostile input: no client-controlled or
// unchecked value reaches a Redis key name or picks the pod. Every command Redis ran,
// calls inside the functions included, is captured with MONITOR and every key-like
// argument is checked against the key schema (lua/redis/README.md).
import { PODS, PROXY, useAdmissionRig } from '../support/admission-rig';
import { HeaderList, UPGRADE, admission } from './harness/worker';

const rig = useAdmissionRig({ monitor: true });
const KEY = /^\{ws\}:(rate|rate:requests|stats|leases|load|reach|down|agents|beats|recovery|inventory|clients|crate|crate:t)$/;
const INJECTED = ['evil', '10.0.0.99', '1.2.3.4', '\\r', '\\n', 'x-ws', '999.1.1.1', '6.6.6.6'];

let mark = 0;
beforeEach(async () => {
  mark = await rig.monitor.mark();
});

/** Every argument Redis saw in this test (the library's own text aside) and every key it holds. */
async function checkEverythingRedisSaw(): Promise<void> {
  const seen = (await rig.monitor.since(mark)).filter((s) => !['FUNCTION', 'FLUSHALL'].includes(s.args[0].toUpperCase()));
  expect(seen.length).toBeGreaterThan(0);
  for (const { args } of seen) {
    for (const a of args) {
      if (a.startsWith('{')) expect(a).toMatch(KEY);
      for (const bad of INJECTED) expect(a.toLowerCase()).not.toContain(bad.toLowerCase());
    }
  }
  for (const k of await rig.admin.keys('*')) expect(k).toMatch(KEY);
}

const get = (conn: string, upg: string): HeaderList => [
  [':method', 'GET'],
  [':path', '/'],
  ['connection', conn],
  ['upgrade', upg],
];

describe('hostile requests', () => {
  it('GIVEN spoofed internal headers THEN they are stripped and no header chooses the pod', async () => {
    const w = await rig.worker({ connection_inventory: true });
    const r = await w.request([
      ...UPGRADE,
      ['x-ws-pod', '10.0.0.99:8080'],
      ['X-WS-Connection-Id', 'evil|0|0|0'],
      ['x-ws-admission', 'admitted'],
      ['x-ws-local-reply', 'UH'],
      ['x-envoy-original-dst-host', '1.2.3.4:80'],
      ['x-pod', '6.6.6.6:80'],
    ]);
    expect(PODS).toContain(r.override?.host);
    expect(admission(r).connection_id).toMatch(new RegExp(`^${PROXY}\\|`));
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
    await checkEverythingRedisSaw();
  });

  it('GIVEN header values with CR/LF THEN they are no upgrades and reach nothing', async () => {
    const w = await rig.worker();
    for (const [conn, upg] of [
      ['Upgrade', 'websocket\r\nx-evil: 1'],
      ['Upgrade\r\nx-evil: 1', 'websocket\r\n'],
      ['Upgrade\n', 'evil\nwebsocket'],
    ]) {
      const r = await w.request(get(conn, upg));
      expect({ state: r.state, override: r.override }).toEqual({ state: 'done', override: undefined });
    }
    expect(await rig.monitor.clientCommands(mark)).toEqual([]);
  });

  it('GIVEN a 64 KiB header THEN a huge Upgrade list with the websocket token is admitted normally, one without it is no upgrade', async () => {
    const w = await rig.worker();
    const big = 'x'.repeat(64 * 1024);
    expect(PODS).toContain((await w.request([...UPGRADE, ['x-big', big]])).override?.host);
    expect(PODS).toContain((await w.request(get('upgrade', `${big}, websocket`))).override?.host);
    expect((await w.request(get('upgrade', big))).override).toBeUndefined();
    await checkEverythingRedisSaw();
  });

  it('GIVEN a long run of blanks inside a header element THEN it is read in linear time and the upgrade still admitted', async () => {
    // "a<60000 blanks>b, upgrade": Envoy sees the upgrade token, so the filter must too
    // (else the WebSocket would bypass admission), and quickly (a quadratic trim took 9 s).
    const w = await rig.worker();
    const started = Date.now();
    const r = await w.request(get(`a${' \t'.repeat(30000)}b, upgrade`, `websocket${' '.repeat(30000)}x, websocket`));
    expect(PODS).toContain(r.override?.host);
    expect(Date.now() - started).toBeLessThan(3000);
    await checkEverythingRedisSaw();
  });

  it('GIVEN Upgrade: websocket without the Connection token THEN no upgrade (Envoy does not upgrade it either), no Redis call', async () => {
    const w = await rig.worker();
    for (const extra of [[], [['connection', 'keep-alive']], [['connection', 'upgrades']]] as HeaderList[]) {
      const r = await w.request([[':method', 'GET'], [':path', '/'], ['upgrade', 'websocket'], ...extra]);
      expect({ state: r.state, override: r.override }).toEqual({ state: 'done', override: undefined });
    }
    expect(await rig.monitor.clientCommands(mark)).toEqual([]);
  });

  it('matches tokens case-insensitively and list-aware', async () => {
    const w = await rig.worker({ max_connections_per_pod: 10 });
    for (const [conn, upg] of [
      ['UPGRADE', 'WebSocket'],
      ['keep-alive, Upgrade', 'websocket'],
      ['keep-alive,upgrade', 'h2c, WEBSOCKET'],
      [' Upgrade ', '\twebsocket '],
    ]) {
      expect(PODS).toContain((await w.request(get(conn, upg))).override?.host);
    }
    expect((await w.request(get('upgrade', 'h2c'))).override).toBeUndefined();
    await checkEverythingRedisSaw();
  });

  it('GIVEN a client address that is no address (inventory on) THEN "invalid" is written, never the text', async () => {
    const w = await rig.worker({ connection_inventory: true, max_connections_per_pod: 10 });
    for (const remote of ['evil}:{ws}:stats 1.2.3.4', 'x\r\nevil', `1.2.3.4:${'9'.repeat(70)}`]) {
      const r = await w.request(UPGRADE, undefined, remote);
      const entry = await rig.admin.hget(rig.f.keys.inventory, admission(r).connection_id!);
      expect(entry?.split(' ')[2]).toBe('invalid');
    }
    await checkEverythingRedisSaw();
  });
});

describe('a hostile state in Redis', () => {
  it.each(['open', 'closed'] as const)(
    'GIVEN a "pod" that is no ip:port registered for the proxy THEN it is never pinned: the upgrade fails %s, logged',
    async (mode) => {
      const w = await rig.worker({ failure_mode: mode }, { pods: ['not-a-pod}:{ws}:stats'] });
      const r = await w.request(UPGRADE);
      expect(r.override).toBeUndefined();
      if (mode === 'closed') expect(r.reply?.headers['x-ws-admission']).toBe('redis_unavailable');
      else expect(admission(r)).toMatchObject({ registered: '0', lease: 'held' });
      expect(admission(r).pod).toBeUndefined();
      const { logs } = await w.logs();
      expect(logs.map((l) => l.msg)).toContain(
        'ws-admission: redis admit failed: ws_admit returned a pod that is not ip:port: not-a-pod}:{ws}:stats',
      );
    },
  );
});
