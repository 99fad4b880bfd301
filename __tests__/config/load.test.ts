// config/load.ts: defaults < config file < WS_ADMISSION_* environment < overrides, and
// every source it refuses (unknown keys with a suggestion, removed settings with what
// replaced them, unreadable files, values of the wrong type), all reported at once.
import * as path from 'path';
import { loadConfig } from '../../config/load';
import { StackConfig } from '../../config/schema';
import { ConfigError } from '../../config/validate';
import { FIXTURES } from '../support/synth';

const file = (name: string) => path.join(FIXTURES, 'config', name);
const load = (env: Record<string, string> = {}, extra: { file?: string; overrides?: Partial<StackConfig> } = {}) =>
  loadConfig({ env, ...extra });

describe('precedence: defaults < file < env < overrides', () => {
  it('reads the file named by WS_ADMISSION_CONFIG', () => {
    const c = load({ WS_ADMISSION_CONFIG: file('good.json') });
    expect(c.maxConnectionsPerPod).toBe(4);
    expect(c.envoyReplicas).toBe(3);
    expect(c.namespace).toBe('from-file');
    expect(c.backendSelector).toEqual({ app: 'chat' });
    expect(c.rateLimitPerMinute).toBe(60);
  });

  it('lets the environment win over the file, and overrides over both', () => {
    const c = load(
      {
        WS_ADMISSION_CONFIG: file('good.json'),
        WS_ADMISSION_MAX_CONNECTIONS_PER_POD: '7',
        WS_ADMISSION_LIMIT_ALL_REQUESTS: 'true',
        WS_ADMISSION_BACKEND_SELECTOR: 'app=chat, tier=ws',
        WS_ADMISSION_NLB_SCHEME: 'internal',
      },
      { overrides: { envoyReplicas: 5 } },
    );
    expect(c.maxConnectionsPerPod).toBe(7);
    expect(c.limitAllRequests).toBe(true);
    expect(c.backendSelector).toEqual({ app: 'chat', tier: 'ws' });
    expect(c.nlbScheme).toBe('internal');
    expect(c.envoyReplicas).toBe(5);
    expect(c.namespace).toBe('from-file');
  });

  it('loads the example in config/example.json', () => {
    const c = loadConfig({ file: path.join(__dirname, '..', '..', 'config', 'example.json'), env: {} });
    expect(c.clusterName).toBe('prod-eks');
    expect(c.deploySampleBackend).toBe(false);
    expect(c.remoteStateBucket).toBe('my-org-tfstate-ws-admission');
  });

  it('takes an explicit file option', () => {
    expect(loadConfig({ file: file('good.json'), env: {} }).envoyReplicas).toBe(3);
  });

  it('ignores variables without the prefix', () => {
    expect(load({ WS_LUA_DIR: '/x', MAX_CONNECTIONS_PER_POD: '9' }).maxConnectionsPerPod).toBe(2);
  });
});

describe('refused sources', () => {
  it('an unknown key in the file, with a suggestion', () => {
    expect(() => load({}, { file: file('unknown-key.json') })).toThrow(
      /config file ".*unknown-key.json" has an unknown key "maxConnectionPerPod"\. Fix: did you mean "maxConnectionsPerPod"\?/,
    );
  });
  it('an unknown key without a close match', () => {
    expect(() => load({ WS_ADMISSION_FLUX_CAPACITOR: '1' })).toThrow(
      /environment variable WS_ADMISSION_FLUX_CAPACITOR is not a known setting\. Fix: remove it/,
    );
  });
  it('an unknown environment variable, with a suggestion', () => {
    expect(() => load({ WS_ADMISSION_MAX_CONNECTION_PER_POD: '3' })).toThrow(
      /environment variable WS_ADMISSION_MAX_CONNECTION_PER_POD is not a known setting\. Fix: did you mean "WS_ADMISSION_MAX_CONNECTIONS_PER_POD"\?/,
    );
  });
  it('a file that cannot be read', () => {
    expect(() => load({ WS_ADMISSION_CONFIG: file('missing.json') })).toThrow(
      /config file ".*missing.json" cannot be read .*Fix: check the path in WS_ADMISSION_CONFIG/,
    );
  });
  it('a file that is not JSON', () => {
    expect(() => load({}, { file: file('bad-json.json') })).toThrow(/config file ".*bad-json.json" is not valid JSON/);
  });
  it('a file that is not an object', () => {
    expect(() => load({}, { file: file('not-object.json') })).toThrow(
      /config file ".*not-object.json" must hold a JSON object of field names to values, got \[1,2\]/,
    );
  });
  it('a quoted number in the file', () => {
    expect(() => load({}, { file: file('wrong-type.json') })).toThrow(
      'maxConnectionsPerPod must be a number, got "4". Fix: write it without quotes, e.g. 2.',
    );
  });
  it('a non-integer environment value', () => {
    expect(() => load({ WS_ADMISSION_ENVOY_REPLICAS: 'two' })).toThrow(
      'envoyReplicas must be an integer, got "two" (from WS_ADMISSION_ENVOY_REPLICAS). Fix: e.g. WS_ADMISSION_ENVOY_REPLICAS=2.',
    );
    expect(() => load({ WS_ADMISSION_ENVOY_REPLICAS: '1.5' })).toThrow(/envoyReplicas must be an integer, got "1.5"/);
  });
  it('a non-boolean environment value', () => {
    expect(() => load({ WS_ADMISSION_DEPLOY_SAMPLE_BACKEND: 'maybe' })).toThrow(
      'deploySampleBackend must be true or false, got "maybe" (from WS_ADMISSION_DEPLOY_SAMPLE_BACKEND).',
    );
  });
  it('labels not written as key=value', () => {
    expect(() => load({ WS_ADMISSION_BACKEND_SELECTOR: 'app' })).toThrow(
      'backendSelector must be written as key=value[,key=value], got "app" (from WS_ADMISSION_BACKEND_SELECTOR).',
    );
  });
  it('reports every problem at once', () => {
    let err: unknown;
    try {
      load({ WS_ADMISSION_ENVOY_REPLICAS: 'x', WS_ADMISSION_NOPE: '1', WS_ADMISSION_MAX_CONNECTIONS_PER_POD: '0' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toHaveLength(3);
    expect((err as ConfigError).message).toMatch(/^Invalid configuration \(3 problems\):\n- /);
    expect((err as ConfigError).message).toContain('- maxConnectionsPerPod must be a positive integer, got 0.');
  });
});

describe('removed settings', () => {
  it('a config file that still sets one is told what replaced it', () => {
    expect(() => load({}, { file: file('removed-key.json') })).toThrow(
      /config file ".*removed-key.json" sets "redisReplicas", which was removed: the in-cluster Redis always runs one replica .*; for a replicated Redis set externalRedisHost\. Fix: remove it\./,
    );
  });
  it('so is an environment that sets one', () => {
    expect(() => load({ WS_ADMISSION_HOSTS_CACHE_MS: '1000' })).toThrow(
      'environment variable WS_ADMISSION_HOSTS_CACHE_MS sets "hostsCacheMs", which was removed: ' +
        "each proxy's agent registers its healthy hosts in Redis now; there is no host list cache to size. Fix: unset it.",
    );
    expect(() => load({ WS_ADMISSION_REDIS_REPLICAS: '1' })).toThrow('WS_ADMISSION_REDIS_REPLICAS sets "redisReplicas", which was removed');
  });
});
