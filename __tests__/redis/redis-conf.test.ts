// The in-cluster Redis's redis.conf and its library loader (constructs/redis.ts: redisConf,
// REDIS_PROXY_COMMANDS, functionLoaderCommand) on a real redis-server: the default user is
// off; the proxies' user can call every function of the ws_admission library, and every
// command those functions run is granted to it, but it can run no Lua of its own, load or
// flush no library, and touch no key outside its hash tag; the admin user (the loader, the
// probe, operators) runs anything; the loader puts the library back within a second or
// two of it going missing; with appendOnly the state and the library survive a kill.
import { spawn, spawnSync, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { TerraformStack, Testing } from 'cdktf';
import Redis from 'ioredis';
import {
  FUNCTION_LIBRARY,
  Redis as RedisConstruct,
  REDIS_ADMIN_USER,
  REDIS_PORT,
  REDIS_PROXY_COMMANDS,
  REDIS_PROXY_USER,
  functionLoaderCommand,
  readFunctionLibrary,
  redisConf,
} from '../../constructs/redis';
import { freePort } from '../../tools/rig/redis-server';
import { Functions, lease } from './support/functions';
import { recordCommands } from './support/workers';

const proxyPassword = 'proxy0123456789';
const adminPassword = 'admin0123456789';
const TAG = 'ws';
const [P1, P2] = ['10.0.0.1:8080', '10.0.0.2:8080'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every command the library's functions can run: the literal first argument of each `call(...)`. */
function libraryCommands(): string[] {
  const src = readFunctionLibrary();
  // Every call goes through the one `call` wrapper with a literal command name; a computed
  // name would escape this list (and the check below).
  const computed = [...src.matchAll(/\bcall\((?!'|\.\.\.\))/g)].map((m) => src.slice(m.index, m.index + 40));
  expect(computed).toEqual([]);
  return [...new Set([...src.matchAll(/\bcall\('([A-Z]+)'/g)].map((m) => m[1].toLowerCase()))].sort();
}

interface RedisProcess {
  readonly port: number;
  readonly dir: string;
  client(username: string | undefined, password: string): Redis;
  /** SIGKILL, like a crash. */
  stop(): Promise<void>;
  /** Starts it again on the same config and directory. */
  start(): Promise<void>;
}

/** A redis-server on the stack's own redis.conf, on a free loopback port. */
async function startConfRedis(appendOnly = false): Promise<RedisProcess> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-acl-'));
  const conf = path.join(dir, 'redis.conf');
  fs.writeFileSync(
    conf,
    redisConf({ port, bind: '127.0.0.1', maxMemory: '64mb', dir, hashTag: TAG, proxyPassword, adminPassword, appendOnly }),
  );
  const client = (username: string | undefined, password: string) =>
    new Redis({ host: '127.0.0.1', port, username, password, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  const launch = async () => {
    const log = fs.openSync(path.join(dir, 'redis.log'), 'a');
    const proc = spawn('redis-server', [conf], { stdio: ['ignore', log, 'inherit'] });
    fs.closeSync(log);
    for (let i = 0; ; i++) {
      const admin = client(REDIS_ADMIN_USER, adminPassword);
      try {
        await admin.ping();
        return proc;
      } catch (e) {
        if (i > 400) throw e;
        await sleep(25);
      } finally {
        admin.disconnect();
      }
    }
  };
  let proc = await launch();
  return {
    port,
    dir,
    client,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGKILL');
      }),
    start: async () => {
      proc = await launch();
    },
  };
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return (e as Error).message;
  }
}

/** Raw RESP commands on one connection; answers the reply lines. */
function raw(port: number, commands: string[][]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => {
      got += d.toString();
      const lines = got.split('\r\n').filter((l) => l !== '');
      if (lines.length >= commands.length) {
        sock.destroy();
        resolve(lines);
      }
    });
    sock.on('error', reject);
    sock.write(commands.map((c) => `*${c.length}\r\n` + c.map((x) => `$${Buffer.byteLength(x)}\r\n${x}\r\n`).join('')).join(''));
  });
}

describe("the stack's redis.conf", () => {
  let redis: RedisProcess;
  let admin: Redis;
  let proxy: Redis;

  beforeAll(async () => {
    redis = await startConfRedis();
    admin = redis.client(REDIS_ADMIN_USER, adminPassword);
    proxy = redis.client(REDIS_PROXY_USER, proxyPassword);
  });
  afterAll(async () => {
    admin.disconnect();
    proxy.disconnect();
    await redis.stop();
    fs.rmSync(redis.dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await admin.flushall();
    await admin.call('FUNCTION', 'FLUSH');
    await admin.call('FUNCTION', 'LOAD', readFunctionLibrary());
  });

  it('refuses the default user: an AUTH with the password alone fails, and nothing runs without AUTH', async () => {
    const [auth, ping] = await raw(redis.port, [['AUTH', proxyPassword], ['PING']]);
    expect(auth).toMatch(/^-WRONGPASS/);
    expect(ping).toMatch(/^-NOAUTH/);
    const [ok, pong] = await raw(redis.port, [['AUTH', REDIS_PROXY_USER, proxyPassword], ['PING']]);
    expect([ok, pong]).toEqual(['+OK', '+PONG']);
  });

  it('grants the proxies every command a function of the library calls (read from its source)', () => {
    const granted = new Set<string>(REDIS_PROXY_COMMANDS);
    const missing = libraryCommands().filter((c) => !granted.has(c));
    expect(missing).toEqual([]);
    // ... and nothing a proxy could run code, enumerate or reconfigure with.
    for (const c of [
      'eval',
      'evalsha',
      'eval_ro',
      'evalsha_ro',
      'script',
      'function',
      'fcall_ro',
      'keys',
      'scan',
      'flushall',
      'flushdb',
      'config',
    ]) {
      expect({ c, granted: granted.has(c) || [...granted].some((g) => g.startsWith(`${c}|`)) }).toEqual({ c, granted: false });
    }
  });

  it("runs every function's main paths as the proxies' user: every command they ran is granted (MONITOR)", async () => {
    const rec = await recordCommands(redis.port, { username: REDIS_ADMIN_USER, password: adminPassword });
    const f = new Functions(proxy, TAG);
    const k = f.keys;
    const req = { rateLimit: 10, windowMs: 60000, maxPerPod: 1, ttlMs: 30000 };
    // ws_admit before any epoch (a new or emptied Redis): nothing is decided.
    expect((await f.admitOnce({ ...req, id: 'envoy-a|0|1|a' })).status).toBe('RECOVERING');
    // ws_recover begin + done: the state starts.
    expect(await f.recoverBegin('envoy-a', '0123456789abcdef', ['envoy-b'])).toEqual(['0123456789abcdef', expect.any(Number)]);
    expect(await f.recoverDone('envoy-a')).toBe(1); // envoy-b still awaited
    expect(await f.recoverDone('envoy-b')).toBe(0);
    // Everyone known is back; the recovery's minimum window (3 s) then ends it. Its end, as
    // the next beat after it writes it (without waiting 3 s here):
    await f.redis.hdel(k.stats, 'recovering_until', 'recovering_min');
    // A proxy without registered hosts.
    expect((await f.admitOnce({ ...req, id: 'envoy-a|0|2|a' })).status).toBe('NOHOSTS');
    // ws_hosts: claim, add, commit; then a removal (the pod leaves reach and load).
    await f.reach('envoy-a', [P1, P2]);
    await f.reach('envoy-a', [P1]);
    expect(await proxy.zrange(k.load, 0, -1)).toEqual([P1]);
    // ws_admit: admitted with the inventory; full; rate limited; a client's limit; an expired lease given back.
    expect(await f.admitOnce({ ...req, id: 'envoy-a|0|3|a', client: '192.0.2.7' })).toEqual({
      status: 'ADMITTED',
      pod: P1,
      activeOnPod: 1,
      retryAfterMs: 0,
      rateRemaining: 9,
    });
    expect((await f.admitOnce({ ...req, id: 'envoy-a|0|4|a' })).status).toBe('FULL');
    expect((await f.admitOnce({ ...req, rateLimit: 1, id: 'envoy-a|0|5|a' })).status).toBe('RATE_LIMITED');
    expect(await f.release('envoy-a|0|3|a', P1)).toBe(1);
    // A client's own window (one upgrade per minute): its second upgrade is refused.
    const C = '0123456789abcdef';
    expect((await f.admitOnce({ ...req, ttlMs: 1, id: `envoy-a|0|6|a|${C}`, client: '192.0.2.8', clientRate: 1 })).status).toBe('ADMITTED');
    await sleep(5);
    expect((await f.admitOnce({ ...req, id: `envoy-a|0|10|a|${C}`, clientRate: 1 })).status).toBe('CLIENT');
    expect((await f.admitOnce({ ...req, id: 'envoy-a|0|7|a' })).status).toBe('ADMITTED');
    expect(await proxy.hget(k.stats, 'expired')).toBe('1');
    // ws_leases: a renewal, a lease put back, a release, a failed upgrade (its pod penalised).
    expect(await f.leases(30000, 0, [['R', 'envoy-a|0|7|a', P1]])).toEqual([1, 0, 0, 0]);
    expect(await f.leases(30000, 0, [['R', 'envoy-a|0|8|a', P1]])).toEqual([0, 1, 0, 0]);
    expect(
      await f.leases(30000, 15000, [
        ['X', 'envoy-a|0|8|a', P1],
        ['F', 'envoy-a|0|7|a', P1],
      ]),
    ).toEqual([0, 0, 2, 1]);
    expect(await proxy.zscore(k.down, P1)).not.toBeNull();
    // ws_beat with the live proxies; a second proxy whose agent stopped beating: its slot is
    // marked dead and cleaned in steps (HSCAN of reach), and its host claims fail with SLOT.
    const slotA = await f.reach('envoy-a', [P1, P2]);
    const slotB = await f.reach('envoy-b', [P2]);
    const beat = await f.beat('envoy-a', slotA, true);
    expect({ ...beat, live: [...beat.live].sort() }).toEqual({
      epoch: '0123456789abcdef',
      recoveringMs: 0,
      slotOk: true,
      live: ['envoy-a', 'envoy-b'],
      liveCount: 2,
    });
    await admin.zadd(k.beats, 'XX', '1', String(slotB)); // (the admin plays the clock: 30 s without a beat)
    expect((await f.beat('envoy-a', slotA)).slotOk).toBe(true);
    expect(await f.hosts('add', 'envoy-b', slotB, [P1])).toEqual(['SLOT']);
    expect(await proxy.hget(k.agents, `s:${slotB}`)).toBeNull();
    // ws_release_proxy, ws_snapshot, ws_request_rate.
    expect((await f.admitOnce({ ...req, id: 'envoy-a|0|9|a' })).status).toBe('ADMITTED');
    expect(await f.releaseProxy('envoy-a')).toEqual({ removed: 1, steps: 1 });
    const snap = await f.snapshot(60000);
    expect(snap.gauges).toEqual({ pods_reachable: 2, pods_penalised: 1, proxies_live: 1, recovering: 0, clients_tracked: 0 });
    const rate = (id: string) => f.fcall('ws_request_rate', [k.rateRequests, k.stats], [1, 60000, id]);
    expect(await rate('req-1')).toEqual(['ALLOWED', 0, 0]);
    expect(((await rate('req-2')) as unknown[])[0]).toBe('RATE_LIMITED');
    expect(await proxy.zcard(k.leases)).toBe(0);
    const log = await rec.stop();

    // Every command the functions ran was run under the proxies' ACL, without a refusal
    // (a refused call would have failed its FCALL above) ...
    const ran = [...new Set(log.filter((c) => c.fromFunction).map((c) => c.args[0].toLowerCase()))].sort();
    for (const c of ran) expect({ c, granted: (REDIS_PROXY_COMMANDS as readonly string[]).includes(c) }).toEqual({ c, granted: true });
    // ... and these paths ran every command the library can call, so none is left untried.
    expect(ran).toEqual(libraryCommands());
  });

  it('refuses a function whose calls the caller may not run: Redis checks them against the ACL (why the list above matters)', async () => {
    await admin.call(
      'ACL',
      'SETUSER',
      'ws-lacking',
      'on',
      '>lacking0123456789',
      'resetkeys',
      `~{${TAG}}:*`,
      '-@all',
      ...REDIS_PROXY_COMMANDS.filter((c) => c !== 'hlen').map((c) => `+${c}`),
    );
    const lacking = redis.client('ws-lacking', 'lacking0123456789');
    try {
      const f = new Functions(lacking, TAG);
      await f.start();
      // Redis 7.0's words (the command is not named): the function's own HLEN was refused.
      expect(await errorOf(f.snapshot(60000))).toMatch(/can't run this command or subcommand script: ws_snapshot/);
      // The same user with HLEN granted runs it.
      await admin.call('ACL', 'SETUSER', 'ws-lacking', '+hlen');
      expect((await f.snapshot(60000)).gauges.recovering).toBe(0);
    } finally {
      lacking.disconnect();
      await admin.call('ACL', 'DELUSER', 'ws-lacking');
    }
  });

  it("refuses the proxies' user any Lua of its own, the library's management, and any other command", async () => {
    const sha = String(await admin.script('LOAD', 'return 1'));
    for (const [what, p] of [
      ['SCRIPT LOAD', proxy.script('LOAD', 'return 1')],
      ['SCRIPT FLUSH', proxy.script('FLUSH')],
      ['EVAL', proxy.eval('return 1', 0)],
      ['EVALSHA', proxy.evalsha(sha, 0)],
      ['EVAL_RO', proxy.call('EVAL_RO', 'return 1', '0')],
      ['FUNCTION LOAD', proxy.call('FUNCTION', 'LOAD', 'REPLACE', readFunctionLibrary())],
      ['FUNCTION FLUSH', proxy.call('FUNCTION', 'FLUSH')],
      ['FUNCTION DELETE', proxy.call('FUNCTION', 'DELETE', FUNCTION_LIBRARY.name)],
      ['FUNCTION LIST', proxy.call('FUNCTION', 'LIST')],
      ['FCALL_RO', proxy.call('FCALL_RO', 'ws_snapshot', '0')],
      ['KEYS', proxy.keys('*')],
      ['SCAN', proxy.scan('0')],
      ['FLUSHALL', proxy.flushall()],
      ['FLUSHDB', proxy.flushdb()],
      ['CONFIG GET', proxy.config('GET', 'requirepass')],
      ['CONFIG SET', proxy.config('SET', 'maxmemory', '1')],
      ['ACL LIST', proxy.acl('LIST')],
      ['CLIENT LIST', proxy.call('CLIENT', 'LIST')],
      ['GET', proxy.get(`{${TAG}}:stats`)],
    ] as const) {
      expect({ what, err: await errorOf(p) }).toEqual({ what, err: expect.stringMatching(/NOPERM/) });
    }
    // The library is still there, unchanged.
    expect(JSON.stringify(await admin.call('FUNCTION', 'LIST', 'LIBRARYNAME', FUNCTION_LIBRARY.name))).toContain('ws_admit');
  });

  it("refuses the proxies' user any key outside its hash tag, also through a function's KEYS", async () => {
    for (const key of ['other:leases', `{${TAG}x}:leases`, `${TAG}:leases`]) {
      expect({ key, err: await errorOf(proxy.zadd(key, 1, 'a')) }).toEqual({ key, err: expect.stringMatching(/NOPERM/) });
      // A function handed a foreign key: Redis checks the keys of an FCALL (and the function's calls).
      const f = new Functions(proxy, TAG);
      const keys = f.leasesKeys().map((k, i) => (i === 1 ? key : k));
      expect({ key, err: await errorOf(f.fcall('ws_leases', keys, [1000, 0, 'X', 'a|0|0|0', P1])) }).toEqual({
        key,
        err: expect.stringMatching(/NOPERM|No permissions to access a key/i),
      });
    }
  });

  it('lets the admin user (loader, probe, operators) run anything', async () => {
    expect(await admin.ping()).toBe('PONG');
    expect(await admin.set('other:key', '1')).toBe('OK');
    expect(await admin.acl('WHOAMI')).toBe(REDIS_ADMIN_USER);
    expect(await admin.call('FUNCTION', 'LOAD', 'REPLACE', readFunctionLibrary())).toBe(FUNCTION_LIBRARY.name);
  });
});

describe('the library loader (functionLoaderCommand) and the readiness probe, for real', () => {
  let redis: RedisProcess;
  let admin: Redis;
  const loaders: ChildProcess[] = [];
  const libraryFile = () => path.join(redis.dir, path.basename(FUNCTION_LIBRARY.file));
  const loaded = async () =>
    JSON.stringify(await admin.call('FUNCTION', 'LIST', 'LIBRARYNAME', FUNCTION_LIBRARY.name)).includes('ws_admit');

  /** The container's command, on this Redis's port instead of the pod's 6379. */
  function loaderScript(): string {
    const [sh, flag, script] = functionLoaderCommand(libraryFile());
    expect([sh, flag]).toEqual(['sh', '-c']);
    expect(script.split(`-p ${REDIS_PORT} `).length).toBeGreaterThan(1);
    return script.split(`-p ${REDIS_PORT} `).join(`-p ${redis.port} `);
  }

  function startLoader(password: string): { proc: ChildProcess; stderr: () => string } {
    const proc = spawn('sh', ['-c', loaderScript()], {
      env: { ...process.env, REDISCLI_AUTH: password },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    loaders.push(proc);
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    return { proc, stderr: () => err };
  }

  const exited = (p: ChildProcess) =>
    new Promise<number | null>((resolve) => {
      if (p.exitCode !== null) return resolve(p.exitCode);
      p.once('exit', (code) => resolve(code));
    });

  async function until(what: string, ok: () => Promise<boolean>, timeoutMs: number): Promise<number> {
    const start = Date.now();
    while (!(await ok())) {
      if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await sleep(20);
    }
    return Date.now() - start;
  }

  beforeAll(async () => {
    redis = await startConfRedis();
    admin = redis.client(REDIS_ADMIN_USER, adminPassword);
    fs.copyFileSync(FUNCTION_LIBRARY.file, libraryFile());
  });
  afterEach(async () => {
    for (const p of loaders.splice(0)) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      // Its `sleep 1` child holds the pipe a moment longer: do not wait for it.
      p.stderr?.destroy();
    }
  });
  afterAll(async () => {
    admin.disconnect();
    await redis.stop();
    fs.rmSync(redis.dir, { recursive: true, force: true });
  });

  it('loads the library into a Redis that has none, and again within ~2 s of a FUNCTION FLUSH; exits 0 on SIGTERM', async () => {
    await admin.call('FUNCTION', 'FLUSH');
    const loader = startLoader(adminPassword);
    await until('the first load', loaded, 5000);
    for (let i = 0; i < 2; i++) {
      await admin.call('FUNCTION', 'FLUSH');
      expect(await loaded()).toBe(false);
      const ms = await until('the load after FUNCTION FLUSH', loaded, 5000);
      // One loop turn is a second plus two redis-cli runs; slack for a busy 2-CPU machine.
      expect(ms).toBeLessThan(2500);
    }
    expect(loader.stderr()).toBe('');
    // The proxies can call it at once.
    const proxy = redis.client(REDIS_PROXY_USER, proxyPassword);
    try {
      expect(await proxy.call('FCALL', 'ws_beat', '7', ...new Functions(proxy, TAG).beatKeys(), 'envoy-a', '', '0')).toEqual([
        '',
        0,
        0,
        [],
        0,
      ]);
    } finally {
      proxy.disconnect();
    }
    // SIGTERM ends it at once (the trap; `sleep & wait` lets the shell take the signal).
    const t = Date.now();
    loader.proc.kill('SIGTERM');
    expect(await exited(loader.proc)).toBe(0);
    expect(Date.now() - t).toBeLessThan(1500);
  });

  it('says why on stderr when it cannot load (a wrong admin password), and keeps trying', async () => {
    await admin.call('FUNCTION', 'FLUSH');
    const loader = startLoader('wrong-password');
    await until('a failure line', async () => loader.stderr().includes('functions: FUNCTION LOAD failed:'), 5000);
    expect(loader.stderr()).toMatch(/functions: FUNCTION LOAD failed: .*(WRONGPASS|AUTH|invalid username-password)/);
    expect(loader.proc.exitCode).toBeNull();
    expect(await loaded()).toBe(false);
  });

  it('makes Redis ready only with the library loaded (the readiness probe of the Redis container)', async () => {
    const stack = new TerraformStack(Testing.app(), 's');
    new RedisConstruct(stack, 'r', { namespace: 'ns', image: 'redis:7.4.2-alpine', clientSelector: { a: 'b' } });
    const deployment = Object.values(JSON.parse(Testing.synth(stack)).resource.kubernetes_deployment_v1 as Record<string, any>)[0];
    const [sh, flag, probe] = deployment.spec.template.spec.container[0].readiness_probe.exec.command as string[];
    expect([sh, flag]).toEqual(['sh', '-c']);
    // The probe talks to the pod's loopback on Redis's default port; here, this Redis's.
    expect(probe).toContain(' -h 127.0.0.1 ');
    const here = probe.replace(' -h 127.0.0.1 ', ` -h 127.0.0.1 -p ${redis.port} `);
    const run = () => spawnSync('sh', ['-c', here], { env: { ...process.env, REDISCLI_AUTH: adminPassword } }).status;
    await admin.call('FUNCTION', 'FLUSH');
    expect(run()).toBe(1);
    await admin.call('FUNCTION', 'LOAD', readFunctionLibrary());
    expect(run()).toBe(0);
  });
});

it('with appendOnly, a Redis killed (SIGKILL) comes back with the library and the leases written more than a second before', async () => {
  const redis = await startConfRedis(true);
  try {
    const admin = redis.client(REDIS_ADMIN_USER, adminPassword);
    await admin.call('FUNCTION', 'LOAD', readFunctionLibrary());
    admin.disconnect();
    const proxy = redis.client(REDIS_PROXY_USER, proxyPassword);
    const f = new Functions(proxy, TAG);
    const epoch = await f.start();
    await f.reach('envoy-a', [P1]);
    const r = await f.admitOnce({ rateLimit: 10, windowMs: 60000, maxPerPod: 2, ttlMs: 60000, id: 'envoy-a|0|1|a' });
    expect(r.status).toBe('ADMITTED');
    proxy.disconnect();
    await sleep(1500); // appendfsync everysec
    await redis.stop();
    await redis.start(); // the same config and directory: the AOF is read back
    const again = redis.client(REDIS_PROXY_USER, proxyPassword);
    const g = new Functions(again, TAG);
    // Redis replayed the whole AOF: no write of a function refused on the way.
    expect(fs.readFileSync(path.join(redis.dir, 'redis.log'), 'utf8')).not.toMatch(/CRITICAL|NOPERM/);
    expect(await again.zrange(g.keys.leases, 0, -1)).toEqual([lease('envoy-a|0|1|a', P1)]);
    // The same epoch (nothing to recover) and the library, callable at once.
    expect((await g.beat('envoy-a')).epoch).toBe(epoch);
    again.disconnect();
  } finally {
    await redis.stop();
    fs.rmSync(redis.dir, { recursive: true, force: true });
  }
});
