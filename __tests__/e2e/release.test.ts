// How fast a slot comes back, for every way a WebSocket ends in real Envoy. One backend
// with room for one connection, two proxies: a slot is back when an upgrade through the
// *other* proxy is admitted. Every end comes through Envoy's own record: the lease log's
// end entry, read by the proxy's agent.
import * as fs from 'fs';
import * as path from 'path';
import { LocalRig } from '../../tools/rig/rig';
import { Opened, closeFromClient, connect, startRig, upgradeUntilAdmitted, waitUntil } from './support';

jest.setTimeout(120000);

const LEASE_TTL_MS = 3000;
const IDLE_S = 2;

let rig: LocalRig;
let backend: string;

beforeAll(async () => {
  // capacityCacheMs 0: these tests time the release paths; a worker's "full until" cache
  // would add up to its length to what a retrying client sees.
  rig = await startRig(
    21200,
    {
      maxConnectionsPerPod: 1,
      rateLimitPerMinute: 0,
      capacityCacheMs: 0,
      idleTimeoutSeconds: IDLE_S,
      renewIntervalSeconds: 1,
      leaseTtlSeconds: 7,
    },
    // Seconds instead of tens of seconds, so a SIGKILLed proxy's TTL fits in a test.
    { backends: 1, settingsOverrides: { lease_ttl_ms: LEASE_TTL_MS } },
  );
  backend = rig.backendIds[0];
});
afterAll(async () => rig?.stop());

/** End entries written by Envoy so far (both proxies). */
function endEntries(): number {
  let n = 0;
  for (const p of rig.proxies) {
    const f = path.join(p.stateDir, 'leases.log');
    if (fs.existsSync(f)) n += (fs.readFileSync(f, 'utf8').match(/^DownstreamEnd /gm) ?? []).length;
  }
  return n;
}

async function openFull(via: number): Promise<Opened> {
  const a = await connect(rig.proxies[via].publicUrl);
  if (a.kind !== 'open') throw new Error(`first upgrade refused: ${a.status} ${a.body}`);
  const b = await connect(rig.proxies[1 - via].publicUrl);
  expect(b.kind === 'refused' && b.status).toBe(503);
  return a;
}

/** Ends the held connection with `end`, then measures until another proxy admits one. */
async function slotBackAfter(end: (a: Opened) => Promise<void>): Promise<{ ms: number; ended: number }> {
  const a = await openFull(0);
  const ended = endEntries();
  await end(a);
  const t = await upgradeUntilAdmitted(rig.proxies[1].publicUrl, 10000);
  // The backend's own count agrees: the old connection is gone, the new one is there.
  expect((await rig.backendCounts())[backend].open).toBe(1);
  await closeFromClient(t.opened);
  await waitUntil(async () => (await rig.leases())[backend] === 0, 3000, 'the new lease released');
  return { ms: t.ms, ended: endEntries() - ended };
}

const closed = (a: Opened) => new Promise<void>((r) => (a.ws.readyState === a.ws.CLOSED ? r() : a.ws.once('close', () => r())));

describe('a slot comes back at the end entry of its stream', () => {
  it('within 1 s of a close handshake the client starts', async () => {
    const r = await slotBackAfter((a) => closeFromClient(a));
    expect(r.ms).toBeLessThan(1000);
    expect(r.ended).toBeGreaterThanOrEqual(1);
  });

  it('within 1 s of a close handshake the backend starts', async () => {
    const r = await slotBackAfter(async (a) => {
      const done = closed(a);
      await rig.backendAction('close', backend);
      await done;
    });
    expect(r.ms).toBeLessThan(1000);
  });

  it('within 1 s of a client that drops the connection without a close handshake', async () => {
    const r = await slotBackAfter(async (a) => {
      const done = closed(a);
      a.ws.terminate();
      await done;
    });
    expect(r.ms).toBeLessThan(1000);
  });

  it('within 3 s of a backend that drops the connection without a close handshake (Envoy first waits its 1 s delayed close)', async () => {
    const r = await slotBackAfter(async (a) => {
      const done = closed(a);
      await rig.backendAction('drop', backend);
      await done;
    });
    expect(r.ms).toBeLessThan(3000);
  });

  it('within 1 s of the idle timeout ending a quiet connection', async () => {
    const r = await slotBackAfter(async (a) => {
      const started = Date.now();
      await closed(a);
      // Envoy's stream idle timeout, not something else, ended it.
      expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_S * 1000 - 100);
    });
    expect(r.ms).toBeLessThan(1000);
  });
});

describe('a proxy that goes away', () => {
  it('preStop drain then SIGTERM: its slots are back at once', async () => {
    const a = await openFull(1);
    const done = closed(a);
    const out = await rig.drainProxy(1);
    expect(out).toMatch(/^drain: released 1 leases of proxy envoy-1/);
    await done;
    const t = await upgradeUntilAdmitted(rig.proxies[0].publicUrl, 5000);
    expect(t.ms).toBeLessThan(1000);
    await closeFromClient(t.opened);
    rig.startProxy(1);
    await rig.waitProxyReady(1);
  });

  it('SIGKILL (Envoy and its agent): its slots are back within the lease TTL of the last periodic entry, not before', async () => {
    await openFull(0);
    await new Promise((r) => setTimeout(r, 1300)); // a periodic entry renewed the lease
    const killedAt = Date.now();
    await rig.killProxy(0, 'SIGKILL');
    await waitUntil(async () => (await rig.backendCounts())[backend].open === 0, 3000, 'the backend to see the connection gone');
    // Nothing ran for that stream: no end entry read by any agent.
    const first = await connect(rig.proxies[1].publicUrl);
    expect(first.kind === 'refused' && first.status).toBe(503);
    const t = await upgradeUntilAdmitted(rig.proxies[1].publicUrl, LEASE_TTL_MS + 3000);
    expect(Date.now() - killedAt).toBeLessThan(LEASE_TTL_MS + 1500);
    await closeFromClient(t.opened);
    rig.startProxy(0);
    await rig.waitProxyReady(0);
  });
});
