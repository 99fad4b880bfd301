// How fast a slot comes back, for every way a WebSocket ends in real Envoy, and that a
// live connection keeps its slot. One backend with room for one connection, two proxies:
// a slot is back when an upgrade through the *other* proxy is admitted.
import * as fs from 'fs';
import * as path from 'path';
import { LocalRig } from '../../tools/lib/local-rig';
import { Opened, closeFromClient, connect, echo, startRig, upgradeUntilAdmitted, waitUntil } from './support';

jest.setTimeout(120000);

const LEASE_TTL_MS = 3000;
const RENEW_MS = 500;
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
      leaseTtlSeconds: 8,
    },
    {
      backends: 1,
      // Seconds instead of minutes, so "several lease TTLs" fit in a test.
      settingsOverrides: { lease_ttl_ms: LEASE_TTL_MS, renew_interval_ms: RENEW_MS },
    },
  );
  backend = rig.backendIds[0];
});
afterAll(async () => rig?.stop());

function leaseLogLines(): number {
  let n = 0;
  for (const p of rig.proxies) {
    const f = path.join(p.stateDir, 'leases.log');
    if (fs.existsSync(f))
      n += fs
        .readFileSync(f, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('lease ')).length;
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
async function slotBackAfter(end: (a: Opened) => Promise<void>): Promise<{ ms: number; logged: number }> {
  const a = await openFull(0);
  const logged = leaseLogLines();
  await end(a);
  const t = await upgradeUntilAdmitted(rig.proxies[1].publicUrl, 10000);
  // The backend's own count agrees: the old connection is gone, the new one is there.
  expect((await rig.backendCounts())[backend].open).toBe(1);
  await closeFromClient(t.opened);
  await waitUntil(async () => (await rig.leases())[backend] === 0, 2000, 'the new lease released');
  return { ms: t.ms, logged: leaseLogLines() - logged };
}

const closed = (a: Opened) => new Promise<void>((r) => (a.ws.readyState === a.ws.CLOSED ? r() : a.ws.once('close', () => r())));

describe('a slot comes back', () => {
  it('within 1 s of a close handshake the client starts, released by the filter itself (no lease log line)', async () => {
    const r = await slotBackAfter((a) => closeFromClient(a));
    expect(r.ms).toBeLessThan(1000);
    expect(r.logged).toBe(0);
  });

  it('within 1 s of a close handshake the backend starts, released by the filter itself', async () => {
    const r = await slotBackAfter(async (a) => {
      const done = closed(a);
      await rig.backendAction('close', backend);
      await done;
    });
    expect(r.ms).toBeLessThan(1000);
    expect(r.logged).toBe(0);
  });

  it('within 5 s of a client that drops the connection without a close handshake (the lease log releases it)', async () => {
    const r = await slotBackAfter(async (a) => {
      const done = closed(a);
      a.ws.terminate();
      await done;
    });
    expect(r.ms).toBeLessThan(5000);
    expect(r.logged).toBe(1);
  });

  it('within 5 s of a backend that drops the connection without a close handshake', async () => {
    const r = await slotBackAfter(async (a) => {
      const done = closed(a);
      await rig.backendAction('drop', backend);
      await done;
    });
    expect(r.ms).toBeLessThan(5000);
    expect(r.logged).toBe(1);
  });

  it('within 5 s of the idle timeout ending a quiet connection', async () => {
    const r = await slotBackAfter(async (a) => {
      const started = Date.now();
      await closed(a);
      // Envoy's stream idle timeout, not something else, ended it.
      expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_S * 1000 - 100);
    });
    expect(r.ms).toBeLessThan(5000);
    expect(r.logged).toBe(1);
  });
});

describe('a live connection keeps its slot past several lease TTLs', () => {
  const HOLD_MS = 3.5 * LEASE_TTL_MS;

  it('with client -> server traffic only (the client sends, the backend answers nothing)', async () => {
    const a = await openFull(0);
    const until = Date.now() + HOLD_MS;
    while (Date.now() < until) {
      a.ws.send('sink tick');
      await new Promise((r) => setTimeout(r, 400));
    }
    expect(a.messages).toEqual([]); // nothing came back: only the client's data renewed
    expect((await rig.leases())[backend]).toBe(1);
    const b = await connect(rig.proxies[1].publicUrl);
    expect(b.kind === 'refused' && b.status).toBe(503);
    await closeFromClient(a);
  });

  it('with server -> client traffic only (the backend pushes, the client is silent)', async () => {
    const a = await openFull(0);
    const count = Math.ceil(HOLD_MS / 400);
    a.ws.send(`push 400 ${count}`);
    await waitUntil(() => a.messages.length >= count, HOLD_MS + 5000, 'the pushes');
    expect((await rig.leases())[backend]).toBe(1);
    const b = await connect(rig.proxies[1].publicUrl);
    expect(b.kind === 'refused' && b.status).toBe(503);
    await closeFromClient(a);
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

  it('SIGKILL: its slots are back within the lease TTL, not before their leases expire', async () => {
    const a = await openFull(0);
    // Data renews the lease right before the kill (the renew interval has passed), so it
    // has a whole TTL left whatever the machine's pace so far.
    await new Promise((r) => setTimeout(r, RENEW_MS + 50));
    await echo(a, 'renew');
    const done = closed(a);
    const killedAt = Date.now();
    await rig.killProxy(0, 'SIGKILL');
    await done;
    await waitUntil(async () => (await rig.backendCounts())[backend].open === 0, 2000, 'the backend to see the connection gone');
    // Nothing ran for that stream: no close handshake seen, no access log written.
    const first = await connect(rig.proxies[1].publicUrl);
    expect(first.kind === 'refused' && first.status).toBe(503);
    const t = await upgradeUntilAdmitted(rig.proxies[1].publicUrl, LEASE_TTL_MS + 2000);
    expect(Date.now() - killedAt).toBeLessThan(LEASE_TTL_MS + 1000);
    await closeFromClient(t.opened);
    rig.startProxy(0);
    await rig.waitProxyReady(0);
  });
});
