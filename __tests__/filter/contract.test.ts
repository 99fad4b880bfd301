// The settings.lua the stack writes (config/settings.ts) is accepted by the filter as is:
// the two sides of docs/internals.md "settings.lua" cannot drift apart unnoticed.
import { defaults, renderSettingsLua } from '../../config';
import { startRedis, RedisServer } from '../support/redis-server';
import { Fleet, UPGRADE } from './harness/worker';

let redis: RedisServer;
let fleet: Fleet;

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});
beforeEach(() => {
  fleet = new Fleet(redis.port);
});
afterEach(async () => {
  await fleet.closeAll();
});

describe('settings.lua written by the stack', () => {
  it('loads without a complaint and admits; metrics.lua serves its metrics_path', async () => {
    const text = renderSettingsLua(defaults(), { host: '127.0.0.1', port: redis.port, tls: false, auth: false });
    const w = await fleet.worker({}, { settings: text });
    const r = await w.request(UPGRADE);
    expect(r.override).toBeDefined();
    const { logs } = await w.logs();
    expect(logs.filter((l) => l.level === 'err')).toEqual([]);

    const m = await fleet.worker({}, { settings: text, script: 'metrics.lua' });
    const scrape = await m.request([
      [':method', 'GET'],
      [':path', '/metrics'],
    ]);
    expect(scrape.reply?.headers[':status']).toBe('200');
    expect(scrape.reply?.body).toMatch(/^ws_admission_rate_limit 60$/m);
    expect(scrape.reply?.body).toMatch(/^ws_admission_max_connections_per_pod 2$/m);
  });
});
