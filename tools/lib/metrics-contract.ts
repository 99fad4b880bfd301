/**
 * The metric names the filter exports, as listed in docs/internals.md ("Metrics").
 * The metrics view, the Grafana dashboard and their tests use only these; a test
 * checks that each one is still named in docs/internals.md.
 */
export const METRIC_PREFIX = 'ws_admission_';

export const METRICS = {
  activeConnections: 'ws_admission_active_connections',
  activeConnectionsByProxy: 'ws_admission_active_connections_by_proxy',
  admitted: 'ws_admission_admitted_total',
  rejected: 'ws_admission_rejected_total',
  released: 'ws_admission_released_total',
  expired: 'ws_admission_expired_total',
  reregistered: 'ws_admission_reregistered_total',
  rateWindowUsed: 'ws_admission_rate_window_used',
  rateLimit: 'ws_admission_rate_limit',
  rateWindowSeconds: 'ws_admission_rate_window_seconds',
  maxConnectionsPerPod: 'ws_admission_max_connections_per_pod',
  redisUp: 'ws_admission_redis_up',
  redisErrors: 'ws_admission_redis_errors_total',
  failOpen: 'ws_admission_fail_open_total',
  oneWayStreams: 'ws_admission_one_way_streams_total',
  phantomLeasesReleased: 'ws_admission_phantom_leases_released_total',
} as const;

export const EXPORTED_METRICS: readonly string[] = Object.values(METRICS);

export const REJECT_REASONS = ['rate_limited', 'capacity', 'redis_unavailable'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];
