/**
 * The agent (lua/cli/agent.lua) as the pod runs it: `luajit agent.lua` with the Lua files the
 * ConfigMap ships (collectLuaFiles(DEFAULT_LUA_DIRS)) and a settings.lua, in front of a real
 * redis-server with the library loaded, a lease log file the test writes as Envoy would,
 * and an Envoy admin stand-in (GET /clusters, POST /reopen_logs).
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import { collectLuaFiles, DEFAULT_LUA_DIRS } from '../../constructs/filter-config';
import Redis from 'ioredis';
import { STATE_FILES } from '../../envoy/bootstrap';
import { defaultSettings, settingsLua, Settings } from '../filter/harness/worker';
import { Functions, lease } from '../redis/support/functions';
import { RedisServer, startRedis } from '../../tools/rig/redis-server';

export const ROOT = path.resolve(__dirname, '..', '..');

/** A directory laid out like /etc/envoy/lua in the pod, with its settings.lua. */
export function podLuaDir(settings: object): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-lua-'));
  for (const f of collectLuaFiles(DEFAULT_LUA_DIRS)) fs.writeFileSync(path.join(dir, f.name), f.content);
  fs.writeFileSync(path.join(dir, 'settings.lua'), settingsLua(settings as Record<string, unknown>));
  return dir;
}

/** Settings for the agent tests: short intervals, the given Redis. */
export function agentSettings(redisPort: number, passwordFile: string, over: Partial<Settings> = {}): Settings {
  return defaultSettings(redisPort, {
    redis_password_file: passwordFile,
    lease_ttl_ms: 30000,
    renew_interval_ms: 1000,
    metrics_snapshot_ms: 500,
    penalty_ms: 15000,
    ...over,
  });
}

/**
 * Envoy's admin as the agent uses it, answering as Envoy 1.40 does (checked by hand against
 * the real one): /clusters streamed with chunked transfer encoding (a chunk boundary may
 * fall inside a line), and /stats?filter=<RE2> with one "name: value" line per matching
 * stat, sorted. The backend cluster's membership and health-check stats follow the hosts:
 * a change of the host set counts in membership_change, a host that is not healthy fails
 * one health check per /stats read (Envoy checks every 5 s).
 */
export class FakeAdmin {
  /** pod -> health_flags ('healthy', '/failed_active_hc', ...). */
  hosts = new Map<string, string>();
  reopens = 0;
  onReopen: () => void = () => undefined;
  clustersCalls = 0;
  statsCalls = 0;
  private membershipChanges = 0;
  private healthCheckFailures = 0;
  private lastSet = '';
  private server!: http.Server;

  static async start(): Promise<FakeAdmin> {
    const a = new FakeAdmin();
    a.server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://admin');
      if (req.method === 'GET' && url.pathname === '/clusters') {
        a.clustersCalls++;
        const lines = [...a.hosts].flatMap(([pod, flags]) => [
          `backend::${pod}::cx_active::0`,
          `backend::${pod}::hostname::`,
          `backend::${pod}::health_flags::${flags}`,
          `backend::${pod}::weight::1`,
        ]);
        const page = ['envoy_admin::127.0.0.1:9000::health_flags::healthy', ...lines, ''].join('\n');
        // Two chunks, the boundary inside a line.
        const cut = Math.floor(page.length / 2);
        res.write(page.slice(0, cut));
        res.end(page.slice(cut));
      } else if (req.method === 'GET' && url.pathname === '/stats') {
        a.statsCalls++;
        const filter = new RegExp(url.searchParams.get('filter') ?? '');
        const lines = Object.entries(a.clusterStats())
          .filter(([name]) => filter.test(name))
          .sort(([x], [y]) => (x < y ? -1 : 1))
          .map(([name, v]) => `${name}: ${v}`);
        res.end(lines.map((l) => l + '\n').join(''));
      } else if (req.method === 'POST' && req.url === '/reopen_logs') {
        a.reopens++;
        a.onReopen();
        res.end('OK\n');
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => a.server.listen(0, '127.0.0.1', () => r()));
    return a;
  }

  private clusterStats(): Record<string, number> {
    const set = [...this.hosts.keys()].sort().join(',');
    if (set !== this.lastSet) this.membershipChanges++;
    this.lastSet = set;
    const flags = [...this.hosts.values()];
    const healthy = flags.filter((f) => f === 'healthy').length;
    this.healthCheckFailures += flags.length - healthy;
    const stats: Record<string, number> = {};
    for (const [c, total, h] of [
      ['backend', flags.length, healthy],
      ['envoy_admin', 1, 1],
    ] as const) {
      Object.assign(stats, {
        [`cluster.${c}.membership_change`]: c === 'backend' ? this.membershipChanges : 1,
        [`cluster.${c}.membership_healthy`]: h,
        [`cluster.${c}.membership_degraded`]: 0,
        [`cluster.${c}.membership_excluded`]: 0,
        [`cluster.${c}.membership_total`]: total,
        [`cluster.${c}.health_check.attempt`]: this.statsCalls * total,
        [`cluster.${c}.health_check.failure`]: c === 'backend' ? this.healthCheckFailures : 0,
        [`cluster.${c}.health_check.healthy`]: h,
        [`cluster.${c}.upstream_cx_total`]: this.statsCalls,
      });
    }
    return stats;
  }

  get address(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  healthy(...pods: string[]): void {
    this.hosts = new Map(pods.map((p) => [p, 'healthy']));
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** One lease log line as envoy/bootstrap.ts's format writes it. */
export function entry(
  type: 'open' | 'periodic' | 'end',
  id: string,
  pod: string,
  o: { registered?: boolean; status?: number; flags?: string; upstream?: string; atMs?: number } = {},
): string {
  const kind = { open: 'DownstreamTunnelSuccessfullyEstablished', periodic: 'DownstreamPeriodic', end: 'DownstreamEnd' }[type];
  const at = o.atMs ?? Date.now();
  const start = at - 1000;
  return (
    [kind, id, pod, o.registered === false ? '0' : '1', o.status ?? 101, o.flags ?? '-', o.upstream ?? pod, start, 1000].join(' ') + '\n'
  );
}

export interface RunningAgent {
  readonly proc: ChildProcess;
  readonly stateDir: string;
  output(): string;
  stop(): Promise<void>;
}

/** Starts the agent of proxy `proxy` (POD_NAME) with its own state directory. */
export function startAgent(
  luaDir: string,
  proxy: string,
  admin: string,
  o: { stateDir?: string; args?: string[]; env?: NodeJS.ProcessEnv } = {},
): RunningAgent {
  const stateDir = o.stateDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-state-'));
  let out = '';
  const proc = spawn('luajit', [path.join(luaDir, 'agent.lua'), ...(o.args ?? [])], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      WS_LUA_DIR: luaDir,
      WS_STATE_DIR: stateDir,
      WS_ENVOY_ADMIN: admin,
      POD_NAME: proxy,
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  return {
    proc,
    stateDir,
    output: () => out,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.kill('SIGKILL');
      await gone;
    },
  };
}

/** Runs `agent.lua --once` to its end: exit code and output. */
export async function runOnce(
  luaDir: string,
  proxy: string,
  admin: string,
  stateDir: string,
): Promise<{ code: number | null; out: string }> {
  const a = startAgent(luaDir, proxy, admin, { stateDir, args: ['--once'] });
  const guard = setTimeout(() => a.proc.kill('SIGKILL'), 20000);
  const code = await new Promise<number | null>((r) => a.proc.on('close', (c) => r(c)));
  clearTimeout(guard);
  return { code, out: a.output() };
}

export const leaseLogPath = (stateDir: string) => path.join(stateDir, STATE_FILES.lease_log);

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs = 8000, what = 'condition'): Promise<number> {
  const start = Date.now();
  while (!(await pred())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return Date.now() - start;
}

export const P1 = '10.0.0.1:8080';
export const P2 = '10.0.0.2:8080';
export const P3 = '10.0.0.3:8080';
const PASSWORD = 'agent-s3cret';

/**
 * What every agent test file stands on: a real redis-server with a password and the
 * ws_admission library, an Envoy admin stand-in reporting P1 and P2 healthy, and the
 * pod's Lua folder with settings pointing at both. Made in beforeAll, emptied before each
 * test, stopped after all.
 */
export class AgentRig {
  server!: RedisServer;
  redis!: Redis;
  f!: Functions;
  admin!: FakeAdmin;
  luaDir!: string;
  pwFile!: string;

  /** A lease's expiry (ms), 0 when there is none. */
  expiry = async (id: string, pod: string) => Number(await this.redis.zscore(this.f.keys.leases, lease(id, pod)));
  /** One counter of the stats hash. */
  stat = async (name: string) => Number((await this.redis.hget(this.f.keys.stats, name)) ?? 0);
  /** Admits connection `n` of `proxy` directly (generous limits). */
  admitAs = (proxy: string, n: number) =>
    this.f.admitOnce({ rateLimit: 100, windowMs: 60000, maxPerPod: 10, ttlMs: 30000, id: `${proxy}|00aa00|${n}|0000${n}` });
  /** The slot Redis gave `proxy`, null before its first beat. */
  slotOf = async (proxy: string) => this.redis.hget(this.f.keys.agents, `p:${proxy}`);
}

/** Registers the hooks that make, reset and stop an AgentRig for the calling test file. */
export function agentRig(): AgentRig {
  const rig = new AgentRig();
  beforeAll(async () => {
    rig.server = await startRedis({ password: PASSWORD });
    rig.redis = new Redis({ host: rig.server.host, port: rig.server.port, password: PASSWORD, lazyConnect: true, maxRetriesPerRequest: 0 });
    await rig.redis.connect();
    rig.f = await Functions.load(rig.redis, 'ws');
    rig.admin = await FakeAdmin.start();
    rig.pwFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ws-agent-auth-')), 'password');
    fs.writeFileSync(rig.pwFile, PASSWORD, { mode: 0o400 });
    rig.luaDir = podLuaDir(agentSettings(rig.server.port, rig.pwFile));
  });
  afterAll(async () => {
    rig.redis?.disconnect();
    await rig.admin?.stop();
    await rig.server?.stop();
  });
  beforeEach(async () => {
    await rig.redis.flushall('SYNC');
    rig.f.forget();
    await rig.f.start();
    rig.admin.healthy(P1, P2);
  });
  return rig;
}
