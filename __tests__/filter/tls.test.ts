// TLS to Redis (luasec): chain verified against WS_REDIS_CA_FILE (or the system bundle),
// and the server certificate's subjectAltName must name redis_host.
import { spawn, spawnSync, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { freePort } from '../support/redis-server';
import { Fleet, UPGRADE } from './harness/worker';

let dir: string;
let port: number;
let server: ChildProcess;
let fleet: Fleet;

function openssl(...args: string[]) {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-tls-'));
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=ws-test-ca');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=redis');
  fs.writeFileSync(path.join(dir, 'ext'), 'subjectAltName=DNS:localhost\n');
  openssl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.crt',
    '-days', '2', '-extfile', 'ext');
  port = await freePort();
  server = spawn('redis-server', ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1',
    '--tls-cert-file', 'srv.crt', '--tls-key-file', 'srv.key', '--tls-ca-cert-file', 'ca.crt',
    '--tls-auth-clients', 'no', '--save', '', '--appendonly', 'no', '--dir', dir], { cwd: dir, stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 25));
  }
});
afterAll(() => { server.kill('SIGKILL'); });
beforeEach(() => { fleet = new Fleet(port); });
afterEach(async () => { await fleet.closeAll(); });

const tls = { redis_tls: true, failure_mode: 'closed' as const, redis_connect_timeout_ms: 1000, redis_read_timeout_ms: 1000 };

describe('TLS to Redis', () => {
  it('admits over TLS when the certificate chains to the CA and names redis_host', async () => {
    const w = await fleet.worker({ ...tls, redis_host: 'localhost' }, { env: { WS_REDIS_CA_FILE: path.join(dir, 'ca.crt') } });
    const r = await w.request(UPGRADE);
    expect(r.override).toBeDefined();
  });

  it('refuses a certificate that does not name redis_host (fails per failure_mode, logged)', async () => {
    const w = await fleet.worker({ ...tls, redis_host: '127.0.0.1' }, { env: { WS_REDIS_CA_FILE: path.join(dir, 'ca.crt') } });
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers[':status']).toBe('503');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/the server certificate does not name 127\.0\.0\.1/);
  });

  it('refuses a certificate from an untrusted CA', async () => {
    const w = await fleet.worker({ ...tls, redis_host: 'localhost' }); // system bundle only
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers[':status']).toBe('503');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/tls handshake/);
  });
});
