// lua/cli/drain.lua, the preStop program, run as the hook runs it (`luajit drain.lua`,
// WS_LUA_DIR laid out like /etc/envoy/lua) against a real redis-server with the stack's ACL
// (it AUTHs as the proxies' user, as in the pod) and the ws_admission library; and end to
// end with the public filter (the harness) taking the leases.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { STATE_FILES } from '../../envoy/bootstrap';
import { useAdmissionRig } from '../support/admission-rig';
import { freePort } from '../../tools/rig/redis-server';
import { Settings, UPGRADE, defaultSettings, makeLuaDir, openSocket } from '../filter/harness/worker';

const ROOT = path.resolve(__dirname, '..', '..');
const DRAIN = path.join(ROOT, 'lua', 'cli', 'drain.lua');
const ME = 'ws-envoy-6f7c9d8b5d-x7k2p';
const P1 = '10.0.0.1:8080';
const P2 = '10.0.0.2:8080';

const rig = useAdmissionRig();

// (An object literal type, so it passes as makeLuaDir's Record<string, unknown>.)
const settings = (overrides: Partial<Settings> = {}) => ({ ...defaultSettings(rig.redis.port, { ...rig.credentials, ...overrides }) });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  stateDir: string;
}

/** `luajit drain.lua` as the preStop hook runs it: WS_LUA_DIR, WS_STATE_DIR, POD_NAME, nothing else. */
function runDrain(opts: { luaDir?: string; podName?: string | null; args?: string[]; env?: Record<string, string> } = {}): Promise<Run> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-state-'));
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    WS_LUA_DIR: opts.luaDir ?? makeLuaDir(settings()),
    WS_STATE_DIR: stateDir,
    ...opts.env,
  };
  if (opts.podName !== null) env.POD_NAME = opts.podName ?? ME;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const p = spawn('luajit', [DRAIN, ...(opts.args ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const guard = setTimeout(() => p.kill('SIGKILL'), 15000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(guard);
      resolve({ code, stdout, stderr, ms: Date.now() - started, stateDir: env.WS_STATE_DIR });
    });
  });
}

/** Open streams as the agents report them (ws_leases R): a lease each. */
async function open(...pairs: Array<[string, string]>): Promise<void> {
  for (let i = 0; i < pairs.length; i += 1000) {
    await rig.f.leases(
      60000,
      0,
      pairs.slice(i, i + 1000).map(([id, pod]) => ['R', id, pod] as const),
    );
  }
}
/** Connection ids of the leases on `pod`. */
const members = async (pod: string) =>
  (await rig.admin.zrange(rig.f.keys.leases, 0, -1))
    .filter((m) => m.endsWith(` ${pod}`))
    .map((m) => m.slice(0, m.indexOf(' ')))
    .sort();

describe('drain.lua', () => {
  it('GIVEN leases of this proxy (POD_NAME) and others THEN it releases its own across pods, prints one line, exits 0', async () => {
    await open(
      [`${ME}|a1b2c3|1|k2`, P1],
      ['ws-envoy-6f7c9d8b5d-q9zzz|d4e5f6|1|k3', P1],
      [`${ME}|a1b2c3|2|k4`, P2],
      [`${ME}-2|a1b2c3|2|k4`, P2],
    );
    const r = await runDrain();
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^drain: released 2 leases of proxy ${ME} \\(1 scan steps, \\d+ ms\\)\\n$`));
    expect(r.code).toBe(0);
    expect([await members(P1), await members(P2)]).toEqual([['ws-envoy-6f7c9d8b5d-q9zzz|d4e5f6|1|k3'], [`${ME}-2|a1b2c3|2|k4`]]);
    expect((await rig.f.counts()).load).toEqual({ [P1]: 1, [P2]: 1 });
    expect(await rig.stats()).toMatchObject({ released: 2 });
  });

  it('THEN first it writes the draining marker (its time in ms, the proxy), for the agent to stop renewing', async () => {
    const before = Date.now();
    const r = await runDrain();
    const [at, who, rest] = fs.readFileSync(path.join(r.stateDir, STATE_FILES.draining), 'utf8').split('\n');
    expect([who, rest]).toEqual([ME, '']);
    expect(Number(at)).toBeGreaterThanOrEqual(before - 5);
    expect(Number(at)).toBeLessThanOrEqual(Date.now());
  });

  it('derives the proxy id exactly as the filter does: POD_NAME lower-cased, other characters -> "-", at most 63', async () => {
    const id = ('ws-envoy.pod-' + 'x'.repeat(80)).slice(0, 63);
    await open([`${id}|a|1|b`, P1], [`${id}x|a|1|b`, P1]);
    const r = await runDrain({ podName: 'WS_Envoy.Pod:' + 'x'.repeat(80) });
    expect(r.stdout).toContain(`drain: released 1 leases of proxy ${id} (`);
    expect(await members(P1)).toEqual([`${id}x|a|1|b`]);
  });

  it('falls back to the host name without POD_NAME (or with an empty one), as the filter does', async () => {
    const host = os
      .hostname()
      .toLowerCase()
      .replace(/[^a-z0-9.-]/g, '-')
      .slice(0, 63);
    await open([`${host}|a|1|b`, P1], [`${host}|a|2|c`, P1]);
    expect((await runDrain({ podName: null })).stdout).toContain(`drain: released 2 leases of proxy ${host} (`);
    await open([`${host}|a|3|d`, P1]);
    expect((await runDrain({ podName: '' })).stdout).toContain(`drain: released 1 leases of proxy ${host} (`);
  });

  it('says so when it cannot write the draining marker, and still releases', async () => {
    await open([`${ME}|w|1|a`, P1]);
    const r = await runDrain({ env: { WS_STATE_DIR: '/nonexistent/ws-state' } });
    expect(r.stdout).toBe(
      `drain: released 1 leases of proxy ${ME} (1 scan steps, ${/(\d+) ms/.exec(r.stdout)?.[1]} ms); no draining marker ` +
        '(/nonexistent/ws-state/draining: No such file or directory): a periodic entry before SIGTERM may renew a lease again\n',
    );
    expect(r.code).toBe(0);
  });

  it('answers 0 with no lease at all (nothing to do is success)', async () => {
    const r = await runDrain();
    expect(r.stdout).toMatch(new RegExp(`^drain: released 0 leases of proxy ${ME} \\(1 scan steps, \\d+ ms\\)\\n$`));
    expect(r.code).toBe(0);
  });

  it('covers any number of leases in scan steps of about 1000, one FCALL per step (each call stays short)', async () => {
    const me = 'envoy-big';
    const pairs: Array<[string, string]> = [];
    for (let i = 0; i < 450; i++) {
      const pod = `10.1.${Math.floor(i / 256)}.${i % 256}:8080`;
      for (let j = 1; j <= 5; j++) pairs.push([`${me}|w|${j}|x${i}`, pod]);
      pairs.push([`other|w|1|x${i}`, pod]);
    }
    await open(...pairs);
    await rig.admin.config('RESETSTAT');
    const r = await runDrain({ podName: me });
    const steps = Number(/\((\d+) scan steps,/.exec(r.stdout)?.[1]);
    expect(r.stdout).toContain(`drain: released 2250 leases of proxy ${me} (`);
    expect(r.code).toBe(0);
    expect(await rig.calls('fcall')).toBe(steps);
    expect(steps).toBeGreaterThanOrEqual(3); // 2700 leases, ~1000 per step
    expect(await rig.admin.zcard(rig.f.keys.leases)).toBe(450);
    expect((await rig.f.counts()).load['10.1.0.7:8080']).toBe(1);
  });

  it('copies its line to --log-file (the hook passes /proc/1/fd/1), best effort', async () => {
    await open([`${ME}|a|1|b`, P1]);
    const log = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-log-')), 'out');
    fs.writeFileSync(log, 'envoy says hi\n');
    const r = await runDrain({ args: ['--log-file', log] });
    expect(r.code).toBe(0);
    expect(fs.readFileSync(log, 'utf8')).toBe(`envoy says hi\n${r.stdout}`); // appended, same line
    // An unwritable log file does not turn a good drain into a failure.
    const r2 = await runDrain({ args: ['--log-file', '/nonexistent/dir/out'] });
    expect(r2.stdout).toMatch(/^drain: released 0 leases /);
    expect(r2.code).toBe(0);
  });

  describe('on failure: one clear line, exit 1 (a FailedPreStopHook event; SIGTERM still follows), bounded time', () => {
    it('Redis down (connection refused)', async () => {
      const port = await freePort();
      const r = await runDrain({ luaDir: makeLuaDir(settings({ redis_port: port })) });
      expect(r.stdout).toBe(
        `drain: FAILED to release the leases of proxy ${ME}: Redis 127.0.0.1:${port} unavailable: ` +
          `connect 127.0.0.1:${port}: connection refused (they expire by themselves within the lease TTL)\n`,
      );
      expect(r.code).toBe(1);
      expect(r.ms).toBeLessThan(5000);
    });

    it('Redis accepts but never answers: bounded by redis_read_timeout_ms', async () => {
      const sockets: net.Socket[] = [];
      const silent = net.createServer((s) => {
        sockets.push(s);
      });
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
      const port = (silent.address() as net.AddressInfo).port;
      try {
        const r = await runDrain({
          luaDir: makeLuaDir(settings({ redis_port: port, redis_connect_timeout_ms: 300, redis_read_timeout_ms: 300 })),
        });
        expect(r.stdout).toMatch(
          new RegExp(
            `^drain: FAILED to release the leases of proxy ${ME}: Redis 127\\.0\\.0\\.1:\\d+ unavailable: receive: timeout \\(they expire`,
          ),
        );
        expect(r.code).toBe(1);
        expect(r.ms).toBeGreaterThanOrEqual(250);
        expect(r.ms).toBeLessThan(5000); // AUTH's round trip, then the error: no retry loop
      } finally {
        for (const s of sockets) s.destroy();
        silent.close();
      }
    });

    it('a wrong password, and a missing password file', async () => {
      const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-drain-auth-')), 'password');
      fs.writeFileSync(bad, 'wrong\n');
      const r = await runDrain({ luaDir: makeLuaDir(settings({ redis_password_file: bad })) });
      expect(r.stdout).toMatch(
        /^drain: FAILED to release the leases of proxy \S+: Redis 127\.0\.0\.1:\d+ unavailable: AUTH failed: WRONGPASS/,
      );
      expect(r.code).toBe(1);
      const r2 = await runDrain({ luaDir: makeLuaDir(settings({ redis_password_file: '/nonexistent/password' })) });
      expect(r2.stdout).toContain('unavailable: cannot read redis_password_file /nonexistent/password');
      expect(r2.code).toBe(1);
    });

    it('a Redis without the library (restarted, not loaded yet): says what to load', async () => {
      await rig.admin.call('FUNCTION', 'FLUSH');
      const r = await runDrain();
      expect(r.stdout).toMatch(
        new RegExp(
          `^drain: FAILED to release the leases of proxy ${ME}: Redis 127\\.0\\.0\\.1:\\d+: ws_release_proxy: ERR Function not found \\(the ws_admission library is not loaded in this Redis`,
        ),
      );
      expect(r.code).toBe(1);
    });

    it('bad settings.lua: names the field', async () => {
      const s: Record<string, unknown> = { ...settings() };
      delete s.redis_port;
      const r = await runDrain({ luaDir: makeLuaDir(s) });
      expect(r.stdout).toBe(
        `drain: FAILED to release the leases of proxy ${ME}: bad settings: ` +
          'settings.redis_port is missing (want integer) (they expire by themselves within the lease TTL)\n',
      );
      expect(r.code).toBe(1);
    });

    it('refuses the shared fallback id "unknown" (its leases may be other proxies\')', async () => {
      await open(['unknown|a|1|b', P1]);
      const r = await runDrain({ podName: 'unknown' });
      expect(r.stdout).toContain("refusing to release the shared id 'unknown'");
      expect(r.code).toBe(1);
      expect(await members(P1)).toEqual(['unknown|a|1|b']);
    });

    it('an unknown argument', async () => {
      const r = await runDrain({ args: ['--verbose'] });
      expect(r.stdout).toContain("unknown argument '--verbose' (usage: luajit drain.lua [--log-file PATH])");
      expect(r.code).toBe(1);
    });
  });
});

describe('drain.lua with the public filter taking the leases (harness)', () => {
  it('GIVEN an old proxy holding every slot WHEN its drain runs THEN the slots are free at once for the new proxy', async () => {
    const s = { max_connections_per_pod: 1 };
    const oldProxy = await rig.worker(s, { proxy: 'ws-envoy-old-abcde' });
    const newProxy = await rig.worker(s, { proxy: 'ws-envoy-new-fghij' });
    expect((await openSocket(oldProxy)).pod).toBe(P1);
    expect((await openSocket(oldProxy)).pod).toBe(P2);
    expect((await newProxy.request(UPGRADE)).reply?.headers['x-ws-admission']).toBe('capacity');

    // preStop of the old proxy (its connections are about to be reset by SIGTERM).
    const r = await runDrain({ podName: 'ws-envoy-old-abcde' });
    expect(r.stdout).toMatch(/^drain: released 2 leases of proxy ws-envoy-old-abcde \(1 scan steps/);
    await oldProxy.kill();

    expect((await openSocket(newProxy)).pod).toBe(P1);
    expect(await rig.stats()).toEqual({ admitted: 3, released: 2, rejected_capacity: 1 });
  });
});
