// The host list off the request path: metrics.lua answers the kubelet probe (GET /ready on
// the metrics listener) from admin /ready and, on the way, writes the backend cluster's
// healthy hosts to WS_STATE_DIR/hosts; the public filter's workers read that file instead
// of calling the admin, so their upgrades stay two-way. Missing or stale file: the old
// httpCall path, a one-way stream, counted in ws_admission_one_way_streams_total.
// Each worker below is its own luajit process with its own fake admin (same host list
// unless a test changes one), sharing the pod's WS_STATE_DIR as in the container.
import * as fs from 'fs';
import * as path from 'path';
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE, sleep, liveLeases, commandCalls, Worker, SideResult, HOSTS } from './harness/worker';

let redis: RedisServer;
let fleet: Fleet;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  redis.cli('FLUSHALL');
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

const hostsPath = () => path.join(fleet.stateDir, 'hosts');

/** The file as metrics.lua writes it (lua/envoy/hosts.lua format_file). */
function hostsFile(hosts: string[], writtenMs: number, cluster = 'backend'): string {
  return (
    ['ws-admission-hosts 1', `written_ms ${writtenMs}`, `cluster ${cluster}`, ...hosts.map((h) => `host ${h}`), `end ${hosts.length}`].join(
      '\n',
    ) + '\n'
  );
}

function parseHostsFile(text: string): { writtenMs: number; cluster: string; hosts: string[] } {
  const lines = text.trimEnd().split('\n');
  expect(lines[0]).toBe('ws-admission-hosts 1');
  expect(lines[lines.length - 1]).toBe(`end ${lines.length - 4}`);
  return {
    writtenMs: Number(lines[1].replace(/^written_ms /, '')),
    cluster: lines[2].replace(/^cluster /, ''),
    hosts: lines.slice(3, -1).map((l) => l.replace(/^host /, '')),
  };
}

const id = (r: SideResult) => r.metadata!['ws.admission'].connection_id as string;

async function scrape(m: Worker): Promise<string> {
  const r = await m.request([
    [':method', 'GET'],
    [':path', '/metrics'],
    [':authority', 'localhost:9901'],
  ]);
  expect(r.reply?.headers[':status']).toBe('200');
  return r.reply!.body ?? '';
}

/** Values of one {proxy,worker} family, by worker. */
function perWorker(text: string, name: string): number[] {
  return [...text.matchAll(new RegExp(`^${name}\\{proxy="[^"]*",worker="[0-9a-f]{6}"\\} (\\S+)$`, 'gm'))].map((x) => Number(x[1]));
}

describe('the probe path (metrics.lua, GET /ready)', () => {
  it('answers with admin /ready status and body, and writes the healthy hosts of the backend cluster', async () => {
    const m = await fleet.worker({}, { script: 'metrics.lua' });
    const t0 = Date.now();
    const r = await m.probe();
    expect(r.state).toBe('responded');
    expect(r.reply?.headers[':status']).toBe('200');
    expect(r.reply?.body).toBe('LIVE\n');
    expect(r.reply?.headers['content-type']).toBe('text/plain; charset=UTF-8');
    const f = parseHostsFile(fs.readFileSync(hostsPath(), 'utf8'));
    expect(f.cluster).toBe('backend');
    expect(f.hosts).toEqual(['10.0.0.1:8080', '10.0.0.2:8080']); // 10.0.0.3 fails its health check
    expect(f.writtenMs).toBeGreaterThanOrEqual(t0 - 5);
    expect(f.writtenMs).toBeLessThanOrEqual(Date.now() + 5);
    const { admin_paths } = await m.logs();
    expect(admin_paths).toEqual({ '/ready': 1, '/clusters': 1 });
  });

  it('mirrors admin when it is not ready (503 + state), when it is unreachable (503), and answers HEAD without a body', async () => {
    const m = await fleet.worker({}, { script: 'metrics.lua' });
    for (const state of ['DRAINING', 'INITIALIZING', 'PRE_INITIALIZING']) {
      await m.setHosts(HOSTS, false, state);
      const r = await m.probe();
      expect([r.reply?.headers[':status'], r.reply?.body]).toEqual(['503', `${state}\n`]);
    }
    await m.setHosts(HOSTS, false, 'LIVE');
    const head = await m.probe('HEAD');
    expect([head.reply?.headers[':status'], head.reply?.body]).toEqual(['200', '']);
    await m.setHosts(HOSTS, true);
    const down = await m.probe();
    expect(down.reply?.headers[':status']).toBe('503');
    // Other methods are not ours: they go on to the route (admin /ready), as before.
    const post = await m.probe('POST');
    expect(post.state).toBe('done');
    expect(post.reply).toBeUndefined();
  });

  it('needs no Redis: readiness and the host list file do not depend on it', async () => {
    const m = await fleet.worker({ redis_port: 1, redis_connect_timeout_ms: 50 }, { script: 'metrics.lua' });
    const calls = commandCalls(redis.cli, 'evalsha') + commandCalls(redis.cli, 'smembers');
    const r = await m.probe();
    expect(r.reply?.headers[':status']).toBe('200');
    expect(fs.existsSync(hostsPath())).toBe(true);
    expect(commandCalls(redis.cli, 'evalsha') + commandCalls(redis.cli, 'smembers')).toBe(calls);
  });

  it('replaces the file atomically (temporary file + rename: a reader holding the old file sees it whole)', async () => {
    const m = await fleet.worker({ hosts_cache_ms: 0 }, { script: 'metrics.lua' });
    await m.probe();
    const before = fs.readFileSync(hostsPath(), 'utf8');
    const held = path.join(fleet.stateDir, 'held-by-a-reader');
    fs.linkSync(hostsPath(), held); // an open reader's view of the old inode
    const ino = fs.statSync(hostsPath()).ino;
    await m.setHosts([['10.0.0.7:8080', 'healthy']]);
    await m.probe();
    expect(fs.statSync(hostsPath()).ino).not.toBe(ino); // a new file took the name
    expect(fs.readFileSync(held, 'utf8')).toBe(before); // the old one was never written into
    expect(parseHostsFile(fs.readFileSync(hostsPath(), 'utf8')).hosts).toEqual(['10.0.0.7:8080']);
    // No temporary file is left behind.
    expect(fs.readdirSync(fleet.stateDir).filter((n) => n.includes('tmp'))).toEqual([]);
  });

  it('two metrics workers refreshing at once never leave a torn file (each writes its own temporary name)', async () => {
    const ms = await Promise.all([0, 1].map(() => fleet.worker({ hosts_cache_ms: 0 }, { script: 'metrics.lua' })));
    const many: Array<[string, string]> = Array.from({ length: 300 }, (_, i) => [`10.1.${i >> 8}.${i & 255}:8080`, 'healthy']);
    await ms[0].setHosts(many);
    let reads = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 1000) {
      await Promise.all([ms[0].probe(), ms[1].probe()]);
      const f = parseHostsFile(fs.readFileSync(hostsPath(), 'utf8'));
      expect([300, 2]).toContain(f.hosts.length);
      reads += 1;
    }
    expect(reads).toBeGreaterThan(5);
  });

  it('refreshes at most once per hosts_cache_ms whatever the number of probes, and on GET /metrics too', async () => {
    const m = await fleet.worker({ hosts_cache_ms: 500 }, { script: 'metrics.lua' });
    for (let i = 0; i < 5; i++) expect((await m.probe()).reply?.headers[':status']).toBe('200');
    expect((await m.logs()).admin_paths).toEqual({ '/ready': 5, '/clusters': 1 });
    await sleep(550);
    fs.unlinkSync(hostsPath());
    await scrape(m);
    expect(fs.existsSync(hostsPath())).toBe(true);
    expect((await m.logs()).admin_paths).toEqual({ '/ready': 5, '/clusters': 2 });
  });

  it('keeps the last file when admin cannot list the hosts (it ages; nothing is written from a failure)', async () => {
    const m = await fleet.worker({ hosts_cache_ms: 0 }, { script: 'metrics.lua' });
    await m.probe();
    const before = fs.readFileSync(hostsPath(), 'utf8');
    await m.setHosts(HOSTS, true);
    await m.probe();
    expect(fs.readFileSync(hostsPath(), 'utf8')).toBe(before);
    expect((await m.logs()).logs.map((l) => l.msg).join('\n')).toMatch(/admin host list unavailable/);
  });
});

describe('the public filter with the host list file', () => {
  it('steady state: no httpCall on the request path, every upgrade two-way, client->server data renews', async () => {
    const ttl = 900;
    const s = { lease_ttl_ms: ttl, renew_interval_ms: 250, hosts_cache_ms: 300, max_connections_per_pod: 10 };
    const m = await fleet.worker(s, { script: 'metrics.lua' });
    const w = await fleet.worker(s);
    await m.probe();
    const first = await w.request(UPGRADE); // a cold worker: the file, not the admin
    expect(first.passed).toBe(true);
    expect(first.state).toBe('waiting_body'); // two-way
    expect((await w.response(first.sid, '101')).state).toBe('waiting_body');
    const t0 = Date.now();
    const later: SideResult[] = [];
    while (Date.now() - t0 < 4 * ttl) {
      await w.data(first.sid, 'request'); // the client talks, the server is quiet
      if (later.length < 8) {
        // more upgrades across several cache periods
        const r = await w.request(UPGRADE);
        expect(r.state).toBe('waiting_body');
        later.push(r);
        await w.response(r.sid, '101');
      }
      await m.probe(); // kubelet (every 5 s in the cluster)
      await sleep(100);
    }
    const live = [...liveLeases(redis.cli, '10.0.0.1:8080'), ...liveLeases(redis.cli, '10.0.0.2:8080')];
    expect(live).toContain(id(first)); // renewed by request-direction data alone
    expect((await w.logs()).admin_calls).toBe(0); // never waited in httpCall()
    // Nothing counted: no non-zero one-way series (a worker writes its counter file on its first count).
    expect(perWorker(await scrape(m), 'ws_admission_one_way_streams_total').filter((v) => v !== 0)).toEqual([]);
  });

  it('uses the list in the file, not its own admin call (a host the probe saw leave is no longer offered)', async () => {
    const m = await fleet.worker({ hosts_cache_ms: 200 }, { script: 'metrics.lua' });
    const w = await fleet.worker({ hosts_cache_ms: 200, max_connections_per_pod: 10 });
    await m.setHosts([
      ['10.0.0.2:8080', 'healthy'],
      ['10.0.0.1:8080', '/failed_outlier_check'],
    ]);
    await m.probe();
    for (let i = 0; i < 3; i++) expect((await w.request(UPGRADE)).override?.host).toBe('10.0.0.2:8080');
    await m.setHosts([['10.0.0.1:8080', 'healthy']]);
    await sleep(250);
    await m.probe();
    await sleep(250); // the worker's cache expires
    expect((await w.request(UPGRADE)).override?.host).toBe('10.0.0.1:8080');
    expect((await w.logs()).admin_calls).toBe(0);
  });

  it('file missing: falls back to the admin httpCall (one-way stream), counted per worker', async () => {
    const m = await fleet.worker({}, { script: 'metrics.lua' });
    const w = await fleet.worker({ hosts_cache_ms: 200 });
    const r = await w.request(UPGRADE);
    expect(r.passed).toBe(true);
    expect(r.state).toBe('done'); // returned after the httpCall: one-way
    const first = await w.logs();
    expect(first.admin_calls).toBe(1);
    expect(first.logs.map((l) => `${l.level} ${l.msg}`).join('\n')).toMatch(
      /^info .*hosts unusable \(missing\); fetching the host list from the admin/m,
    );
    const text = await scrape(m);
    expect(text).toMatch(/^# TYPE ws_admission_one_way_streams_total counter$/m);
    expect(perWorker(text, 'ws_admission_one_way_streams_total')).toEqual([1]);
    // Once a probe has written the file, the next refresh of the worker's cache uses it.
    await m.probe();
    await sleep(250);
    expect((await w.request(UPGRADE)).state).toBe('waiting_body');
    const { admin_calls, logs } = await w.logs();
    expect(admin_calls).toBe(1);
    expect(logs.map((l) => `${l.level} ${l.msg}`).join('\n')).toMatch(/^info .*is fresh again/m);
  });

  it('file stale (older than max(10 s, 3 x hosts_cache_ms)) or stamped in the future: the fallback path', async () => {
    const m = await fleet.worker({}, { script: 'metrics.lua' });
    const w = await fleet.worker({ hosts_cache_ms: 0, max_connections_per_pod: 100 });
    fs.writeFileSync(hostsPath(), hostsFile(['10.0.0.2:8080'], Date.now() - 9000));
    expect((await w.request(UPGRADE)).state).toBe('waiting_body'); // 9 s: still fresh
    expect((await w.logs()).admin_calls).toBe(0);
    fs.writeFileSync(hostsPath(), hostsFile(['10.0.0.2:8080'], Date.now() - 11000));
    const stale = await w.request(UPGRADE);
    expect(stale.state).toBe('done');
    expect(stale.passed).toBe(true);
    const staleLogs = await w.logs();
    expect(staleLogs.admin_calls).toBe(1);
    expect(staleLogs.logs.map((l) => `${l.level} ${l.msg}`).join('\n')).toMatch(
      /^warn .*unusable \(stale \(written \d+ ms ago, limit 10000 ms\)\)/m,
    );
    fs.writeFileSync(hostsPath(), hostsFile(['10.0.0.2:8080'], Date.now() + 60000));
    expect((await w.request(UPGRADE)).state).toBe('done'); // the clock stepped back
    expect((await w.logs()).admin_calls).toBe(2);
    fs.writeFileSync(hostsPath(), hostsFile(['10.0.0.2:8080'], Date.now() + 500)); // within the 1 s tolerance
    await sleep(1050); // the counter file is rewritten at most once a second, on the next event
    expect((await w.request(UPGRADE)).state).toBe('waiting_body');
    expect((await w.logs()).admin_calls).toBe(2);
    expect(perWorker(await scrape(m), 'ws_admission_one_way_streams_total')).toEqual([2]); // stale + future
  });

  it('a bound of 3 x hosts_cache_ms when that is longer than 10 s', async () => {
    const w = await fleet.worker({ hosts_cache_ms: 5000 });
    fs.writeFileSync(hostsPath(), hostsFile(['10.0.0.2:8080'], Date.now() - 14000));
    const r = await w.request(UPGRADE);
    expect(r.state).toBe('waiting_body');
    expect(r.override?.host).toBe('10.0.0.2:8080');
    expect((await w.logs()).admin_calls).toBe(0);
  });

  it('a fresh file listing no healthy host is the truth: 503 no_backend, no admin call', async () => {
    const w = await fleet.worker();
    fs.writeFileSync(hostsPath(), hostsFile([], Date.now()));
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers['x-ws-admission']).toBe('no_backend');
    expect((await w.logs()).admin_calls).toBe(0);
  });

  it('a file that is not ours (wrong cluster, torn, no header, huge) is unusable: the fallback path', async () => {
    const w = await fleet.worker({ hosts_cache_ms: 0, max_connections_per_pod: 100 });
    const good = hostsFile(['10.0.0.2:8080'], Date.now());
    const bad = [
      hostsFile(['10.0.0.2:8080'], Date.now(), 'other'),
      good.replace(/end 1\n$/, ''),
      good.replace('end 1', 'end 2'),
      good.replace('ws-admission-hosts 1\n', ''),
      good.replace(/written_ms \d+/, 'written_ms soon'),
      hostsFile(
        Array.from({ length: 60000 }, () => '10.0.0.2:8080'),
        Date.now(),
      ),
    ];
    for (const text of bad) {
      fs.writeFileSync(hostsPath(), text);
      expect((await w.request(UPGRADE)).state).toBe('done');
    }
    expect((await w.logs()).admin_calls).toBe(bad.length);
  });
});
