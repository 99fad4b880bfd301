import { spawn, spawnSync, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { freePort, waitForPort } from '../../tools/rig/redis-server';

/**
 * A real TLS `redis-server` on a free loopback port, with a throwaway CA (openssl) whose
 * server certificate names only `localhost` (so a client that checks names must use it).
 */
export interface TlsRedis {
  readonly port: number;
  /** Temporary directory holding ca.crt, srv.crt/key (and whatever the test writes). */
  readonly dir: string;
  readonly caFile: string;
  stop(): void;
}

export async function startTlsRedis(opts: { password?: string } = {}): Promise<TlsRedis> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-tls-'));
  const openssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
  };
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=ws-test-ca');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=redis');
  fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=DNS:localhost\n');
  openssl(
    'x509',
    '-req',
    '-in',
    'srv.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'srv.crt',
    '-days',
    '2',
    '-extfile',
    'ext',
  );
  const port = await freePort();
  const auth = opts.password ? ['--requirepass', opts.password] : [];
  const server: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--tls-cert-file',
      'srv.crt',
      '--tls-key-file',
      'srv.key',
      '--tls-ca-cert-file',
      'ca.crt',
      '--tls-auth-clients',
      'no',
      ...auth,
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
    ],
    { cwd: dir, stdio: 'ignore' },
  );
  try {
    await waitForPort(port, 5000);
  } catch (e) {
    server.kill('SIGKILL');
    throw new Error(`TLS ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return {
    port,
    dir,
    caFile: path.join(dir, 'ca.crt'),
    stop: () => {
      server.kill('SIGKILL');
    },
  };
}
