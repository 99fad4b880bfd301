// config/schema.ts: the field table, its defaults (the seed's values), the environment
// names, the settings that were removed, and the type derived from the table.
import { loadConfig } from '../../config/load';
import { FIELDS, REMOVED_FIELDS, StackConfig, defaults, envName } from '../../config/schema';
import { validateConfig } from '../../config/validate';
import { ENVOY_RELEASE } from '../../envoy/release';

const load = (env: Record<string, string> = {}) => loadConfig({ env });

describe('defaults', () => {
  it('carry the seed values', () => {
    const c = load();
    expect(c.maxConnectionsPerPod).toBe(2);
    expect(c.rateLimitPerMinute).toBe(60);
    expect(c.envoyReplicas).toBe(2);
  });

  it('are valid and pinned', () => {
    const c = load();
    expect(validateConfig(c)).toEqual(c);
    // The Envoy version of envoy/release.json, then our build number (1.40.0-2).
    expect(c.envoyImage).toBe(`ws-envoy-lua:${ENVOY_RELEASE.version}-${ENVOY_RELEASE.imageBuild}`);
    // A lease outlives two renew intervals (Envoy's periodic lease log entries) and a margin.
    expect([c.leaseTtlSeconds, c.renewIntervalSeconds]).toEqual([30, 10]);
    expect(c.leaseTtlSeconds).toBeGreaterThanOrEqual(2 * c.renewIntervalSeconds + 5);
    expect(c.remoteStateBucket).toBe('');
  });

  it('describe every field of StackConfig exactly once', () => {
    const keys = FIELDS.map((f) => f.key);
    expect(new Set(keys).size).toBe(keys.length);
    expect(Object.keys(defaults()).sort()).toEqual([...keys].sort());
    for (const f of FIELDS) expect(f.description.length).toBeGreaterThan(10);
  });

  it('derive environment names from the keys', () => {
    expect(envName('maxConnectionsPerPod')).toBe('WS_ADMISSION_MAX_CONNECTIONS_PER_POD');
    expect(envName('nlbScheme')).toBe('WS_ADMISSION_NLB_SCHEME');
  });
});

describe('removed settings', () => {
  it('are not fields any more', () => {
    for (const key of Object.keys(REMOVED_FIELDS)) expect(FIELDS.map((f) => f.key)).not.toContain(key);
  });
});

describe('StackConfig is derived from the field table (config/schema.ts)', () => {
  it('gives each field the type of its kind: checked by tsc (the lint test compiles every file)', () => {
    // These lines compile only while the derived type is right: an enum field is the union
    // of its values, not any string; integers are numbers; labels and lists keep their shape.
    const typed: [
      StackConfig['redisFailureMode'],
      StackConfig['envoyReplicas'],
      StackConfig['backendSelector'],
      StackConfig['nlbSourceRanges'],
    ] = ['open', 2, { app: 'x' }, ['10.0.0.0/8']];
    // @ts-expect-error -- not one of the enum's values
    const wrongEnum: StackConfig['redisFailureMode'] = 'maybe';
    // @ts-expect-error -- an integer field is a number
    const wrongInteger: StackConfig['envoyReplicas'] = '2';
    expect([typed, wrongEnum, wrongInteger]).toHaveLength(3);
    expect(Object.keys(defaults()).sort()).toEqual(FIELDS.map((f) => f.key).sort());
  });
});
