/**
 * Names and labels that other parts rely on (tooling, monitoring, docs/internals.md).
 * Changing one renames a Kubernetes object: keep them stable.
 */
export const PART_OF = 'ws-admission';

/** Kubernetes object names. */
export const NAMES = {
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
} as const;

/** Recommended labels (app.kubernetes.io/*) for one component. */
export function componentLabels(name: string, component: string): { [key: string]: string } {
  return {
    'app.kubernetes.io/name': name,
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/part-of': PART_OF,
    'app.kubernetes.io/managed-by': 'cdktf',
  };
}

/** The selector of a component: the stable subset of its labels. */
export function selectorLabels(name: string): { [key: string]: string } {
  return { 'app.kubernetes.io/name': name, 'app.kubernetes.io/part-of': PART_OF };
}

/** Labels of the Envoy pods (NetworkPolicy, Services and ServiceMonitor select on these). */
export const ENVOY_SELECTOR = selectorLabels(NAMES.envoy);
/** Labels of the Redis pods. */
export const REDIS_SELECTOR = selectorLabels(NAMES.redis);
