import { execFileSync, spawn, ChildProcessWithoutNullStreams } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { DEFAULT_LUA_DIRS, collectLuaFiles } from '../../../constructs/filter-config';
import { LocalReplyFlag, backendAnswer, envoyLocalReply } from './router';

/** Repository root (this file is __tests__/filter/harness/worker.ts). */
export const ROOT = path.resolve(__dirname, '..', '..', '..');
const DRIVER = path.join(__dirname, 'driver.lua');

/** The fields of the generated settings.lua (docs/internals.md, "settings.lua"; config/settings.ts). */
export interface Settings {
  backend_cluster: string;
  admin_cluster: string;
  capacity_cache_ms: number;
  rate_limit: number;
  rate_window_ms: number;
  max_connections_per_pod: number;
  lease_ttl_ms: number;
  renew_interval_ms: number;
  penalty_ms: number;
  metrics_snapshot_ms: number;
  redis_host: string;
  redis_port: number;
  redis_password_file: string;
  redis_username: string;
  redis_tls: boolean;
  redis_connect_timeout_ms: number;
  redis_read_timeout_ms: number;
  failure_mode: 'open' | 'closed';
  hash_tag: string;
  limit_all_requests: boolean;
  connection_inventory: boolean;
  metrics_path: string;
  client_identity: 'address' | 'header';
  client_header: string;
  client_ipv6_prefix_bits: number;
  max_connections_per_client: number;
  max_connections_per_client_percent: number;
  rate_limit_per_client: number;
}

export function defaultSettings(redisPort: number, overrides: Partial<Settings> = {}): Settings {
  return {
    backend_cluster: 'backend',
    admin_cluster: 'envoy_admin',
    // Off unless a test is about it: most tests free a slot through another worker and
    // expect the next upgrade to see it at once (the stack's default is 250).
    capacity_cache_ms: 0,
    rate_limit: 0,
    rate_window_ms: 60000,
    max_connections_per_pod: 2,
    lease_ttl_ms: 30000,
    renew_interval_ms: 500,
    penalty_ms: 15000,
    metrics_snapshot_ms: 5000,
    redis_host: '127.0.0.1',
    redis_port: redisPort,
    redis_password_file: '',
    redis_username: '',
    redis_tls: false,
    redis_connect_timeout_ms: 200,
    redis_read_timeout_ms: 200,
    failure_mode: 'open',
    hash_tag: 'ws',
    limit_all_requests: false,
    connection_inventory: false,
    metrics_path: '/metrics',
    client_identity: 'address',
    client_header: '',
    client_ipv6_prefix_bits: 64,
    // Off unless a test is about them (the stack's defaults: 50% of the slots, 20 a minute).
    max_connections_per_client: 0,
    max_connections_per_client_percent: 0,
    rate_limit_per_client: 0,
    ...overrides,
  };
}

/** A Lua literal for a JS value (strings byte-escaped, so any input stays on one line). */
export function toLua(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`cannot encode ${v}`);
    return String(v);
  }
  if (typeof v === 'string') {
    let out = '"';
    for (const b of Buffer.from(v, 'utf8')) {
      if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) out += String.fromCharCode(b);
      else out += '\\' + String(b).padStart(3, '0');
    }
    return out + '"';
  }
  if (Array.isArray(v)) return '{' + v.map(toLua).join(',') + '}';
  if (typeof v === 'object') {
    return (
      '{' +
      Object.entries(v as Record<string, unknown>)
        .filter(([, x]) => x !== undefined)
        .map(([k, x]) => `[${toLua(k)}]=${toLua(x)}`)
        .join(',') +
      '}'
    );
  }
  throw new Error(`cannot encode ${typeof v}`);
}

/** settings.lua text for a settings object, or for any raw table (bad-config tests). */
export function settingsLua(s: Record<string, unknown>): string {
  const lines = Object.entries(s).map(([k, v]) => `  ${k} = ${toLua(v)},`);
  return `-- generated for a test\nreturn {\n${lines.join('\n')}\n}\n`;
}

/**
 * A directory laid out like /etc/envoy/lua in the container: the files the stack ships
 * in the Envoy pod's ConfigMap (constructs/filter-config.ts: lua/envoy, lua/agent and
 * lua/cli by base name, a duplicate refused), plus settings.lua.
 */
export function makeLuaDir(settings: Record<string, unknown> | string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-lua-'));
  for (const f of collectLuaFiles(DEFAULT_LUA_DIRS)) fs.writeFileSync(path.join(dir, f.name), f.content);
  fs.writeFileSync(path.join(dir, 'settings.lua'), typeof settings === 'string' ? settings : settingsLua(settings));
  return dir;
}

/**
 * Throws unless lua/envoy/settings_loader.lua accepts the directory's settings.lua: a
 * test that means to admit must not pass because a refused file made the filter fail open.
 */
export function checkSettings(luaDir: string): void {
  const code = `package.path = ${JSON.stringify(luaDir + '/?.lua;')} .. package.path
local S, errs = require("settings_loader").load(${JSON.stringify(luaDir + '/settings.lua')})
if not S then io.write(table.concat(errs, "; ")) end`;
  const problems = execFileSync('luajit', ['-e', code], { encoding: 'utf8' });
  if (problems !== '') throw new Error(`the test's settings.lua is refused by the filter: ${problems}`);
}

export function makeStateDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'ws-state-'));
}

export type HeaderList = Array<[string, string]>;

/** The filter's dynamic metadata (lua/envoy/filter.lua NS), as the lease log reads it. */
export interface AdmissionMetadata {
  connection_id?: string;
  pod?: string;
  kind?: string;
  registered?: string;
  lease?: string;
}

export interface SideResult {
  state: 'new' | 'waiting_body' | 'waiting_http' | 'running' | 'done' | 'responded' | 'error' | 'reset' | 'absent';
  /** The headers were passed on to the next filter (router / downstream), per Envoy's rules. */
  passed?: boolean;
  error?: string;
  headers: HeaderList;
  override?: { host: string; strict: boolean };
  metadata?: Record<string, Record<string, unknown>>;
  reply?: { headers: Record<string, string>; body?: string };
}

/** The filter's metadata of a stream ({} when it set none). */
export function admission(r: SideResult): AdmissionMetadata {
  const md: AdmissionMetadata = r.metadata?.['ws.admission'] ?? {};
  return md;
}

export interface LogLine {
  level: string;
  msg: string;
}

export const UPGRADE: HeaderList = [
  [':method', 'GET'],
  [':path', '/ws'],
  [':authority', 'example.test'],
  [':scheme', 'http'],
  ['connection', 'Upgrade'],
  ['upgrade', 'websocket'],
  ['sec-websocket-version', '13'],
  ['sec-websocket-key', 'dGhlIHNhbXBsZSBub25jZQ=='],
];

export const PLAIN: HeaderList = [
  [':method', 'GET'],
  [':path', '/'],
  [':authority', 'example.test'],
  [':scheme', 'http'],
];

export interface WorkerOptions {
  readonly luaDir: string;
  readonly stateDir: string;
  /** POD_NAME: the proxy id of the worker's connection ids. */
  readonly podName?: string;
  readonly script?: 'filter.lua' | 'metrics.lua';
  readonly env?: Record<string, string>;
}

/** One Envoy worker: a luajit process running the harness driver with one script. */
export class Worker {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly lines: readline.Interface;
  private readonly waiting: Array<(line: string) => void> = [];
  private readonly buffered: string[] = [];
  private seq = 0;
  stderr = '';
  exited = false;
  /** stdout has ended: no more lines will come. */
  private drained = false;

  private constructor(proc: ChildProcessWithoutNullStreams) {
    this.proc = proc;
    this.lines = readline.createInterface({ input: proc.stdout });
    this.lines.on('line', (l) => {
      const w = this.waiting.shift();
      if (w) w(l);
      else this.buffered.push(l);
    });
    proc.stderr.on('data', (d) => {
      this.stderr += d.toString();
    });
    proc.on('exit', () => {
      this.exited = true;
    });
    // Waiters are failed only once stdout is drained: 'exit' can fire before the
    // last lines the driver wrote have been read.
    this.lines.on('close', () => {
      this.drained = true;
      for (const w of this.waiting.splice(0)) w(JSON.stringify({ error: `worker exited: ${this.stderr}` }));
    });
  }

  static async start(opts: WorkerOptions): Promise<Worker> {
    const script = path.join(opts.luaDir, opts.script ?? 'filter.lua');
    const proc = spawn('luajit', [DRIVER, script], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        WS_LUA_DIR: opts.luaDir,
        WS_STATE_DIR: opts.stateDir,
        POD_NAME: opts.podName ?? 'envoy-test-0',
        HARNESS_VERBOSE: process.env.HARNESS_VERBOSE ?? '',
        ...opts.env,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const w = new Worker(proc);
    const ready = JSON.parse(await w.nextLine());
    if (!ready.ready) throw new Error(`driver did not start: ${JSON.stringify(ready)} ${w.stderr}`);
    return w;
  }

  private nextLine(): Promise<string> {
    const b = this.buffered.shift();
    if (b !== undefined) return Promise.resolve(b);
    if (this.drained) return Promise.resolve(JSON.stringify({ error: `worker exited: ${this.stderr}` }));
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Sends one command; commands are answered in order. */
  async send<T = any>(cmd: Record<string, unknown>): Promise<T> {
    if (this.exited) throw new Error(`worker exited: ${this.stderr}`);
    this.proc.stdin.write(toLua(cmd) + '\n');
    const r = JSON.parse(await this.nextLine());
    if (r && r.error && typeof r.error === 'string' && Object.keys(r).length === 1) {
      throw new Error(`driver: ${r.error}`);
    }
    return r as T;
  }

  /** The fake admin of this worker: what its /ready reports (LIVE, DRAINING, ...), or unreachable. */
  admin(state = 'LIVE', down = false) {
    return this.send({ op: 'admin', name: 'envoy_admin', state, down });
  }

  newSid(): string {
    this.seq += 1;
    return `s${this.seq}`;
  }

  request(headers: HeaderList, sid = this.newSid(), remote?: string): Promise<SideResult & { sid: string }> {
    return this.send<SideResult>({ op: 'request', sid, headers, remote }).then((r) => ({ ...r, sid }));
  }

  /** A request whose httpCall() stays pending (other streams run meanwhile) until httpComplete(). */
  requestDeferred(headers: HeaderList, sid = this.newSid()): Promise<SideResult & { sid: string }> {
    return this.send<SideResult>({ op: 'request', sid, headers, defer_http: true }).then((r) => ({ ...r, sid }));
  }

  httpComplete(sid: string): Promise<SideResult> {
    return this.send({ op: 'http_complete', sid });
  }

  /** The backend's answer, through the route and the router (router.ts, driver.lua ops.response). */
  response(sid: string, status: string, extra: HeaderList = []): Promise<SideResult> {
    return this.send({ op: 'response', sid, headers: backendAnswer([[':status', status], ...extra]) });
  }

  /**
   * Envoy's router answering itself, no backend reached: `UH` when the strictly pinned
   * host is no longer in the cluster (503 "no healthy upstream"), `UF` when the
   * connection to it failed -- with the headers the stack's local reply config adds.
   */
  localReply(sid: string, flag: LocalReplyFlag = 'UH'): Promise<SideResult> {
    return this.send({ op: 'local_reply', sid, headers: envoyLocalReply(flag) });
  }

  /** One body chunk: `bytes` filler bytes, or exactly these bytes. */
  data(sid: string, dir: 'request' | 'response', bytes: number | Buffer = 32): Promise<SideResult> {
    return typeof bytes === 'number'
      ? this.send({ op: 'data', sid, dir, bytes })
      : this.send({ op: 'data', sid, dir, hex: bytes.toString('hex') });
  }

  /**
   * The normal end of a stream in that direction. Refused by the driver for an upgraded
   * HTTP/1.1 stream, which Envoy never ends normally: use closeHandshake() and reset().
   */
  end(sid: string, dir: 'request' | 'response'): Promise<SideResult> {
    return this.send({ op: 'end', sid, dir });
  }

  /**
   * How a WebSocket ends through Envoy: a Close frame each way (the client's masked,
   * RFC 6455 5.3), started by `first`; then, as recorded in real Envoy
   * (__tests__/e2e/envoy-api.test.ts), an empty response chunk when the backend closes
   * its TCP connection, and the reset that ends the stream.
   */
  async closeHandshake(sid: string, first: 'client' | 'server' = 'client'): Promise<void> {
    const client = Buffer.from([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2]); // Close 1000, masked
    const server = Buffer.from([0x88, 0x02, 0x03, 0xe8]);
    if (first === 'client') {
      await this.data(sid, 'request', client);
      await this.data(sid, 'response', server);
    } else {
      await this.data(sid, 'response', server);
      await this.data(sid, 'request', client);
    }
    await this.data(sid, 'response', Buffer.alloc(0));
    await this.reset(sid);
  }

  reset(sid: string) {
    return this.send({ op: 'reset', sid });
  }

  /**
   * The worker's clock (lua/envoy/runtime.lua): `at` drives it from that time (ms) on,
   * `advance` moves a driven clock on, neither gives the wall clock back. Its caches and
   * timers follow it; Redis TIME and socket timeouts keep real time.
   */
  async clock(o: { at?: number; advance?: number } = {}): Promise<number> {
    const r = await this.send<{ now: number }>({ op: 'clock', ...o });
    return r.now;
  }

  async logs(): Promise<{ logs: LogLine[]; admin_calls: number; admin_paths: Record<string, number> }> {
    return this.send({ op: 'logs' });
  }

  /**
   * A kubelet probe (or NLB health check) on the metrics listener, as kube-probe sends
   * it: `GET /ready` (readiness) or `/live` (liveness). Run on a worker started with
   * script 'metrics.lua'.
   */
  probe(pathName = '/ready', method = 'GET'): Promise<SideResult & { sid: string }> {
    return this.request([
      [':method', method],
      [':path', pathName],
      [':authority', '10.1.0.5:9901'],
      [':scheme', 'http'],
      ['user-agent', 'kube-probe/1.31'],
      ['accept', '*/*'],
      ['connection', 'close'],
    ]);
  }

  /** SIGKILL (a crashed proxy) or a clean exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.exited) return;
    await new Promise<void>((resolve) => {
      this.proc.once('exit', () => resolve());
      this.proc.kill(signal);
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    this.proc.stdin.end();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.proc.kill('SIGKILL');
      }, 2000);
      this.proc.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An upgrade answered 101 when admitted. Returns the stream id, the pinned pod (if any) and the request's result. */
export async function openSocket(w: Worker, headers: HeaderList = UPGRADE): Promise<{ sid: string; pod?: string; req: SideResult }> {
  const req = await w.request(headers);
  if (req.state === 'responded') return { sid: req.sid, req };
  await w.response(req.sid, '101');
  return { sid: req.sid, pod: req.override?.host, req };
}

/** Starts workers for one test file and stops them all at the end. */
export class Fleet {
  private readonly workers: Worker[] = [];
  readonly stateDir = makeStateDir();

  /** base: settings every worker gets (e.g. the Redis user and password file). */
  constructor(
    private readonly redisPort: number,
    private readonly base: Partial<Settings> = {},
  ) {}

  async worker(
    overrides: Partial<Settings> = {},
    opts: {
      podName?: string;
      script?: 'filter.lua' | 'metrics.lua';
      settings?: Record<string, unknown> | string;
      env?: Record<string, string>;
    } = {},
  ): Promise<Worker> {
    const luaDir = makeLuaDir(opts.settings ?? { ...defaultSettings(this.redisPort, { ...this.base, ...overrides }) });
    if (!opts.settings) checkSettings(luaDir);
    const w = await Worker.start({ luaDir, stateDir: this.stateDir, podName: opts.podName, script: opts.script, env: opts.env });
    this.workers.push(w);
    return w;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.workers.splice(0).map((w) => w.close()));
  }
}
