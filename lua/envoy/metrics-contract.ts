/**
 * The metric names the metrics listener exports (lua/envoy/metrics.lua), as listed in
 * docs/internals.md ("Metrics"). The metrics view, the Grafana dashboard and their tests
 * use only these; tests check that metrics.lua exports exactly these and that
 * docs/internals.md names each one.
 */
export const METRICS = {
  activeConnections: 'ws_admission_active_connections',
  activeConnectionsByProxy: 'ws_admission_active_connections_by_proxy',
  admitted: 'ws_admission_admitted_total',
  rejected: 'ws_admission_rejected_total',
  released: 'ws_admission_released_total',
  expired: 'ws_admission_expired_total',
  reregistered: 'ws_admission_reregistered_total',
  failedUpstream: 'ws_admission_failed_upstream_total',
  rateWindowUsed: 'ws_admission_rate_window_used',
  podsReachable: 'ws_admission_pods_reachable',
  podsPenalised: 'ws_admission_pods_penalised',
  proxiesLive: 'ws_admission_proxies_live',
  recovering: 'ws_admission_recovering',
  clientsTracked: 'ws_admission_clients_tracked',
  snapshotAgeSeconds: 'ws_admission_snapshot_age_seconds',
  rateLimit: 'ws_admission_rate_limit',
  rateWindowSeconds: 'ws_admission_rate_window_seconds',
  maxConnectionsPerPod: 'ws_admission_max_connections_per_pod',
  maxConnectionsPerClient: 'ws_admission_max_connections_per_client',
  maxConnectionsPerClientPercent: 'ws_admission_max_connections_per_client_percent',
  rateLimitPerClient: 'ws_admission_rate_limit_per_client',
  redisUp: 'ws_admission_redis_up',
  redisErrors: 'ws_admission_redis_errors_total',
  failOpen: 'ws_admission_fail_open_total',
} as const;

export const EXPORTED_METRICS: readonly string[] = Object.values(METRICS);

/**
 * Values of the `reason` label of ws_admission_rejected_total. Redis counts rate_limited,
 * capacity and client (a client over its own limits) for all proxies (series with {reason}
 * only); each worker counts what it
 * refused itself (series with {reason, proxy, worker}): redis_unavailable, recovering
 * (Redis rebuilding its state after a loss), no_backend (Redis knows no healthy host of
 * the proxy), and rate_limited or capacity answered from its cache of Redis's last refusal.
 */
export const REJECT_REASONS = ['rate_limited', 'capacity', 'client', 'redis_unavailable', 'recovering', 'no_backend'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];
/** The reasons only Redis counts (absent while Redis cannot be read). */
export const REDIS_COUNTED_REASONS: readonly RejectReason[] = ['rate_limited', 'capacity', 'client'];
