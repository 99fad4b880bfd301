import { spawn, ChildProcess, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { REDIS_ADMIN_USER, REDIS_PROXY_USER, redisConf } from '../../constructs/redis';

/** What startRedis is asked for. */
export interface RedisOptions {
  /** `requirepass` of a plain server (no ACL). */
  readonly password?: string;
  /** The stack's redis.conf and ACL for keys under `{<hashTag>}`. */
  readonly acl?: { readonly hashTag: string };
  /** maxmemory with `acl`. @default '128mb' */
  readonly maxMemory?: string;
}

/** An ACL user of a Redis started with the production ACL, and its password in a file (as the Secret is mounted). */
export interface RedisUser {
  readonly name: string;
  readonly password: string;
  /** The password in a file ending with a newline, as a mounted Secret often does. */
  readonly passwordFile: string;
}

/**
 * A real `redis-server` on a free loopback port, for one test file or bench part.
 * No persistence, no password unless asked, its own temporary directory.
 */
export interface RedisServer {
  readonly port: number;
  readonly host: string;
  readonly password?: string;
  /**
   * With `acl`: the stack's own redis.conf (constructs/redis.ts `redisConf`), so the
   * `default` user is off, `proxy` may run only REDIS_PROXY_COMMANDS on `{<hashTag>}:*`,
   * and `admin` anything (`cli` runs as admin).
   */
  readonly users?: { readonly proxy: RedisUser; readonly admin: RedisUser };
  readonly dir: string;
  /** Stops the server (SIGKILL when `hard`, losing everything, like a crash). */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port, empty (no persistence). */
  restart(): Promise<void>;
  /** Runs redis-cli against it and returns stdout (trimmed). */
  readonly cli: (...args: string[]) => string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address() as net.AddressInfo;
      srv.close(() => resolve(addr.port));
    });
  });
}

/** Resolves once 127.0.0.1:`port` accepts a TCP connection; throws after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function user(dir: string, name: string, password: string): RedisUser {
  const passwordFile = path.join(dir, `${name}.password`);
  fs.writeFileSync(passwordFile, `${password}\n`, { mode: 0o400 });
  return { name, password, passwordFile };
}

/** redis-server's arguments: the stack's redis.conf with `acl`, else a plain server. */
function serverArgs(port: number, dir: string, opts: RedisOptions, users: RedisServer['users']): string[] {
  if (opts.acl && users) {
    const conf = path.join(dir, 'redis.conf');
    fs.writeFileSync(
      conf,
      redisConf({
        port,
        bind: '127.0.0.1',
        maxMemory: opts.maxMemory ?? '128mb',
        dir,
        hashTag: opts.acl.hashTag,
        proxyPassword: users.proxy.password,
        adminPassword: users.admin.password,
      }),
    );
    return [conf, '--daemonize', 'no', '--loglevel', 'warning'];
  }
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ];
  if (opts.password) args.push('--requirepass', opts.password);
  return args;
}

/**
 * opts.acl: the production ACL (constructs/redis.ts) for keys under `{<hashTag>}`; the
 * proxies' and the admin's passwords are generated (alphanumeric, as the stack's).
 */
export async function startRedis(opts: RedisOptions = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-redis-'));
  const secret = () => Math.random().toString(36).slice(2) + Date.now().toString(36);
  const users = opts.acl
    ? { proxy: user(dir, REDIS_PROXY_USER, `p${secret()}`), admin: user(dir, REDIS_ADMIN_USER, `a${secret()}`) }
    : undefined;
  let proc: ChildProcess | undefined;

  const launch = async () => {
    proc = spawn('redis-server', serverArgs(port, dir, opts, users), { stdio: ['ignore', 'ignore', 'inherit'] });
    proc.on('error', (e) => {
      throw new Error(`cannot start redis-server (is it installed? apt-get install redis-server): ${e.message}`);
    });
    await waitForPort(port, 10000);
  };

  const stop = async (hard = false) => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill(hard ? 'SIGKILL' : 'SIGTERM');
    });
  };

  await launch();
  return {
    port,
    host: '127.0.0.1',
    password: opts.password,
    users,
    dir,
    stop,
    restart: async () => {
      await stop(true);
      await launch();
    },
    cli: (...args: string[]) => {
      const auth = users
        ? ['--user', users.admin.name, '--pass', users.admin.password, '--no-auth-warning']
        : opts.password
          ? ['-a', opts.password, '--no-auth-warning']
          : [];
      const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...auth, ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')} failed: ${r.stderr}`);
      return r.stdout.trim();
    },
  };
}
