// lua/cli/drain.lua over TLS (settings.redis_tls, luasec through resp.lua) with AUTH, against
// a real TLS redis-server with the ws_admission library: the certificate must chain to
// WS_REDIS_CA_FILE and name redis_host.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import Redis from 'ioredis';
import { Functions, loadLibrary } from '../redis/support/functions';
import { startTlsRedis, TlsRedis } from '../support/tls-redis';
import { defaultSettings, makeLuaDir } from '../filter/harness/worker';

const DRAIN = path.resolve(__dirname, '..', '..', 'lua', 'cli', 'drain.lua');
const PASSWORD = 'tls-s3cret';
let tlsRedis: TlsRedis;
let redis: Redis;
let f: Functions;

beforeAll(async () => {
  tlsRedis = await startTlsRedis({ password: PASSWORD });
  fs.writeFileSync(path.join(tlsRedis.dir, 'password'), `${PASSWORD}\n`);
  redis = new Redis({
    host: '127.0.0.1',
    port: tlsRedis.port,
    password: PASSWORD,
    lazyConnect: true,
    tls: { ca: fs.readFileSync(tlsRedis.caFile), servername: 'localhost' },
  });
  await redis.connect();
  await loadLibrary(redis);
  f = new Functions(redis, 'ws');
});
afterAll(() => {
  redis?.disconnect();
  tlsRedis?.stop();
});

function drain(caFile: string): Promise<{ code: number | null; stdout: string }> {
  const luaDir = makeLuaDir({
    ...defaultSettings(tlsRedis.port, {
      redis_host: 'localhost',
      redis_tls: true,
      redis_password_file: path.join(tlsRedis.dir, 'password'),
      redis_connect_timeout_ms: 1000,
      redis_read_timeout_ms: 1000,
    }),
  });
  return new Promise((resolve, reject) => {
    const p = spawn('luajit', [DRAIN], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        WS_LUA_DIR: luaDir,
        POD_NAME: 'envoy-tls',
        WS_REDIS_CA_FILE: caFile,
        WS_STATE_DIR: tlsRedis.dir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout }));
  });
}

describe('drain.lua over TLS', () => {
  it('GIVEN a server its CA vouches for, named redis_host THEN it releases the leases over TLS with AUTH', async () => {
    await f.leases(60000, 0, [
      ['R', 'envoy-tls|a|1|b', '10.0.0.1:8080'],
      ['R', 'other|a|1|b', '10.0.0.1:8080'],
    ]);
    const r = await drain(tlsRedis.caFile);
    expect(r.stdout).toMatch(/^drain: released 1 leases of proxy envoy-tls \(1 scan steps, \d+ ms\)\n$/);
    expect(r.code).toBe(0);
    expect(await redis.zrange(f.keys.leases, 0, -1)).toEqual(['other|a|1|b 10.0.0.1:8080']);
    expect(await redis.zscore(f.keys.load, '10.0.0.1:8080')).toBe('1');
  });

  it('GIVEN a server its CA bundle does not vouch for THEN one clear line, exit 1', async () => {
    const r = await drain('/nonexistent/ca.crt');
    expect(r.stdout).toMatch(/^drain: FAILED to release the leases of proxy envoy-tls: Redis localhost:\d+ unavailable: tls/);
    expect(r.code).toBe(1);
  });
});
