// Fair share through real Envoy (issue 21): one greedy client against ten polite ones, over
// two proxies with two workers each, each client its own loopback address. The same
// scenario runs without the per-client limits (the lock-out) and with the defaults.
import { LocalRig } from '../../tools/rig/rig';
import {
  Opened,
  Refused,
  closeAll,
  closeFromClient,
  connect,
  metrics,
  proxyProtocolV2,
  rawRequest,
  startRig,
  statusOf,
  waitUntil,
} from './support';

jest.setTimeout(180000);

const GREEDY = '127.0.8.1';
const POLITE = Array.from({ length: 10 }, (_, i) => `127.0.9.${i + 1}`);
/** Open leases, all pods. */
const leaseCount = async (rig: LocalRig) => Object.values(await rig.leases()).reduce((a, b) => a + b, 0);

interface Outcome {
  /** Retry-After of the last refusal with reason client (0: none). */
  retryAfter: number;
  greedyAdmitted: number;
  greedyStatuses: Record<string, number>;
  politeAdmitted: number;
  politeAttempts: number;
  politeStatuses: Record<string, number>;
  greedyMs: number;
}

const tally = (rs: Array<Opened | Refused>) => {
  const out: Record<string, number> = {};
  for (const r of rs) {
    const k = r.kind === 'open' ? '101' : `${r.status} ${String(r.headers['x-ws-admission'] ?? '')}`.trim();
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
};

/**
 * The greedy client first, as fast as it can (bounded: `attempts`, 10 s), over both
 * proxies: `hold` keeps what it opens (slots), else it closes each at once (a reconnect
 * loop, which spends the rate budget); with a forged X-Forwarded-For on every attempt.
 * Then each polite client upgrades once through each proxy and leaves, one after another.
 */
async function scenario(rig: LocalRig, attempts: number, hold: boolean): Promise<{ outcome: Outcome; held: Opened[] }> {
  const urls = rig.proxies.map((p) => p.publicUrl);
  const greedy: Array<Opened | Refused> = [];
  const held: Opened[] = [];
  const start = Date.now();
  for (let i = 0; i < attempts && Date.now() - start < 10000; i++) {
    const r = await connect(urls[i % 2], { 'x-forwarded-for': `198.51.100.${i % 250}`, 'x-real-ip': `203.0.113.${i % 250}` }, 5000, GREEDY);
    greedy.push(r);
    if (r.kind === 'open') {
      if (hold) held.push(r);
      else await closeFromClient(r);
    }
  }
  const greedyMs = Date.now() - start;
  const polite: Array<Opened | Refused> = [];
  for (const addr of POLITE) {
    for (const url of urls) {
      const r = await connect(url, {}, 5000, addr);
      polite.push(r);
      if (r.kind === 'open') {
        // A polite client leaves before the next one comes: its slot is back (the agent
        // saw the end of the stream) before the next attempt.
        await closeFromClient(r);
        await waitUntil(async () => (await leaseCount(rig)) <= held.length, 5000, 'the polite socket released');
      }
    }
  }
  const admitted = (rs: Array<Opened | Refused>) => rs.filter((r) => r.kind === 'open').length;
  return {
    held,
    outcome: {
      greedyAdmitted: admitted(greedy),
      greedyStatuses: tally(greedy),
      politeAdmitted: admitted(polite),
      politeAttempts: polite.length,
      politeStatuses: tally(polite),
      greedyMs,
      retryAfter: Number(
        greedy.filter((r): r is Refused => r.kind === 'refused' && r.headers['x-ws-admission'] === 'client').pop()?.headers[
          'retry-after'
        ] ?? 0,
      ),
    },
  };
}

async function run(port: number, config: Parameters<typeof startRig>[1], attempts: number, hold: boolean) {
  const rig = await startRig(port, { maxConnectionsPerPod: 2, ...config }, { proxies: 2, backends: 3, concurrency: 2 });
  try {
    const { outcome, held } = await scenario(rig, attempts, hold);
    const m = await metrics(rig.proxies[0].metricsUrl);
    const leases = await leaseCount(rig);
    closeAll(held);
    return { outcome, m, leases };
  } finally {
    await rig.stop();
  }
}

describe('one greedy client against ten polite ones, across two proxies', () => {
  it('a reconnect loop: without per-client limits it spends the minute and locks everyone out; with the default (20 per client per minute) the polite ones keep getting in', async () => {
    const before = await run(
      24000,
      { maxConnectionsPerPod: 50, rateLimitPerMinute: 60, rateLimitPerClientPerMinute: 0, maxConnectionsPerClientPercent: 0 },
      80,
      false,
    );
    const after = await run(
      24100,
      { maxConnectionsPerPod: 50, rateLimitPerMinute: 60, rateLimitPerClientPerMinute: 20, maxConnectionsPerClientPercent: 50 },
      80,
      false,
    );
    console.log(
      `reconnect loop, 80 attempts by one client then 2 by each of 10:\n  before ${JSON.stringify(before.outcome)}\n  after  ${JSON.stringify(after.outcome)}`,
    );
    // Before: the greedy client took the whole minute; every polite attempt got the global 429.
    expect(before.outcome.greedyAdmitted).toBe(60);
    expect(before.outcome.politeAdmitted).toBe(0);
    expect(before.outcome.politeStatuses).toEqual({ '429 rate_limited': 20 });
    // After: 20 for the greedy client (its forged X-Forwarded-For changed nothing), then its
    // own 429 (reason client, with a Retry-After), which spends none of the global budget;
    // every polite attempt gets in.
    const g = after.outcome.greedyAdmitted;
    expect(g).toBe(20);
    expect(after.outcome.greedyStatuses).toEqual({ '101': g, '429 client': 80 - g });
    expect(after.outcome.politeAdmitted).toBe(20);
    expect(after.m.get('ws_admission_rate_window_used')).toBe(g + 20);
    expect(after.m.get('ws_admission_rejected_total{reason="client"}')).toBe(80 - g);
    expect(after.m.get('ws_admission_rejected_total{reason="rate_limited"}')).toBe(0);
    expect(after.outcome.retryAfter).toBeGreaterThanOrEqual(1);
  });

  it('slots held: without per-client limits one client holds every slot; with the default share (50%) it holds half and the polite ones keep getting in', async () => {
    const off = { rateLimitPerMinute: 0, rateLimitPerClientPerMinute: 0 };
    const before = await run(24200, { ...off, maxConnectionsPerClientPercent: 0 }, 12, true);
    const after = await run(24300, { ...off, maxConnectionsPerClientPercent: 50 }, 12, true);
    console.log(
      `slots held, 12 attempts by one client then 2 by each of 10:\n  before ${JSON.stringify(before.outcome)}\n  after  ${JSON.stringify(after.outcome)}`,
    );
    expect(before.outcome.greedyAdmitted).toBe(6); // 3 pods x 2
    expect(before.outcome.politeAdmitted).toBe(0);
    expect(before.outcome.politeStatuses).toEqual({ '503 capacity': 20 });
    expect(after.outcome.greedyAdmitted).toBe(3); // 50% of 6
    expect(after.outcome.greedyStatuses).toEqual({ '101': 3, '429 client': 9 });
    expect(after.outcome.politeAdmitted).toBe(20);
    // The greedy client's three sockets were still open at the end, and counted as its own.
    expect(after.m.get('ws_admission_clients_tracked')).toBe(1);
    expect(after.leases).toBe(3);
  });
});

describe('who a client is: a header set by a trusted layer in front (clientIdentity header)', () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      24400,
      {
        maxConnectionsPerPod: 10,
        rateLimitPerMinute: 0,
        capacityCacheMs: 0,
        clientIdentity: 'header',
        clientHeader: 'x-user-id',
        maxConnectionsPerClient: 1,
        maxConnectionsPerClientPercent: 0,
        rateLimitPerClientPerMinute: 0,
      },
      { proxies: 2, backends: 2 },
    );
  });
  afterAll(async () => rig?.stop());

  it('one socket per user across both proxies; a value no identity can be (huge, odd bytes) falls back to the address; no key or member is made of it', async () => {
    const [u0, u1] = rig.proxies.map((p) => p.publicUrl);
    const opened: Opened[] = [];
    const keep = (r: Opened | Refused) => {
      if (r.kind === 'open') opened.push(r);
      return r.kind === 'open' ? 101 : `${r.status} ${String(r.headers['x-ws-admission'])}`;
    };
    try {
      expect(keep(await connect(u0, { 'x-user-id': 'alice' }))).toBe(101);
      expect(keep(await connect(u1, { 'x-user-id': 'alice' }))).toBe('429 client');
      expect(keep(await connect(u1, { 'x-user-id': 'bob' }))).toBe(101);
      // Over 256 bytes: not an identity, so the address (127.0.0.1) is the client, twice.
      expect(keep(await connect(u0, { 'x-user-id': 'a'.repeat(8000) }))).toBe(101);
      expect(keep(await connect(u1, { 'x-user-id': 'b'.repeat(8000) }))).toBe('429 client');
      // Bytes no client library sends, with a key name and a lease separator in them.
      const odd = Buffer.concat([Buffer.from('x-user-id: {ws}:stats| |'), Buffer.from([0x80, 0xff, 0xc3, 0x28]), Buffer.from('\r\n')]);
      const raw = await rawRequest(rig.proxies[0].publicPort, Buffer.concat([Buffer.from(upgradeHead()), odd, Buffer.from('\r\n')]));
      expect([101, 400, 429]).toContain(statusOf(raw));
      // Every key is one of the schema's names; every client is 16 hex digits.
      const keys = (await rig.redisCli('--scan', '--pattern', '*')).split('\n').filter(Boolean);
      for (const k of keys)
        expect(k).toMatch(
          /^\{ws\}:(rate|rate:requests|stats|leases|load|reach|down|agents|beats|recovery|inventory|clients|crate|crate:t)$/,
        );
      const list = async (...a: string[]) => (await rig.redisCli(...a)).split('\n').filter(Boolean);
      const clients = await list('HKEYS', '{ws}:clients');
      expect(clients.length).toBeGreaterThanOrEqual(3); // alice, bob, 127.0.0.1
      for (const c of clients) expect(c).toMatch(/^[0-9a-f]{16}$/);
      for (const m of await list('ZRANGE', '{ws}:leases', '0', '-1')) {
        expect(m).toMatch(/^[a-z0-9.-]+\|[0-9a-f]+\|\d+\|[0-9a-f]+\|[0-9a-f]{16} 127\.0\.1\.\d+:\d+$/);
      }
    } finally {
      closeAll(opened);
    }
  });
});

function upgradeHead(): string {
  return [
    'GET / HTTP/1.1',
    'Host: example.test',
    'Connection: Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    '',
  ].join('\r\n');
}

describe("who a client is: the NLB's proxy protocol header (nlbProxyProtocol, the default)", () => {
  let rig: LocalRig;
  beforeAll(async () => {
    rig = await startRig(
      24600,
      { maxConnectionsPerPod: 10, rateLimitPerMinute: 0, capacityCacheMs: 0, nlbProxyProtocol: true, maxConnectionsPerClient: 1 },
      { proxies: 1, backends: 2 },
    );
  });
  afterAll(async () => rig?.stop());

  it('the address in the header is the client, whichever peer carried it; a connection without the header is its peer', async () => {
    const port = rig.proxies[0].publicPort;
    const via = (client: string, peer: string) =>
      rawRequest(
        port,
        Buffer.concat([proxyProtocolV2([client, 40000], ['10.0.0.10', 8080]), Buffer.from(upgradeHead() + '\r\n')]),
        1500,
        peer,
      );
    // One socket per client: the second from 198.51.100.7, through another NLB node, is refused.
    expect(statusOf(await via('198.51.100.7', '127.0.8.1'))).toBe(101);
    const second = await via('198.51.100.7', '127.0.8.2');
    expect(statusOf(second)).toBe(429);
    expect(second).toMatch(/\r\nx-ws-admission: client\r\n/i);
    // Another client through the first node's address: its own limit.
    expect(statusOf(await via('198.51.100.8', '127.0.8.1'))).toBe(101);
    // Without the header (a probe, or the NLB before it sends one): served, as its peer.
    expect(statusOf(await rawRequest(port, upgradeHead() + '\r\n', 1500, '127.0.8.3'))).toBe(101);
  });
});
