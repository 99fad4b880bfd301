/**
 * The data plane on one machine, no Docker, no Kubernetes (`npm run local`, and the
 * end-to-end tests): a password-protected redis-server with the ws_admission library
 * loaded by its administrator, N real Envoy processes, each with its agent
 * (lua/cli/agent.lua, the pod's sidecar), and one process of M WebSocket echo backends on
 * distinct loopback addresses.
 *
 * Every proxy runs the stack's own generated config (envoy/bootstrap.ts and
 * config/settings.ts, the same Lua files the ConfigMap ships); what differs from a pod
 * is only `localLayout` and `localRedis` below: addresses, ports, paths and the proxy
 * name.
 *
 * Ports, from `basePort` B: Redis B, backend control B+1, backends B+2 (on 127.0.1.1,
 * 127.0.1.2, ...), the Redis fault proxy B+3 (only with `redisFaults`), proxy i: public
 * B+10+3i, metrics B+11+3i, admin B+12+3i.
 */
import { ChildProcess, ChildProcessByStdio, spawn } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import type { Readable } from 'stream';
import { LuaScalar, luaReturnTable } from '../../config/lua';
import { StackConfig } from '../../config/schema';
import { filterSettings, RedisEndpoint } from '../../config/settings';
import { DEFAULT_LUA_DIRS, collectLuaFiles } from '../../constructs/filter-config';
import { REDIS_ADMIN_USER, REDIS_PROXY_USER, readFunctionLibrary, redisConf } from '../../constructs/redis';
import { buildEnvoyBootstrap, EnvoyLayout, READY_PATH, envoyArgs } from '../../envoy/bootstrap';
import { bootstrapToYaml } from '../../envoy/yaml';
import { BackendCounts, EchoBackends, backendAddress } from './echo';
import { FaultProxy } from './fault-proxy';
import { DEBIAN_LUA_ENV, REPO_ROOT, envoyBinary } from './envoy-bin';

export const DEFAULT_BASE_PORT = 10000;
const LOOPBACK = '127.0.0.1';

export interface LocalRigOptions {
  /** Limits and timeouts: the usual configuration (loadConfig()). */
  readonly config: StackConfig;
  /** @default 2 */
  readonly proxies?: number;
  /** @default 3 */
  readonly backends?: number;
  /** @default DEFAULT_BASE_PORT */
  readonly basePort?: number;
  /** Worker threads per Envoy. @default 1 */
  readonly concurrency?: number;
  /**
   * settings.lua fields set after the config's (tests: a short rate window).
   * @default - none
   */
  readonly settingsOverrides?: { readonly [field: string]: LuaScalar };
  /**
   * Rotate the lease log past this many bytes (the agent's WS_LEASE_LOG_ROTATE_BYTES).
   * @default - the agent's own (1 MiB)
   */
  readonly leaseLogRotateBytes?: number;
  /**
   * Put a fault proxy (tools/rig/fault-proxy.ts) between the proxies and Redis, so a
   * test can make Redis slow or silent (`rig.redisFaults`).
   * @default false
   */
  readonly redisFaults?: boolean;
  /** Keep the working directory (logs, configs) after stop. @default false */
  readonly keepFiles?: boolean;
  /**
   * Where the echo backends run: a child process (tools/rig/echo-backend.js, compiled by
   * `npm run local`), or inside this process (tests: no compiled JavaScript needed).
   * @default 'child'
   */
  readonly backendsIn?: 'child' | 'inline';
}

export interface LocalProxy {
  readonly name: string;
  readonly publicPort: number;
  readonly metricsPort: number;
  readonly adminPort: number;
  readonly publicUrl: string;
  readonly metricsUrl: string;
  readonly stateDir: string;
  readonly logFile: string;
  envoy: ChildProcess | undefined;
  agent: ChildProcess | undefined;
}

/** Only these differ from a pod's layout (envoy/bootstrap.ts POD_LAYOUT). */
export function localLayout(basePort: number, index: number, workDir: string): EnvoyLayout {
  return {
    listenAddress: LOOPBACK,
    publicPort: basePort + 10 + 3 * index,
    metricsPort: basePort + 11 + 3 * index,
    adminPort: basePort + 12 + 3 * index,
    luaDir: path.join(workDir, 'lua'),
    stateDir: path.join(workDir, `state-${proxyName(index)}`),
  };
}

/**
 * The rig's Redis as the filter sees it (the pod's is the in-cluster Service): Redis
 * itself, or the fault proxy in front of it.
 */
export function localRedis(basePort: number, workDir: string, viaFaultProxy = false): RedisEndpoint {
  return {
    host: LOOPBACK,
    port: viaFaultProxy ? basePort + 3 : basePort,
    tls: false,
    auth: true,
    passwordFile: path.join(workDir, 'redis-password'),
    username: REDIS_PROXY_USER,
  };
}

export function proxyName(index: number): string {
  return `envoy-${index}`;
}

/** The rig's files: one Lua dir with settings.lua, one envoy.yaml per proxy. */
export function renderLocalFiles(o: LocalRigOptions, workDir: string): { lua: Map<string, string>; envoyYaml: string[] } {
  const base = o.basePort ?? DEFAULT_BASE_PORT;
  const backends = o.backends ?? 3;
  const lua = new Map<string, string>();
  for (const f of collectLuaFiles(DEFAULT_LUA_DIRS)) lua.set(f.name, f.content);
  const overrides = o.settingsOverrides ?? {};
  const fields = filterSettings(o.config, localRedis(base, workDir, o.redisFaults === true));
  for (const k of Object.keys(overrides)) {
    if (!fields.some(([f]) => f === k)) throw new Error(`settingsOverrides: ${k} is not a settings.lua field`);
  }
  lua.set(
    'settings.lua',
    luaReturnTable(
      fields.map(([k, v]) => [k, k in overrides ? overrides[k] : v] as const),
      'Generated by the local rig (tools/rig/rig.ts).',
    ),
  );
  const hosts = Array.from({ length: backends }, (_, i) => backendAddress(i));
  const envoyYaml = Array.from({ length: o.proxies ?? 2 }, (_, i) =>
    bootstrapToYaml(
      buildEnvoyBootstrap({
        backendHost: hosts,
        backendPort: base + 2,
        healthCheckPath: o.config.backendHealthCheckPath,
        idleTimeoutSeconds: o.config.idleTimeoutSeconds,
        maxStreamDurationSeconds: o.config.maxStreamDurationSeconds,
        renewIntervalSeconds: o.config.renewIntervalSeconds,
        handshakeTimeoutSeconds: o.config.handshakeTimeoutSeconds,
        trustedHops: o.config.clientTrustedHops,
        // As behind the NLB (optional: the rig's clients connect without it).
        proxyProtocol: o.config.nlbProxyProtocol,
        maxDownstreamConnections: o.config.envoyMaxConnections,
        layout: localLayout(base, i, workDir),
      }),
    ),
  );
  return { lua, envoyYaml };
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

function needBinary(cmd: string, pkg: string): string {
  const p = which(cmd);
  if (!p) throw new Error(`${cmd} not found on PATH; install it (apt-get install ${pkg}) or run \`bash .ci/run\` once`);
  return p;
}

function portFree(port: number, host: string, range: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `port ${host}:${port} is taken (${err.code}); stop what uses it, or move the rig with --base-port (it uses ports ${range})`,
        ),
      ),
    );
    s.listen(port, host, () => s.close(() => resolve()));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function httpGet(url: string, timeoutMs = 1000): Promise<{ status: number; body: string }> {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await fetch(url, { signal: ctl.signal });
    return { status: r.status, body: await r.text() };
  } finally {
    clearTimeout(t);
  }
}

function tail(file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export class LocalRig {
  readonly basePort: number;
  readonly workDir: string;
  readonly proxies: LocalProxy[] = [];
  readonly backendIds: string[];
  /** The proxies' password (ACL user ws-proxy); the rig's own calls use the admin user. */
  readonly redisPassword: string;
  private readonly redisAdminPassword: string;
  readonly backendControl: string;
  /** Between the proxies and Redis, with `redisFaults`. */
  redisFaults: FaultProxy | undefined;
  private redis: ChildProcess | undefined;
  private backend: ChildProcess | undefined;
  private inline: EchoBackends | undefined;
  private luajit = '';
  private envoy = '';
  private stopped = false;
  private readonly children = new Set<ChildProcess>();

  private constructor(
    readonly options: LocalRigOptions,
    workDir: string,
  ) {
    this.basePort = options.basePort ?? DEFAULT_BASE_PORT;
    this.workDir = workDir;
    // Alphanumeric, as the stack's generated passwords (redisConf).
    this.redisPassword = randomBytes(18).toString('hex');
    this.redisAdminPassword = randomBytes(18).toString('hex');
    this.backendIds = Array.from({ length: options.backends ?? 3 }, (_, i) => `${backendAddress(i)}:${this.basePort + 2}`);
    this.backendControl = `http://${LOOPBACK}:${this.basePort + 1}`;
  }

  /** Starts everything; on any failure stops what it started and rejects with one line. */
  static async start(options: LocalRigOptions): Promise<LocalRig> {
    const proxies = options.proxies ?? 2;
    const backends = options.backends ?? 3;
    for (const [name, v, max] of [
      ['proxies', proxies, 50],
      ['backends', backends, 1000],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 1 || v > max) throw new Error(`--${name} must be an integer from 1 to ${max}, got ${v}`);
    }
    const envoy = envoyBinary();
    const redisServer = needBinary('redis-server', 'redis-server');
    const luajit = needBinary('luajit', 'luajit lua-socket');
    const base = options.basePort ?? DEFAULT_BASE_PORT;
    if (!Number.isSafeInteger(base) || base < 1024 || base + 12 + 3 * proxies > 65535) {
      throw new Error(`--base-port must be an integer from 1024 to ${65535 - 12 - 3 * proxies}, got ${base}`);
    }
    const range = `${base}-${localLayout(base, proxies - 1, '/').adminPort}`;
    await portFree(base, LOOPBACK, range);
    await portFree(base + 1, LOOPBACK, range);
    if (options.redisFaults) await portFree(base + 3, LOOPBACK, range);
    for (let i = 0; i < backends; i++) await portFree(base + 2, backendAddress(i), range);
    for (let i = 0; i < proxies; i++) {
      const l = localLayout(base, i, '/');
      for (const p of [l.publicPort, l.metricsPort, l.adminPort]) await portFree(p, LOOPBACK, range);
    }
    const rig = new LocalRig(options, fs.mkdtempSync(path.join(os.tmpdir(), 'ws-local-')));
    try {
      await rig.boot(envoy, redisServer, luajit);
      return rig;
    } catch (err) {
      await rig.stop();
      throw err;
    }
  }

  private spawnLogged(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const log = fs.openSync(path.join(this.workDir, `${name}.log`), 'a');
    const child = spawn(cmd, args, { env, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    // A failed spawn is reported by waitFor (the child never gets ready), not a crash.
    child.on('error', (err) => fs.appendFileSync(path.join(this.workDir, `${name}.log`), `spawn ${cmd}: ${err.message}\n`));
    return child;
  }

  private proxyEnv(p: LocalProxy): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...DEBIAN_LUA_ENV,
      POD_NAME: p.name,
      WS_LUA_DIR: path.join(this.workDir, 'lua'),
      WS_STATE_DIR: p.stateDir,
    };
  }

  private async boot(envoy: string, redisServer: string, luajit: string): Promise<void> {
    const o = this.options;
    const files = renderLocalFiles(o, this.workDir);
    const luaDir = path.join(this.workDir, 'lua');
    fs.mkdirSync(luaDir);
    for (const [name, text] of files.lua) fs.writeFileSync(path.join(luaDir, name), text);
    fs.writeFileSync(localRedis(this.basePort, this.workDir).passwordFile!, this.redisPassword, { mode: 0o600 });

    await this.startRedis(redisServer);
    if (o.redisFaults) this.redisFaults = await FaultProxy.start(LOOPBACK, this.basePort + 3, LOOPBACK, this.basePort);

    if (o.backendsIn === 'inline') {
      this.inline = await EchoBackends.start(
        this.backendIds.map((id) => id.replace(/:\d+$/, '')),
        this.basePort + 2,
      );
    } else {
      this.backend = this.spawnLogged(
        'backends',
        process.execPath,
        [
          path.join(REPO_ROOT, 'tools', 'rig', 'echo-backend.js'),
          '--port',
          String(this.basePort + 2),
          '--backends',
          String(this.backendIds.length),
          '--control-port',
          String(this.basePort + 1),
        ],
        process.env,
      );
      await this.waitFor('backends', async () => (await httpGet(`${this.backendControl}/counts`)).status === 200, 20000, this.backend);
    }

    files.envoyYaml.forEach((yaml, i) => {
      const l = localLayout(this.basePort, i, this.workDir);
      fs.mkdirSync(l.stateDir);
      const configFile = path.join(this.workDir, `${proxyName(i)}.yaml`);
      fs.writeFileSync(configFile, yaml);
      this.proxies.push({
        name: proxyName(i),
        publicPort: l.publicPort,
        metricsPort: l.metricsPort,
        adminPort: l.adminPort,
        publicUrl: `ws://${LOOPBACK}:${l.publicPort}/`,
        metricsUrl: `http://${LOOPBACK}:${l.metricsPort}/metrics`,
        stateDir: l.stateDir,
        logFile: path.join(this.workDir, `${proxyName(i)}.log`),
        envoy: undefined,
        agent: undefined,
      });
    });
    this.luajit = luajit;
    this.envoy = envoy;
    for (let i = 0; i < this.proxies.length; i++) this.startProxy(i);
    for (const p of this.proxies) {
      await this.waitFor(p.name, async () => this.hostsReady(p), 30000, p.envoy);
    }
  }

  /** Starts (again) proxy i: its Envoy and its agent. */
  startProxy(i: number): void {
    const p = this.proxies[i];
    const env = this.proxyEnv(p);
    p.envoy = this.spawnLogged(
      p.name,
      this.envoy,
      envoyArgs(path.join(this.workDir, `${p.name}.yaml`), this.options.concurrency ?? 1),
      env,
    );
    p.agent = this.spawnAgent(p);
  }

  private spawnAgent(p: LocalProxy): ChildProcess {
    return this.spawnLogged(`${p.name}-agent`, this.luajit, [path.join(this.workDir, 'lua', 'agent.lua')], {
      ...this.proxyEnv(p),
      WS_ENVOY_ADMIN: `${LOOPBACK}:${p.adminPort}`,
      ...(this.options.leaseLogRotateBytes ? { WS_LEASE_LOG_ROTATE_BYTES: String(this.options.leaseLogRotateBytes) } : {}),
    });
  }

  /** Waits until proxy i answers /ready and its agent registered every backend as healthy. */
  async waitProxyReady(i: number, timeoutMs = 30000): Promise<void> {
    const p = this.proxies[i];
    await this.waitFor(p.name, async () => this.hostsReady(p), timeoutMs, p.envoy);
  }

  /** The number of healthy hosts Redis holds for a proxy (its agent's registration), or 0. */
  async registeredHosts(name: string): Promise<number> {
    const tag = `{${this.options.config.hashTag}}`;
    const slot = (await this.redisCli('HGET', `${tag}:agents`, `p:${name}`)).trim();
    if (!/^\d+$/.test(slot)) return 0;
    return Number((await this.redisCli('HGET', `${tag}:agents`, `n:${slot}`)).trim()) || 0;
  }

  /** True while Redis admits nothing: no epoch yet, or a recovery under way (lua/redis/README.md). */
  async recovering(): Promise<boolean> {
    const tag = `{${this.options.config.hashTag}}`;
    const [epoch, until] = (await this.redisCli('HMGET', `${tag}:stats`, 'epoch', 'recovering_until')).split('\n');
    return epoch.trim() === '' || (until.trim() !== '' && Number(until) > Date.now());
  }

  private async hostsReady(p: LocalProxy): Promise<boolean> {
    const r = await httpGet(`http://${LOOPBACK}:${p.metricsPort}${READY_PATH}`);
    return r.status === 200 && (await this.registeredHosts(p.name)) === this.backendIds.length && !(await this.recovering());
  }

  private async startRedis(redisServer: string): Promise<void> {
    const conf = path.join(this.workDir, 'redis.conf');
    // The stack's own redis.conf (ACL users included), on loopback; passwords in a file of
    // the rig, never on a command line.
    fs.writeFileSync(
      conf,
      redisConf({
        port: this.basePort,
        bind: LOOPBACK,
        maxMemory: '192mb',
        dir: this.workDir,
        hashTag: this.options.config.hashTag,
        proxyPassword: this.redisPassword,
        adminPassword: this.redisAdminPassword,
      }),
      { mode: 0o600 },
    );
    this.redis = this.spawnLogged('redis', redisServer, [conf], process.env);
    await this.waitFor('redis', async () => (await this.redisCli('PING')).trim() === 'PONG', 10000, this.redis);
    // What the Redis pod's loader does (constructs/redis.ts): the administrator loads the
    // library; the proxies' user can only call it.
    const loaded = (await this.redisCli('FUNCTION', 'LOAD', 'REPLACE', readFunctionLibrary())).trim();
    if (loaded !== 'ws_admission') throw new Error(`FUNCTION LOAD of the ws_admission library failed: ${loaded}`);
  }

  /** redis-cli as the admin user, password through the environment, output piped. */
  private spawnRedisCli(args: string[]): ChildProcessByStdio<null, Readable, Readable> {
    return spawn('redis-cli', ['-h', LOOPBACK, '-p', String(this.basePort), '--user', REDIS_ADMIN_USER, '--no-auth-warning', ...args], {
      env: { ...process.env, REDISCLI_AUTH: this.redisAdminPassword },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** Runs one Redis command (redis-cli, password through the environment). */
  async redisCli(...args: string[]): Promise<string> {
    return new Promise((resolve) => {
      const c = this.spawnRedisCli(args);
      let out = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (out += d));
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      c.on('close', () => {
        clearTimeout(t);
        resolve(out);
      });
      c.on('error', () => resolve(''));
    });
  }

  /**
   * A redis-cli that keeps running (`MONITOR`), as the admin user, its output piped to the
   * caller, who stops it by its pid; stop() stops it at the latest.
   */
  redisCliStream(...args: string[]): ChildProcessByStdio<null, Readable, Readable> {
    const c = this.spawnRedisCli(args);
    this.children.add(c);
    c.on('exit', () => this.children.delete(c));
    c.on('error', () => undefined); // no redis-cli: its stream ends at once, which the caller sees
    return c;
  }

  /** Live leases per backend, from Redis (the key schema: {tag}:leases members "<connection id> <ip:port>"). */
  async leases(): Promise<{ [id: string]: number }> {
    const tag = `{${this.options.config.hashTag}}`;
    const out: { [id: string]: number } = Object.fromEntries(this.backendIds.map((id) => [id, 0]));
    const live = (await this.redisCli('ZRANGEBYSCORE', `${tag}:leases`, `(${Date.now()}`, '+inf')).split('\n').filter(Boolean);
    for (const m of live) {
      const pod = m.slice(m.indexOf(' ') + 1);
      if (pod in out) out[pod] += 1;
    }
    return out;
  }

  /** Stops Redis (SIGKILL: its state is gone). */
  async killRedis(): Promise<void> {
    await this.kill(this.redis, 'SIGKILL');
    this.redis = undefined;
  }

  /** Starts Redis again, empty. */
  async restartRedis(): Promise<void> {
    await this.startRedis(needBinary('redis-server', 'redis-server'));
  }

  /** Kills proxy i's agent alone (its container crashed, or hangs with SIGSTOP). */
  async killAgent(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proxies[i];
    if (signal === 'SIGSTOP') {
      p.agent?.kill('SIGSTOP');
      return;
    }
    await this.kill(p.agent, signal);
  }

  /** Starts proxy i's agent again (the kubelet restarting its container), or resumes a stopped one. */
  startAgent(i: number): void {
    const p = this.proxies[i];
    if (p.agent && p.agent.exitCode === null && p.agent.signalCode === null) {
      p.agent.kill('SIGCONT');
      return;
    }
    p.agent = this.spawnAgent(p);
  }

  /** Kills proxy i: its Envoy and its agent (a pod's containers die together). */
  async killProxy(i: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.proxies[i];
    await Promise.all([this.kill(p.envoy, signal), this.kill(p.agent, signal)]);
  }

  /** What a pod's termination does: the preStop drain (drain.lua), then SIGTERM. */
  async drainProxy(i: number): Promise<string> {
    const p = this.proxies[i];
    const out = await new Promise<string>((resolve) => {
      const c = spawn(this.luajit, [path.join(this.workDir, 'lua', 'drain.lua')], {
        env: this.proxyEnv(p),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let s = '';
      c.stdout.on('data', (d) => (s += d));
      c.stderr.on('data', (d) => (s += d));
      c.on('close', () => resolve(s.trim()));
    });
    await this.killProxy(i, 'SIGTERM');
    return out;
  }

  async backendCounts(): Promise<{ [id: string]: BackendCounts }> {
    if (this.inline) return this.inline.counts();
    return JSON.parse((await httpGet(`${this.backendControl}/counts`)).body) as { [id: string]: BackendCounts };
  }

  async backendAction(action: 'close' | 'drop' | 'kill' | 'drain' | 'revive' | 'reset-peaks', id = ''): Promise<void> {
    if (this.inline) {
      if (action === 'close') this.inline.closeAll(id);
      else if (action === 'drop') this.inline.dropAll(id);
      else if (action === 'kill') await this.inline.kill(id);
      else if (action === 'drain') this.inline.drain(id);
      else if (action === 'revive') await this.inline.revive(id);
      else this.inline.resetPeaks();
      return;
    }
    const r = await fetch(`${this.backendControl}/${action}${id ? '/' + encodeURIComponent(id) : ''}`, { method: 'POST' });
    if (r.status !== 200) throw new Error(`backend ${action} ${id}: ${r.status} ${await r.text()}`);
  }

  private async waitFor(what: string, ok: () => Promise<boolean>, timeoutMs: number, proc?: ChildProcess): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if (proc && (proc.exitCode !== null || proc.signalCode !== null)) {
        throw new Error(
          `${what} exited (${proc.exitCode ?? proc.signalCode}) while starting; its log:\n${tail(path.join(this.workDir, `${what}.log`))}`,
        );
      }
      if (await ok().catch(() => false)) return;
      await sleep(100);
    }
    throw new Error(`${what} was not ready within ${timeoutMs} ms; its log:\n${tail(path.join(this.workDir, `${what}.log`))}`);
  }

  private async kill(proc: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill(signal);
    const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(t);
  }

  /** Stops every process the rig started and removes its files (unless keepFiles). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all([...this.children].map((c) => this.kill(c, 'SIGTERM')));
    await this.inline?.stop();
    await this.redisFaults?.stop();
    if (!this.options.keepFiles) fs.rmSync(this.workDir, { recursive: true, force: true });
  }
}
