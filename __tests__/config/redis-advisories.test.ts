import { advisoriesFor, REDIS_ADVISORIES, redisImageAdvisory } from '../../config/redis-advisories';
import { FIELDS } from '../../config/schema';
import { validateConfig } from '../../config/validate';
import { loadConfig } from '../../config/load';

const defaults = () => loadConfig({ env: {} });

describe('known-vulnerable Redis releases (config/redis-advisories.ts)', () => {
  it('the default redisImage is none of them', () => {
    const def = FIELDS.find((f) => f.key === 'redisImage')!.default as string;
    expect(redisImageAdvisory(def)).toBeNull();
    expect(() => validateConfig(defaults())).not.toThrow();
  });

  it.each([
    ['redis:7.4.2-alpine', ['CVE-2025-49844, CVE-2025-46817, CVE-2025-46818, CVE-2025-46819', 'CVE-2026-23479']],
    ['redis:7.4.6-alpine', ['CVE-2026-23479']],
    ['redis:7.0.15', ['CVE-2025-49844, CVE-2025-46817, CVE-2025-46818, CVE-2025-46819']],
    ['docker.io/library/redis:8.2.1', ['CVE-2025-49844, CVE-2025-46817, CVE-2025-46818, CVE-2025-46819', 'CVE-2026-23479']],
    ['redis:8.6.2@sha256:' + 'a'.repeat(64), ['CVE-2026-23479']],
    ['redis:8.6.3-alpine', []],
    ['redis:9.0.0', []],
  ])('%s: %j', (image, ids) => {
    const m = /:([0-9.]+)/.exec(image)![1];
    expect(advisoriesFor(m).map((a) => a.id)).toEqual(ids);
    expect(redisImageAdvisory(image) === null).toBe(ids.length === 0);
  });

  it('images under another name (a private patched build) and moving tags are not judged', () => {
    expect(redisImageAdvisory('registry.example.com/team/redis:7.4.2')).toBeNull();
    expect(redisImageAdvisory('redis:7.4-alpine')).toBeNull();
  });

  it('the config refuses a known-vulnerable in-cluster Redis, naming the field, the value, the advisory and the fix', () => {
    expect(() => validateConfig({ ...defaults(), redisImage: 'redis:7.4.2-alpine' })).toThrow(
      /redisImage is Redis 7\.4\.2-alpine, affected by CVE-2025-49844.*got "redis:7\.4\.2-alpine"\. Fix: use a patched release/,
    );
    // With an external Redis the image is not deployed.
    expect(() =>
      validateConfig({ ...defaults(), redisImage: 'redis:7.4.2-alpine', externalRedisHost: 'redis.example.internal' }),
    ).not.toThrow();
  });

  it('every advisory names its fixed releases as versions', () => {
    for (const a of REDIS_ADVISORIES) for (const f of a.fixedIn) expect(f).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
