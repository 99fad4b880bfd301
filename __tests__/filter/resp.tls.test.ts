// TLS to Redis (lua/envoy/resp.lua with luasec), through the filter as settings.lua
// configures it: the chain is verified against WS_REDIS_CA_FILE (or the system bundle) and
// the server certificate's subjectAltName must name redis_host.
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';
import { Functions, loadLibrary } from '../redis/support/functions';
import { startTlsRedis, TlsRedis } from '../support/tls-redis';
import { Fleet, UPGRADE, admission } from './harness/worker';

const PROXY = 'envoy-tls';
let tlsRedis: TlsRedis;
let admin: Redis;
let fleet: Fleet;

beforeAll(async () => {
  tlsRedis = await startTlsRedis();
  admin = new Redis({
    host: '127.0.0.1',
    port: tlsRedis.port,
    lazyConnect: true,
    tls: { ca: fs.readFileSync(tlsRedis.caFile), servername: 'localhost' },
  });
  await admin.connect();
  await loadLibrary(admin);
  const f = new Functions(admin, 'ws');
  await f.start();
  await f.reach(PROXY, ['10.0.0.1:8080']);
});
afterAll(() => {
  admin?.disconnect();
  tlsRedis?.stop();
});
beforeEach(() => {
  fleet = new Fleet(tlsRedis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

const tls = { redis_tls: true, failure_mode: 'closed' as const, redis_connect_timeout_ms: 1000, redis_read_timeout_ms: 1000 };
/** The test CA as the trust store (WS_REDIS_CA_FILE). */
const trustingCa = () => ({ WS_REDIS_CA_FILE: path.join(tlsRedis.dir, 'ca.crt') });

describe('TLS to Redis', () => {
  it('GIVEN a certificate that chains to the CA and names redis_host THEN admitted over TLS', async () => {
    const w = await fleet.worker({ ...tls, redis_host: 'localhost' }, { podName: PROXY, env: trustingCa() });
    const r = await w.request(UPGRADE);
    expect(r.override).toEqual({ host: '10.0.0.1:8080', strict: true });
    expect(admission(r).registered).toBe('1');
  });

  it('GIVEN a certificate that does not name redis_host THEN refused (fails per failure_mode), logged', async () => {
    const w = await fleet.worker({ ...tls, redis_host: '127.0.0.1' }, { podName: PROXY, env: trustingCa() });
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers['x-ws-admission']).toBe('redis_unavailable');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/the server certificate does not name 127\.0\.0\.1/);
  });

  it('GIVEN a certificate from a CA it does not trust THEN refused at the handshake', async () => {
    const w = await fleet.worker({ ...tls, redis_host: 'localhost' }, { podName: PROXY }); // the system bundle only
    const r = await w.request(UPGRADE);
    expect(r.reply?.headers['x-ws-admission']).toBe('redis_unavailable');
    const { logs } = await w.logs();
    expect(logs.map((l) => l.msg).join('\n')).toMatch(/tls handshake/);
  });
});
