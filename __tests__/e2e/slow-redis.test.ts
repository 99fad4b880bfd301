// A slow Redis through real Envoy: a fault proxy (tools/lib/fault-proxy.ts) between the
// filter and a real redis-server holds Redis's replies, so the filter's read times out
// while Redis still runs the call: the admission it gave up on did take a lease.
import { LocalRig } from '../../tools/lib/local-rig';
import { Opened, closeFromClient, connect, metrics, startRig, sum, waitUntil } from './support';

jest.setTimeout(60000);

describe('an admission whose answer timed out (fail closed)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      22000,
      {
        maxConnectionsPerPod: 1,
        rateLimitPerMinute: 0,
        redisFailureMode: 'closed',
        redisReadTimeoutMs: 100,
      },
      { proxies: 1, backends: 1, redisFaults: true },
    );
  });
  afterAll(async () => rig?.stop());

  it('is refused, its lease (a phantom) is released by the next good call, and the slot is free for the next upgrade', async () => {
    const [pod] = rig.backendIds;
    // One admission first: the worker's Redis connection is open and its scripts loaded,
    // so the next call is the admit itself (not a connect whose AUTH never got through).
    const warm = await connect(rig.proxies[0].publicUrl);
    await closeFromClient(warm as Opened);
    await waitUntil(async () => (await rig.leases())[pod] === 0, 3000, "the first connection's release");
    rig.redisFaults!.set({ silent: true });
    const refused = await connect(rig.proxies[0].publicUrl);
    expect(refused.kind === 'refused' && refused.headers['x-ws-admission']).toBe('redis_unavailable');
    // Redis did run the admission the filter gave up on: the only slot is taken, and no
    // stream stands behind it.
    expect((await rig.leases())[pod]).toBe(1);

    rig.redisFaults!.set({ silent: false });
    await new Promise((r) => setTimeout(r, 600)); // the filter's 500 ms back-off after a failure
    const next = await connect(rig.proxies[0].publicUrl);
    expect(next.kind).toBe('open');
    expect((await rig.leases())[pod]).toBe(1); // the new connection's own lease, not the phantom
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(sum(m, 'ws_admission_phantom_leases_released_total{')).toBe(1);
    await closeFromClient(next as Opened);
    await waitUntil(async () => (await rig.leases())[pod] === 0, 3000, "the connection's own release");
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
        redisReadTimeoutMs: 100,
        idleTimeoutSeconds: 30,
        renewIntervalSeconds: 3,
        leaseTtlSeconds: 38,
      },
      { proxies: 1, backends: 2, redisFaults: true, settingsOverrides: { renew_interval_ms: 200 } },
    );
  });
  afterAll(async () => rig?.stop());

  it('the connection keeps the lease of the pod it was pinned to, and the pod Redis chose gets its slot back', async () => {
    // x fills the first candidate; then Redis, asked for a, chooses the other pod, while
    // the filter (no answer: fail open) pins a to the first candidate (round robin).
    const x = await connect(rig.proxies[0].publicUrl);
    expect(x.kind).toBe('open');
    const first = (x as Opened).backend;
    const other = rig.backendIds.find((id) => id !== first)!;
    rig.redisFaults!.set({ silent: true });
    const a = await connect(rig.proxies[0].publicUrl);
    expect(a.kind === 'open' && a.backend).toBe(first);
    expect(await rig.leases()).toEqual({ [first]: 1, [other]: 1 }); // a's lease, on the pod a is not on
    rig.redisFaults!.set({ silent: false });
    await new Promise((r) => setTimeout(r, 600)); // the filter's back-off after the failure
    // a's traffic renews: its lease is missing on its pod, so it is re-registered there.
    const held = [x as Opened, a as Opened];
    const ticker = setInterval(() => held.forEach((o) => o.ws.send('tick')), 100);
    try {
      await waitUntil(
        async () => {
          const l = await rig.leases();
          return l[first] === 2 && l[other] === 0;
        },
        5000,
        'both leases on the pod both connections are on, none on the other',
      );
    } finally {
      clearInterval(ticker);
    }
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(sum(m, 'ws_admission_phantom_leases_released_total{')).toBe(1);
    // The other pod's slot is free: the next upgrade gets it.
    const b = await connect(rig.proxies[0].publicUrl);
    expect(b.kind === 'open' && b.backend).toBe(other);
    for (const o of [...held, b as Opened]) await closeFromClient(o);
  });
});
