// Backends that come and go, through real Envoy: a backend that dies is not chosen again
// after the first upgrade it fails (every proxy passes over it), failed upgrades spend no
// rate budget, and a rolling update of the backends with traffic fails almost nothing.
import { LocalRig } from '../../tools/rig/rig';
import { Opened, Refused, closeFromClient, connect, metrics, startRig, waitUntil } from './support';

jest.setTimeout(180000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Envoy answered itself: the pinned backend was not reached (no x-ws-admission of ours). */
const envoyOwn503 = (r: Opened | Refused) => r.kind === 'refused' && r.status === 503 && r.headers['x-ws-admission'] === undefined;

describe('a backend that dies', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(23000, { maxConnectionsPerPod: 2, rateLimitPerMinute: 60, capacityCacheMs: 0 }, { proxies: 2, backends: 3 });
  });
  afterAll(async () => rig?.stop());

  it('fails at most a handful of upgrades fleet-wide, then every proxy sends upgrades to the live ones; failures spend no rate budget', async () => {
    const [dead, ...alive] = rig.backendIds;
    // Abruptly: the process is gone, its health checks have not failed yet (5 s apart, 2 needed).
    await rig.backendAction('kill', dead);
    const killed = Date.now();
    const results: Array<Opened | Refused> = [];
    // A client that retries every 20 ms through both proxies, closing each socket it gets.
    while (Date.now() - killed < 4000) {
      const r = await connect(rig.proxies[results.length % 2].publicUrl);
      results.push(r);
      if (r.kind === 'open') {
        expect(alive).toContain(r.backend);
        await closeFromClient(r);
      }
      await sleep(20);
    }
    const failed = results.filter(envoyOwn503).length;
    const admitted = results.filter((r) => r.kind === 'open').length;
    console.log(`a backend killed: ${failed} of ${results.length} upgrades in the next 4 s failed (Envoy's 503), ${admitted} admitted`);
    // The filter takes Envoy's marker of its own replies off before the client sees them.
    for (const r of results.filter(envoyOwn503)) expect((r as Refused).headers['x-ws-local-reply']).toBeUndefined();
    // Before: every upgrade for 6.4 s went to the dead pod (count 0, the least loaded), and
    // each one took a rate window entry.
    expect(failed).toBeGreaterThanOrEqual(1);
    expect(failed).toBeLessThanOrEqual(3);
    expect(admitted).toBeGreaterThan(20);
    // The rate window holds exactly the upgrades that reached a backend (or less: 60 at most).
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(m.get('ws_admission_rate_window_used')).toBe(Math.min(admitted, 60));
    expect(m.get('ws_admission_failed_upstream_total')).toBe(failed);
    expect(m.get('ws_admission_pods_penalised')).toBe(1);
    // Our own refusals: the rate limit, or capacity (a closed socket's slot is back at its
    // end entry, ~150 ms later, and this client reconnects every 20 ms).
    const refusals = results.filter((r) => r.kind === 'refused' && !envoyOwn503(r));
    for (const r of refusals) expect(['rate_limited', 'capacity']).toContain((r as Refused).headers['x-ws-admission']);
  });
});

describe('a backend that refuses upgrades itself (403)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(23050, { maxConnectionsPerPod: 2, rateLimitPerMinute: 5, capacityCacheMs: 0 }, { proxies: 2, backends: 2 });
  });
  afterAll(async () => rig?.stop());

  it('is not penalised, and the refused attempts spend the rate budget (getting refused is no way around the rate limit)', async () => {
    const answers: number[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await connect(`${rig.proxies[i % 2].publicUrl}refuse`);
      answers.push(r.kind === 'refused' ? r.status : 101);
    }
    // Five reached a backend (403 each), then the window was spent: 429.
    expect(answers).toEqual([403, 403, 403, 403, 403, 429, 429, 429]);
    const m = await metrics(rig.proxies[0].metricsUrl);
    expect(m.get('ws_admission_failed_upstream_total')).toBe(0);
    expect(m.get('ws_admission_pods_penalised')).toBe(0);
    expect(m.get('ws_admission_rate_window_used')).toBe(5);
    expect(Object.values(await rig.leases()).every((n) => n === 0)).toBe(true);
  });
});

describe('a rolling update of the backends, with traffic', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    // Six backend addresses, three of them serving: each step brings a new one up and
    // takes an old one down the way Kubernetes does (NotReady first, then gone).
    rig = await startRig(
      23100,
      { maxConnectionsPerPod: 4, rateLimitPerMinute: 0, capacityCacheMs: 0 },
      { proxies: 2, backends: 6, concurrency: 2 },
    );
  });
  afterAll(async () => rig?.stop());

  it('fails at most 1% of upgrades and never over-admits', async () => {
    const ids = rig.backendIds;
    for (const id of ids.slice(3)) await rig.backendAction('kill', id);
    await waitUntil(
      async () => (await rig.registeredHosts('envoy-0')) === 3 && (await rig.registeredHosts('envoy-1')) === 3,
      30000,
      'three serving',
    );
    await rig.backendAction('reset-peaks');

    const results: Array<Opened | Refused> = [];
    let stop = false;
    const client = async (n: number) => {
      while (!stop) {
        const r = await connect(rig.proxies[n % 2].publicUrl);
        results.push(r);
        if (r.kind === 'open') {
          await sleep(100 + ((results.length * 37) % 400));
          await closeFromClient(r);
        } else {
          await sleep(20);
        }
      }
    };
    const clients = [0, 1, 2, 3].map((n) => client(n));
    // Three steps, 5 s apart: a new pod up, an old one NotReady (failing its health check,
    // still serving, as during its termination grace period); gone 15 s later.
    const steps: Promise<void>[] = [];
    for (let s = 0; s < 3; s++) {
      await rig.backendAction('revive', ids[3 + s]);
      await rig.backendAction('drain', ids[s]);
      steps.push(sleep(15000).then(() => rig.backendAction('kill', ids[s])));
      await sleep(5000);
    }
    await Promise.all(steps);
    await sleep(2000);
    stop = true;
    await Promise.all(clients);

    const failed = results.filter(envoyOwn503).length;
    const admitted = results.filter((r) => r.kind === 'open');
    console.log(`a rolling update of 3 of 6 backends: ${failed} of ${results.length} upgrades failed, ${admitted.length} admitted`);
    expect(admitted.length).toBeGreaterThan(100);
    expect(failed / results.length).toBeLessThanOrEqual(0.01);
    // The new pods took traffic, and no backend ever held more than its limit.
    expect(new Set(admitted.map((o) => o.backend))).toEqual(new Set(ids));
    const counts = await rig.backendCounts();
    for (const id of ids) expect(counts[id].peak).toBeLessThanOrEqual(4);
  });
});
