// TLS to Redis (luasec): chain verified against WS_REDIS_CA_FILE (or the system bundle),
// and the server certificate's subjectAltName must name redis_host.
import * as path from 'path';
import { startTlsRedis, TlsRedis } from '../support/tls-redis';
import { Fleet, UPGRADE } from './harness/worker';

let tlsRedis: TlsRedis;
let dir: string;
let port: number;
let fleet: Fleet;

beforeAll(async () => {
  tlsRedis = await startTlsRedis();
  ({ dir, port } = tlsRedis);
});
afterAll(() => {
  tlsRedis?.stop();
});
beforeEach(() => {
  fleet = new Fleet(port);
});
afterEach(async () => {
  await fleet.closeAll();
});

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
