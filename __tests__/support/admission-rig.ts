import Redis from 'ioredis';
import { Functions, loadLibrary } from '../redis/support/functions';
import { Fleet, Settings, Worker, defaultSettings, makeLuaDir } from '../filter/harness/worker';
import { luaAsync, luaString } from './luajit';
import { Monitor } from './monitor';
import { RedisServer, startRedis } from '../../tools/rig/redis-server';

/** The backend pods a proxy reports healthy unless a test says otherwise. */
export const PODS = ['10.0.0.1:8080', '10.0.0.2:8080'] as const;
/** The proxy id (POD_NAME) of a worker unless a test says otherwise. */
export const PROXY = 'envoy-test-0';
const TAG = 'ws';

export interface WorkerSpec {
  /** POD_NAME of the worker (its proxy). @default PROXY */
  readonly proxy?: string;
  /** The healthy hosts of its proxy, registered as its agent does; null: none registered. @default PODS */
  readonly pods?: readonly string[] | null;
  readonly script?: 'filter.lua' | 'metrics.lua';
  /** A whole settings.lua (text or table) instead of the defaults. */
  readonly settings?: Record<string, unknown> | string;
  readonly env?: Record<string, string>;
}

/**
 * The filter tests' one fixture: a real redis-server with the stack's own redis.conf (the
 * production ACL: the workers AUTH as `ws-proxy`, may run only REDIS_PROXY_COMMANDS on
 * `{ws}:*`), the ws_admission library loaded by the admin, and what the agent sidecars
 * put in before anything is admitted (an epoch; each proxy's healthy hosts on its slot),
 * through the Functions helper. Harness workers (`worker()`) run with the proxy's
 * credentials. Optionally MONITOR. Each test starts from an empty state.
 */
export class AdmissionRig {
  private server?: RedisServer;
  private adminClient?: Redis;
  private functions?: Functions;
  private mon?: Monitor;
  private currentFleet?: Fleet;
  private down = false;

  constructor(private readonly opts: { monitor?: boolean } = {}) {}

  get redis(): RedisServer {
    return this.must(this.server, 'redis');
  }
  /** ioredis as the admin (every key and command). */
  get admin(): Redis {
    return this.must(this.adminClient, 'admin');
  }
  get f(): Functions {
    return this.must(this.functions, 'f');
  }
  get monitor(): Monitor {
    return this.must(this.mon, 'monitor (start the rig with { monitor: true })');
  }
  get fleet(): Fleet {
    return this.must(this.currentFleet, 'fleet');
  }
  /** Settings of every worker: the proxies' ACL user and its password file. */
  get credentials(): Partial<Settings> {
    const proxy = this.redis.users!.proxy;
    return { redis_username: proxy.name, redis_password_file: proxy.passwordFile };
  }

  private must<T>(v: T | undefined, what: string): T {
    if (v === undefined) throw new Error(`AdmissionRig.${what} used before start()`);
    return v;
  }

  async start(): Promise<void> {
    this.server = await startRedis({ acl: { hashTag: TAG } });
    await this.connect();
  }

  private async connect(): Promise<void> {
    const admin = this.redis.users!.admin;
    this.adminClient = new Redis({
      host: this.redis.host,
      port: this.redis.port,
      username: admin.name,
      password: admin.password,
      lazyConnect: true,
      maxRetriesPerRequest: 1,
    });
    await this.adminClient.connect();
    this.functions = new Functions(this.adminClient, TAG);
    if (this.opts.monitor) this.mon = await Monitor.start(this.redis, this.adminClient);
  }

  private disconnect(): void {
    this.mon?.stop();
    this.mon = undefined;
    this.adminClient?.disconnect();
  }

  /** An empty state with the library loaded and an epoch (what the loader and the first agent do), a new fleet. */
  async reset(): Promise<void> {
    if (this.down) await this.startRedis();
    await this.admin.flushall('SYNC');
    this.f.forget();
    await this.ready();
    this.currentFleet = new Fleet(this.redis.port, this.credentials);
  }

  /** The loader's FUNCTION LOAD and the first agent's recovery (begin, done): admissions may start. */
  async ready(): Promise<void> {
    await loadLibrary(this.admin);
    await this.f.start();
  }

  /** A harness worker of proxy `spec.proxy`, whose healthy hosts Redis knows (`spec.pods`). */
  async worker(overrides: Partial<Settings> = {}, spec: WorkerSpec = {}): Promise<Worker> {
    const proxy = spec.proxy ?? PROXY;
    if (spec.pods !== null) await this.f.reach(proxy, spec.pods ?? PODS);
    return this.fleet.worker(overrides, { podName: proxy, script: spec.script, settings: spec.settings, env: spec.env });
  }

  /** Redis killed and started again on its port, empty: no library, no epoch, no hosts (as after a crash without persistence). */
  async restartRedis(): Promise<void> {
    this.disconnect();
    await this.redis.restart();
    await this.connect();
    this.f.forget();
  }

  /** Redis stopped (the workers' connections fail); `startRedis()` brings it back empty. */
  async stopRedis(): Promise<void> {
    this.disconnect();
    this.down = true;
    await this.redis.stop(true);
  }

  async startRedis(): Promise<void> {
    this.down = false;
    await this.redis.restart();
    await this.connect();
    this.f.forget();
  }

  async stop(): Promise<void> {
    await this.currentFleet?.closeAll();
    this.disconnect();
    await this.server?.stop();
  }

  /**
   * The agent's snapshot step (lua/cli/agent.lua `snapshot`): one ws_snapshot as the proxy
   * user, its reply made a snapshot and written with snapshot_file.lua to the fleet's
   * WS_STATE_DIR, where metrics.lua reads it.
   */
  async agentSnapshot(overrides: Partial<Settings> = {}): Promise<void> {
    const luaDir = makeLuaDir({ ...defaultSettings(this.redis.port, { ...this.credentials, ...overrides }) });
    await luaAsync(
      `local loader = require("settings_loader")
local S = assert(loader.load(${luaString(luaDir + '/settings.lua')}))
local resp, snapshot_file, runtime = require("resp"), require("snapshot_file"), require("runtime")
local call = require("admission").new(S).snapshot()
local r = assert(resp.new(loader.redis_options(S)):fcall(call.fn, call.keys, call.args))
assert(not resp.is_error(r), tostring(r))
local snap = { redis_up = true, window_used = tonumber(r[2]) or 0, stats = {}, pods = {}, proxies = {}, gauges = {} }
local st, pc, xc, g = r[3], r[4], r[5], r[6]
for i = 1, #st, 2 do snap.stats[st[i]] = tonumber(st[i + 1]) end
for i = 1, #pc, 2 do snap.pods[#snap.pods + 1] = { pc[i], tonumber(pc[i + 1]) } end
for i = 1, #xc, 2 do snap.proxies[#snap.proxies + 1] = { xc[i], tonumber(xc[i + 1]) } end
for i = 1, #g, 2 do snap.gauges[g[i]] = tonumber(g[i + 1]) end
assert(snapshot_file.write(runtime.path("snapshot"), snapshot_file.format(snap, runtime.now_ms())))`,
      { env: { WS_STATE_DIR: this.fleet.stateDir } },
    );
  }

  /** Live leases (expiry in the future) as `{id, pod}`, oldest expiry first. */
  async leases(): Promise<Array<{ id: string; pod: string }>> {
    const now = await this.f.nowMs();
    return (await this.admin.zrangebyscore(this.f.keys.leases, `(${now}`, '+inf')).map((m) => ({
      id: m.slice(0, m.indexOf(' ')),
      pod: m.slice(m.indexOf(' ') + 1),
    }));
  }

  /** Live leases per pod. */
  async perPod(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const l of await this.leases()) out[l.pod] = (out[l.pod] ?? 0) + 1;
    return out;
  }

  /** The counters of the stats hash (lua/redis/README.md "Stats hash fields"), absent = not there. */
  async stats(): Promise<Record<string, number>> {
    const h = await this.admin.hgetall(this.f.keys.stats);
    const counters = Object.entries(h).filter(([k]) => !k.includes(':') && k !== 'epoch' && k !== 'recovering_until');
    return Object.fromEntries(counters.map(([k, v]) => [k, Number(v)]));
  }

  /** Calls of one command so far (INFO commandstats), e.g. `fcall`. */
  async calls(cmd: string): Promise<number> {
    const m = new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(await this.admin.info('commandstats'));
    return m ? Number(m[1]) : 0;
  }
}

/** An AdmissionRig for one test file: started before all, reset before each test, stopped after all. */
export function useAdmissionRig(opts: { monitor?: boolean } = {}): AdmissionRig {
  const rig = new AdmissionRig(opts);
  beforeAll(() => rig.start(), 30000);
  afterAll(() => rig.stop());
  beforeEach(() => rig.reset());
  afterEach(() => rig.fleet.closeAll());
  return rig;
}
