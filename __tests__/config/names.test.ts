// config/names.ts: the Kubernetes names and labels of the stack's objects, which the
// constructs use (through constructs/names.ts) and the config refuses to clash with. A
// name here is part of the contract: changing one renames (destroys and recreates) an object.
import { ENVOY_SELECTOR, NAMES, PART_OF, REDIS_SELECTOR, componentLabels, selectorLabels } from '../../config/names';

it('names every object of the stack, stably', () => {
  expect(NAMES).toStrictEqual({
    envoy: 'ws-envoy',
    envoyConfig: 'ws-envoy-config',
    envoyMetrics: 'ws-envoy-metrics',
    envoyPdb: 'ws-envoy',
    nlb: 'ws-envoy-nlb',
    redis: 'ws-redis',
    redisSecret: 'ws-redis-auth',
    redisFunctions: 'ws-redis-functions',
    redisData: 'ws-redis-data',
    redisPolicy: 'ws-redis-envoy-only',
    envoyPolicy: 'ws-envoy-metrics-restricted',
    sampleBackend: 'ws-echo',
  });
  expect(PART_OF).toBe('ws-admission');
});

it("labels a component with the recommended app.kubernetes.io labels, the stack's own part-of among them", () => {
  expect(componentLabels('ws-envoy', 'proxy')).toStrictEqual({
    'app.kubernetes.io/name': 'ws-envoy',
    'app.kubernetes.io/component': 'proxy',
    'app.kubernetes.io/part-of': 'ws-admission',
    'app.kubernetes.io/managed-by': 'cdktf',
  });
});

it("selects a component on a stable subset of its labels, so a selector always matches the component's pods", () => {
  for (const [name, selector] of [
    [NAMES.envoy, ENVOY_SELECTOR],
    [NAMES.redis, REDIS_SELECTOR],
  ] as const) {
    expect(selector).toStrictEqual(selectorLabels(name));
    expect(selector).toStrictEqual({ 'app.kubernetes.io/name': name, 'app.kubernetes.io/part-of': 'ws-admission' });
    expect(componentLabels(name, 'any')).toMatchObject(selector);
  }
});
