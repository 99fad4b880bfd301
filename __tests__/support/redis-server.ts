import { spawn, ChildProcess, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';

/**
 * A real `redis-server` on a free loopback port, for one test file.
 * No persistence, no password unless asked, its own temporary directory.
 */
export interface RedisServer {
  readonly port: number;
  readonly host: string;
  readonly password?: string;
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

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
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

export async function startRedis(opts: { password?: string } = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-redis-'));
  let proc: ChildProcess | undefined;

  const launch = async () => {
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
    proc = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
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
    dir,
    stop,
    restart: async () => {
      await stop(true);
      await launch();
    },
    cli: (...args: string[]) => {
      const auth = opts.password ? ['-a', opts.password, '--no-auth-warning'] : [];
      const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...auth, ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')} failed: ${r.stderr}`);
      return r.stdout.trim();
    },
  };
}
