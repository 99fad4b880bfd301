/**
 * How the local cluster runs its components: each under `timeout(1)` in its own process
 * group (so none outlives its lifetime even if nobody stops it), its output in
 * `<dir>/logs/<name>.log`; and how it waits for one to answer.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import * as net from 'net';
import * as path from 'path';

export interface StartProcessOptions {
  /** Extra environment. @default - this process's */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * A cgroup folder (v1, e.g. /sys/fs/cgroup/pids/ws-node-runtime) the process is put in
   * before it runs, so everything it forks (containerd's shims) can be found and stopped
   * by process id later.
   * @default - the caller's cgroups
   */
  readonly cgroup?: string;
}

/** Starts `cmd` under `timeout`, detached (its own process group), output into `<dir>/logs/<name>.log`. */
export function startProcess(
  dir: string,
  name: string,
  cmd: string,
  args: readonly string[],
  lifetimeSeconds: number,
  o: StartProcessOptions = {},
): number {
  const log = path.join(dir, 'logs', `${name}.log`);
  fs.mkdirSync(path.dirname(log), { recursive: true });
  const fd = fs.openSync(log, 'a');
  const timed = ['timeout', '--kill-after=10', String(lifetimeSeconds), cmd, ...args];
  // The shell writes its own pid into the cgroup, then becomes `timeout` (same pid).
  const argv = o.cgroup ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', o.cgroup, ...timed] : timed;
  const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', fd, fd], env: o.env ?? process.env });
  fs.closeSync(fd);
  child.unref();
  if (!child.pid) throw new Error(`cluster: could not start ${cmd}`);
  return child.pid;
}

export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>, logFile?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  const tail =
    logFile && fs.existsSync(logFile) ? `\n  ${fs.readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-8).join('\n  ')}` : '';
  throw new Error(`cluster: ${what} not ready after ${timeoutMs / 1000} s${logFile ? ` (log: ${logFile})` : ''}${tail}`);
}

export function httpGet(url: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const options = { timeout: 2000, headers: token ? { Authorization: `Bearer ${token}` } : {} };
    const onResponse = (res: http.IncomingMessage): void => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    };
    // Readiness polls only: the apiserver's serving cert is self-signed (the kubeconfig pins it).
    const req = url.startsWith('https:')
      ? https.get(url, { ...options, rejectUnauthorized: false }, onResponse)
      : http.get(url, options, onResponse);
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

export function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Signals the process groups of `pids` (newest first), TERM then KILL, and waits until they are gone. */
export async function stopGroups(pids: readonly number[]): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    for (const pid of pids) {
      try {
        process.kill(-pid, signal); // the group: timeout and the component it runs
      } catch {
        /* already gone */
      }
    }
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && pids.some(alive)) await new Promise((r) => setTimeout(r, 200));
    if (!pids.some(alive)) break;
  }
  const left = pids.filter(alive);
  if (left.length > 0) throw new Error(`cluster: processes ${left.join(', ')} did not stop`);
}
