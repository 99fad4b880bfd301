// A slow Redis through real Envoy: a fault proxy (tools/rig/fault-proxy.ts) between the
// filter and a real redis-server holds Redis's replies, so the filter's read times out
// while Redis still runs the call: the admission it gave up on did take a lease (a phantom,
// no stream behind it). Nothing renews a phantom: it is back within one lease TTL. The
// worker's stall is bounded by the read timeout.
import { LocalRig } from '../../tools/rig/rig';
import { Opened, closeFromClient, connect, startRig, upgradeUntilAdmitted, waitUntil } from './support';

jest.setTimeout(60000);

const TTL_MS = 2500;

describe('an admission whose answer timed out (fail closed)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      22000,
      {
        maxConnectionsPerPod: 1,
        rateLimitPerMinute: 0,
        capacityCacheMs: 0,
        redisFailureMode: 'closed',
        redisReadTimeoutMs: 100,
        renewIntervalSeconds: 1,
        leaseTtlSeconds: 7,
      },
      { proxies: 1, backends: 1, redisFaults: true, settingsOverrides: { lease_ttl_ms: TTL_MS } },
    );
  });
  afterAll(async () => rig?.stop());

  it('is refused within the read timeout; its phantom lease holds the slot for one lease TTL at most, then the slot is free', async () => {
    const [pod] = rig.backendIds;
    // One admission first: the worker's Redis connection is open, so the next call is the admit itself.
    const warm = await connect(rig.proxies[0].publicUrl);
    await closeFromClient(warm as Opened);
    await waitUntil(async () => (await rig.leases())[pod] === 0, 3000, "the first connection's release");
    rig.redisFaults!.set({ silent: true });
    const asked = Date.now();
    const refused = await connect(rig.proxies[0].publicUrl);
    expect(Date.now() - asked).toBeLessThan(1000);
    expect(refused.kind === 'refused' && refused.headers['x-ws-admission']).toBe('redis_unavailable');
    // Redis did run the admission the filter gave up on: the only slot is taken.
    expect((await rig.leases())[pod]).toBe(1);
    rig.redisFaults!.set({ silent: false });
    // Nobody renews it (no stream, no lease log entry): free within the TTL.
    const t = await upgradeUntilAdmitted(rig.proxies[0].publicUrl, TTL_MS + 3000);
    expect(Date.now() - asked).toBeLessThan(TTL_MS + 2000);
    expect((await rig.leases())[pod]).toBe(1); // the new connection's own lease
    await closeFromClient(t.opened);
  });
});

describe('an admission whose answer timed out (fail open, two pods)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      22100,
      {
        maxConnectionsPerPod: 1,
        rateLimitPerMinute: 0,
        capacityCacheMs: 0,
        redisReadTimeoutMs: 100,
        renewIntervalSeconds: 1,
        leaseTtlSeconds: 7,
      },
      { proxies: 1, backends: 2, redisFaults: true, settingsOverrides: { lease_ttl_ms: TTL_MS } },
    );
  });
  afterAll(async () => rig?.stop());

  it('the connection is routed by Envoy and counted on the pod it is on; the phantom on the other pod lapses within the TTL', async () => {
    const warm = await connect(rig.proxies[0].publicUrl);
    await closeFromClient(warm as Opened);
    await waitUntil(async () => Object.values(await rig.leases()).every((n) => n === 0), 3000, 'released');
    rig.redisFaults!.set({ silent: true });
    const a = await connect(rig.proxies[0].publicUrl);
    expect(a.kind).toBe('open'); // fail open
    const on = (a as Opened).backend;
    rig.redisFaults!.set({ silent: false });
    // Its 101 entry (not registered) makes the agent register its lease on `on`.
    await waitUntil(async () => (await rig.leases())[on] === 1, 5000, 'the fail-open connection counted on its pod');
    // The phantom (wherever Redis put it) lapses: in the end exactly one lease, a's.
    await waitUntil(async () => Object.values(await rig.leases()).reduce((x, y) => x + y, 0) === 1, TTL_MS + 3000, 'the phantom gone');
    expect((await rig.leases())[on]).toBe(1);
    await closeFromClient(a as Opened);
  });
});
