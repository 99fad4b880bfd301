// Hostile input through the real public listener: nothing a client sends picks a pod,
// reaches a Redis key name, or stalls the worker.
import { LocalRig } from '../../tools/rig/rig';
import { Opened, closeAll, closeFromClient, connect, echo, rawRequest, startRig, statusOf, waitUntil } from './support';

jest.setTimeout(120000);

let rig: LocalRig;
let port: number;

beforeAll(async () => {
  // capacityCacheMs 0: each request here must reach Redis (a refusal cached from the
  // previous one would answer in its place).
  rig = await startRig(21500, { maxConnectionsPerPod: 1, rateLimitPerMinute: 0, capacityCacheMs: 0 }, { backends: 2, proxies: 1 });
  port = rig.proxies[0].publicPort;
});
afterAll(async () => rig?.stop());

const upgrade = (extra: string[] = [], conn = 'Connection: Upgrade', up = 'Upgrade: websocket') =>
  [
    'GET / HTTP/1.1',
    'Host: example.test',
    conn,
    up,
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    ...extra,
    '',
    '',
  ].join('\r\n');

/**
 * Every pod id Redis holds (members of {ws}:load and {ws}:down, fields of {ws}:reach, the
 * pod part of {ws}:leases members), after checking that every key is one of the schema's
 * own names (lua/envoy/keys.lua): none is ever made of request data.
 */
async function podIds(): Promise<string[]> {
  const keys = (await rig.redisCli('--scan', '--pattern', '*')).split('\n').filter(Boolean);
  for (const k of keys)
    expect(k).toMatch(/^\{ws\}:(rate|rate:requests|stats|leases|load|reach|down|agents|beats|recovery|inventory|clients|crate|crate:t)$/);
  const list = async (...a: string[]) => (await rig.redisCli(...a)).split('\n').filter(Boolean);
  const ids = new Set([...(await list('ZRANGE', '{ws}:load', '0', '-1')), ...(await list('ZRANGE', '{ws}:down', '0', '-1'))]);
  for (const f of await list('HKEYS', '{ws}:reach')) ids.add(f);
  for (const m of await list('ZRANGE', '{ws}:leases', '0', '-1')) ids.add(m.slice(m.indexOf(' ') + 1));
  return [...ids].sort();
}

it('spoofed x-ws-* and x-envoy-original-dst-host headers neither reach the backend nor choose the pod', async () => {
  const [first, second] = rig.backendIds;
  const a = await connect(rig.proxies[0].publicUrl);
  expect(a.kind).toBe('open');
  const taken = (a as Opened).backend;
  const free = taken === first ? second : first;
  // Ask for the full pod by every header that could steer Envoy or the filter.
  const b = await connect(rig.proxies[0].publicUrl, {
    'x-envoy-original-dst-host': taken,
    'x-ws-pod': taken,
    'X-WS-Admission': 'admitted',
    'x-ws-connection-id': 'evil|1|1|1',
  });
  expect(b.kind).toBe('open');
  const opened = b as Opened;
  expect(opened.backend).toBe(free);
  const seen = JSON.parse(await echo(opened, 'headers'));
  expect(Object.keys(seen).filter((k) => k.startsWith('x-ws-') || k === 'x-envoy-original-dst-host')).toEqual([]);
  // Every pod full now: a spoofed header cannot squeeze a third one in.
  const c = await connect(rig.proxies[0].publicUrl, { 'x-envoy-original-dst-host': free, 'x-ws-pod': free });
  expect(c.kind === 'refused' && c.status).toBe(503);
  expect(await podIds()).toEqual([...rig.backendIds].sort());
  closeAll([a, b]);
});

it('Upgrade without Connection: upgrade is a plain request (no lease); mixed-case tokens are an upgrade (admitted)', async () => {
  await waitUntil(async () => Object.values(await rig.leases()).every((n) => n === 0), 5000, 'earlier leases released');
  const before = await rig.leases();
  const upgrades = async () => Object.values(await rig.backendCounts()).reduce((n, c) => n + c.upgrades, 0);
  const upgradesBefore = await upgrades();
  const plain = await rawRequest(port, upgrade([], 'Connection: keep-alive'));
  expect(statusOf(plain)).toBe(200); // the backend's plain answer; Envoy did not upgrade
  expect(await rig.leases()).toEqual(before);
  expect(await upgrades()).toBe(upgradesBefore);
  const mixed = await rawRequest(port, upgrade([], 'CoNNeCTioN: keep-alive, UpGrAdE', 'UPGRADE: WebSocket'));
  expect(statusOf(mixed)).toBe(101);
  expect(await upgrades()).toBe(upgradesBefore + 1);
  await waitUntil(async () => Object.values(await rig.leases()).every((n) => n === 0), 5000, 'its lease released after the drop');
});

it('an Upgrade value listing several protocols is refused by Envoy itself (403), before the filter: no lease, no backend', async () => {
  const upgrades = async () => Object.values(await rig.backendCounts()).reduce((n, c) => n + c.upgrades, 0);
  const before = await upgrades();
  for (const up of ['Upgrade: h2c, websocket', 'Upgrade: websocket, h2c']) {
    expect(statusOf(await rawRequest(port, upgrade([], 'Connection: Upgrade', up)))).toBe(403);
  }
  expect(await upgrades()).toBe(before);
  expect(Object.values(await rig.leases()).every((n) => n === 0)).toBe(true);
});

it('huge and malformed headers are refused by Envoy, and the worker keeps serving at once', async () => {
  const huge = await rawRequest(port, upgrade([`X-Pad: ${'a'.repeat(70 * 1024)}`]));
  expect(statusOf(huge)).toBe(431);
  await waitUntil(async () => Object.values(await rig.leases()).every((n) => n === 0), 5000, 'earlier leases released');
  // 50 KiB of blanks before the token: within Envoy's 60 KiB of headers, read in linear
  // time by the filter, and an upgrade like any other.
  const blanks = await rawRequest(port, upgrade([], `Connection: ${' '.repeat(50 * 1024)}upgrade`));
  expect(statusOf(blanks)).toBe(101);
  const bad = await rawRequest(port, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nBad Header\r\n\r\n');
  expect(statusOf(bad)).toBe(400);
  const nul = await rawRequest(port, Buffer.from(upgrade(['X-Nul: a\u0000b']), 'latin1'));
  expect(statusOf(nul)).toBe(400);
  // The one worker answers the next upgrade promptly (nothing above held it).
  await waitUntil(async () => Object.values(await rig.leases()).every((n) => n === 0), 5000, "the 101's lease released");
  const started = Date.now();
  const next = await connect(rig.proxies[0].publicUrl);
  expect(Date.now() - started).toBeLessThan(1000);
  expect(next.kind).toBe('open');
  if (next.kind === 'open') await closeFromClient(next);
  // Nothing but the backends' own ids ever reached Redis as a pod.
  for (const id of await podIds()) expect(rig.backendIds).toContain(id);
});
