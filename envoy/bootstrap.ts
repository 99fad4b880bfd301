import {
  AccessLog,
  Route,
  Bootstrap,
  Cluster,
  Duration,
  HttpConnectionManagerConfig,
  Listener,
  ListenerFilter,
  LocalRateLimitConfig,
  LuaPerRouteConfig,
  OverloadManager,
  TYPE_URLS,
} from './types';

/** Ports and names shared with the stack, the filter and the tooling (docs/internals.md). */
export const PUBLIC_LISTENER = 'public';
export const PUBLIC_PORT = 8080;
export const METRICS_LISTENER = 'metrics';
export const METRICS_PORT = 9901;
/** The metrics listener's scrape path (metrics.lua answers it; settings.lua metrics_path). */
export const METRICS_PATH = '/metrics';
/** The readiness probe's and the NLB health check's path on the metrics listener (ready.lua answers it). */
export const READY_PATH = '/ready';
/** The liveness probe's path on the metrics listener (ready.lua: Envoy's own readiness only). */
export const LIVE_PATH = '/live';
export const ADMIN_ADDRESS = '127.0.0.1';
export const ADMIN_PORT = 9000;
export const BACKEND_CLUSTER = 'backend';
export const ADMIN_CLUSTER = 'envoy_admin';
export const CONFIG_DIR = '/etc/envoy';
export const LUA_DIR = `${CONFIG_DIR}/lua`;
export const FILTER_LUA = `${LUA_DIR}/filter.lua`;
export const METRICS_LUA = `${LUA_DIR}/metrics.lua`;
/** Shared state of the filter's workers, metrics.lua, the preStop drain and the agent (WS_STATE_DIR). */
export const STATE_DIR = '/var/run/ws-admission';
/**
 * The files in the state directory, as lua/envoy/runtime.lua names them (FILES; a test
 * holds the two together): the drain marker (drain.lua writes, the agent reads), Envoy's
 * lease log (the agent reads it), the agent's heartbeat (its liveness probe and ready.lua)
 * and the metrics snapshot (the agent writes, metrics.lua serves).
 */
export const STATE_FILES = {
  draining: 'draining',
  lease_log: 'leases.log',
  agent_alive: 'agent.alive',
  snapshot: 'metrics.snapshot',
} as const;
/** The lease log, in the state directory (lua/cli/agent.lua reads it). */
export const LEASE_LOG_FILE = STATE_FILES.lease_log;
/** Dynamic metadata namespace of the filter (lua/envoy/filter.lua, NS). */
export const FILTER_METADATA_NAMESPACE = 'ws.admission';
/**
 * The value of the metadata key `lease` while the stream holds its lease (filter.lua's
 * LEASE_HELD): only such streams are in the lease log. A test runs the filter's metadata
 * through this log's filter (__tests__/filter/filter.admission.test.ts).
 */
export const LEASE_HELD = 'held';
/**
 * How often Envoy writes its access log files (`--file-flush-interval-msec`; Envoy's
 * default is 10 s): a closed connection's lease is back this long after it ended, plus
 * the agent's poll.
 */
export const FILE_FLUSH_INTERVAL_MS = 100;
/**
 * How long every proxy passes over a backend pod after an upgrade pinned to it never
 * reached it (Envoy answered itself): the backend cluster's health checks mark a dead pod
 * unhealthy within interval x unhealthy_threshold (10 s) and the agent reports that within
 * a second; a pod that was only briefly unreachable is chosen again after this.
 */
export const BACKEND_PENALTY_MS = 15_000;
/** The backend cluster's active health check (a dead pod is unhealthy after interval x threshold). */
export const BACKEND_HEALTH_CHECK = { intervalSeconds: 5, unhealthyThreshold: 2, timeoutSeconds: 1 } as const;
/**
 * Response header that marks Envoy's own replies on the public listener (its local reply
 * config sets it to the response flags, e.g. `UH`, `UF`) and is removed from every backend
 * answer: lua/envoy/filter.lua (LOCAL_REPLY_HEADER) tells by it an upgrade that never
 * reached its pod from one the backend refused, and removes it before the client sees it.
 * (The router's x-envoy-upstream-service-time cannot tell them apart: it is never added to
 * the answer to an upgrade, whose request never completes.)
 */
export const LOCAL_REPLY_HEADER = 'x-ws-local-reply';
/** How often each agent snapshots the Redis-held metrics for /metrics (scrapes never reach Redis). */
export const METRICS_SNAPSHOT_MS = 5000;

/**
 * Edge-proxy bounds, after Envoy's "Configuring Envoy as an edge proxy"
 * (https://www.envoyproxy.io/docs/envoy/latest/configuration/best_practices/edge):
 * per-connection buffers, HTTP/2 concurrency and windows, and an overload manager that
 * sheds load before the kernel's OOM killer ends the pod (which skips the preStop drain).
 */
export const EDGE = {
  bufferLimitBytes: 32 * 1024,
  http2MaxConcurrentStreams: 100,
  http2InitialStreamWindowBytes: 64 * 1024,
  http2InitialConnectionWindowBytes: 1024 * 1024,
  requestHeadersTimeout: '10s',
  /** The Envoy container's memory limit (constructs/envoy.ts uses it). */
  memoryLimitMiB: 256,
  /**
   * Share of memoryLimitMiB the overload manager treats as the whole heap. The rest is for
   * what the heap monitor does not see (measured through the local rig on 1.40: ~58 MB of
   * non-heap at idle, +~5 KB per open WebSocket) and the kernel's socket buffers.
   */
  heapShareOfLimit: 0.6,
  /** Heap use (of that) at which Envoy returns free memory to the system. */
  shrinkHeapAt: 0.9,
  /** ... and at which it answers new requests with 503 instead of dying. */
  stopAcceptingRequestsAt: 0.95,
  /**
   * Open downstream connections per proxy, the default. Measured through the local rig
   * (1.40): ~52 KB of heap and ~65 KB of RSS per open WebSocket over ~70 MB at idle, so
   * 2000 fit the 256Mi container; raise it together with the memory limit.
   */
  maxDownstreamConnections: 2000,
} as const;

/** Client headers that would otherwise reach the backends unchanged (Envoy is the edge). */
export const REMOVED_CLIENT_HEADERS: readonly string[] = ['forwarded', 'x-forwarded-host'];

function overloadManager(maxConnections: number): OverloadManager {
  const heap = 'envoy.resource_monitors.fixed_heap';
  return {
    refresh_interval: '0.25s',
    resource_monitors: [
      {
        name: heap,
        typed_config: {
          '@type': TYPE_URLS.fixedHeap,
          max_heap_size_bytes: Math.floor(EDGE.memoryLimitMiB * 1024 * 1024 * EDGE.heapShareOfLimit),
        },
      },
      {
        name: 'envoy.resource_monitors.global_downstream_max_connections',
        typed_config: { '@type': TYPE_URLS.downstreamConnections, max_active_downstream_connections: maxConnections },
      },
    ],
    actions: [
      { name: 'envoy.overload_actions.shrink_heap', triggers: [{ name: heap, threshold: { value: EDGE.shrinkHeapAt } }] },
      {
        name: 'envoy.overload_actions.stop_accepting_requests',
        triggers: [{ name: heap, threshold: { value: EDGE.stopAcceptingRequestsAt } }],
      },
    ],
  };
}

/**
 * The envoy command line of a proxy (the pod's container args and the local rig's).
 * No hot restart: Kubernetes replaces pods instead, and the local rig runs several
 * Envoys on one machine, which would otherwise share its shared-memory region.
 */
export function envoyArgs(configFile: string, concurrency: number): string[] {
  return [
    '-c',
    configFile,
    '--concurrency',
    String(concurrency),
    '--disable-hot-restart',
    '--log-level',
    'info',
    // Envoy writes the lease log (and every access log file) this often (default 10 s):
    // a dropped WebSocket's slot is back that much sooner.
    '--file-flush-interval-msec',
    String(FILE_FLUSH_INTERVAL_MS),
  ];
}

/**
 * Where one proxy listens and finds its files. Kubernetes pods use POD_LAYOUT; the local
 * rig (tools/local) changes only these, so both run the same generated config.
 */
export interface EnvoyLayout {
  /** Address of the public and metrics listeners. */
  readonly listenAddress: string;
  readonly publicPort: number;
  readonly metricsPort: number;
  /** Port of the admin, which listens on 127.0.0.1 only. */
  readonly adminPort: number;
  /** Directory of filter.lua, metrics.lua and the other shipped Lua files. */
  readonly luaDir: string;
  /** WS_STATE_DIR of the proxy (the lease log is written there). */
  readonly stateDir: string;
}

export const POD_LAYOUT: EnvoyLayout = {
  listenAddress: '0.0.0.0',
  publicPort: PUBLIC_PORT,
  metricsPort: METRICS_PORT,
  adminPort: ADMIN_PORT,
  luaDir: LUA_DIR,
  stateDir: STATE_DIR,
};

export interface EnvoyBootstrapProps {
  /**
   * DNS name of the headless Service of the backend pods (STRICT_DNS resolves every pod),
   * or several names or IP addresses (the local rig's loopback backends), all on backendPort.
   */
  readonly backendHost: string | readonly string[];
  /** Container port of the backend pods. */
  readonly backendPort: number;
  /**
   * Path of the active HTTP health check on each backend pod.
   * @default '/'
   */
  readonly healthCheckPath?: string;
  /** Stream idle timeout: a WebSocket without traffic for this long is closed. */
  readonly idleTimeoutSeconds: number;
  /** Hard cap on a WebSocket's life (`max_stream_duration`). */
  readonly maxStreamDurationSeconds: number;
  /**
   * How often Envoy writes a lease log entry for each open WebSocket
   * (`access_log_flush_interval`): the agent renews the stream's lease on it.
   */
  readonly renewIntervalSeconds: number;
  /**
   * How long a backend may take to answer an upgrade (the route's response timeout, which
   * Envoy stops at the 101): a half-open upgrade holds its slot no longer.
   * @default 10
   */
  readonly handshakeTimeoutSeconds?: number;
  /**
   * Proxies in front that append to X-Forwarded-For (`xff_num_trusted_hops`): Envoy then
   * takes the client address that many entries from the right.
   * @default 0
   */
  readonly trustedHops?: number;
  /**
   * Expect a proxy protocol header (NLB with proxy protocol v2): required on the public
   * listener; optional on the metrics listener, because the NLB's health checks carry
   * the header while kubelet probes and Prometheus scrapes do not.
   * @default false
   */
  readonly proxyProtocol?: boolean;
  /**
   * Addresses, ports and paths of the proxy.
   * @default POD_LAYOUT
   */
  readonly layout?: EnvoyLayout;
  /**
   * Open downstream connections a proxy accepts on its public listener (the overload
   * manager's global limit; the metrics listener is exempt, so probes still answer).
   * @default EDGE.maxDownstreamConnections
   */
  readonly maxDownstreamConnections?: number;
}

const LUA_FILTER = 'envoy.filters.http.lua';
const ROUTER = { name: 'envoy.filters.http.router', typed_config: { '@type': TYPE_URLS.router } } as const;
const LUA_OFF: { [LUA_FILTER]: LuaPerRouteConfig } = {
  [LUA_FILTER]: { '@type': TYPE_URLS.luaPerRoute, disabled: true },
};
/**
 * The request log on stdout, one JSON object per stream: Envoy escapes every value, so a
 * client's `"` or control bytes in a header cannot forge or break a line (the default
 * text format quotes values without escaping them).
 */
const STDOUT_LOG: AccessLog = {
  name: 'envoy.access_loggers.stdout',
  // One line per stream, at its end: not the lease log's entries for open streams.
  filter: { log_type_filter: { types: ['DownstreamEnd'] } },
  typed_config: {
    '@type': TYPE_URLS.stdoutAccessLog,
    log_format: {
      json_format: {
        start_time: '%START_TIME%',
        method: '%REQ(:METHOD)%',
        // Without the query string: WebSocket clients often carry tokens there.
        path: '%PATH(NQ:ORIG_OR_PATH):256%',
        protocol: '%PROTOCOL%',
        status: '%RESPONSE_CODE%',
        response_flags: '%RESPONSE_FLAGS%',
        bytes_received: '%BYTES_RECEIVED%',
        bytes_sent: '%BYTES_SENT%',
        duration_ms: '%DURATION%',
        upstream_host: '%UPSTREAM_HOST%',
        client: '%DOWNSTREAM_REMOTE_ADDRESS%',
        x_forwarded_for: '%REQ(X-FORWARDED-FOR):256%',
        user_agent: '%REQ(USER-AGENT):256%',
        request_id: '%REQ(X-REQUEST-ID):64%',
        admission: '%RESPONSE_HEADER(X-WS-ADMISSION)%',
        pod: `%DYNAMIC_METADATA(${FILTER_METADATA_NAMESPACE}:pod)%`,
        connection_id: `%DYNAMIC_METADATA(${FILTER_METADATA_NAMESPACE}:connection_id)%`,
      },
    },
  },
};

/**
 * The lease log: Envoy's own record of every WebSocket stream whose lease the filter holds
 * (its metadata `lease` is "held"), one line per entry (lua/agent/lease_log.lua parses it):
 * at the 101 (`flush_log_on_tunnel_successfully_established`), every renew interval while
 * the stream is open (`access_log_flush_interval`, on every worker), and at its end, resets
 * included (how every upgraded HTTP/1.1 stream ends in Envoy, with no filter code running).
 * The agent renews a lease on each periodic entry and releases it at the end entry.
 * Streams whose lease the filter released itself (a non-101 answer) say "released" and are
 * not logged.
 */
function leaseLog(stateDir: string): AccessLog {
  const md = (key: string) => `%DYNAMIC_METADATA(${FILTER_METADATA_NAMESPACE}:${key})%`;
  const fields = [
    '%ACCESS_LOG_TYPE%',
    md('connection_id'),
    md('pod'),
    md('registered'),
    '%RESPONSE_CODE%',
    '%RESPONSE_FLAGS%',
    '%UPSTREAM_HOST%',
    // Start in ms since the epoch, and the ms since then: when the entry was written.
    '%START_TIME(%s%3f)%',
    '%DURATION%',
  ];
  return {
    name: 'envoy.access_loggers.file',
    filter: {
      metadata_filter: {
        matcher: {
          filter: FILTER_METADATA_NAMESPACE,
          path: [{ key: 'lease' }],
          value: { string_match: { exact: LEASE_HELD } },
        },
        match_if_key_not_found: false,
      },
    },
    typed_config: {
      '@type': TYPE_URLS.fileAccessLog,
      path: `${stateDir}/${LEASE_LOG_FILE}`,
      log_format: { text_format_source: { inline_string: `${fields.join(' ')}\n` } },
    },
  };
}

function seconds(n: number): Duration {
  if (!Number.isFinite(n) || n < 0) throw new Error(`a duration must be a non-negative number of seconds, got ${n}`);
  return `${n}s`;
}

function socket(address: string, port: number) {
  return { socket_address: { address, port_value: port } };
}

function publicListener(p: EnvoyBootstrapProps, l: EnvoyLayout): Listener {
  const idle = seconds(p.idleTimeoutSeconds);
  const maxStream = seconds(p.maxStreamDurationSeconds);
  const hcm: HttpConnectionManagerConfig = {
    '@type': TYPE_URLS.httpConnectionManager,
    stat_prefix: PUBLIC_LISTENER,
    codec_type: 'AUTO',
    // The NLB forwards TCP, so the peer is the client (proxy protocol) or the NLB itself;
    // either way Envoy is the edge: it sets X-Forwarded-For and trusts none it receives.
    use_remote_address: true,
    xff_num_trusted_hops: p.trustedHops ?? 0,
    // Only loopback is "internal". With NLB IP targets (no client IP preservation) the peer
    // is the NLB's private address, which Envoy's RFC 1918 notion of internal would trust:
    // client-sent x-envoy-* headers (retries, timeouts, ...) would then be honoured.
    internal_address_config: { unix_sockets: false, cidr_ranges: [{ address_prefix: '127.0.0.1', prefix_len: 32 }] },
    stream_idle_timeout: idle,
    // Headers must arrive promptly; a slowloris must not hold a worker's stream.
    request_timeout: '30s',
    request_headers_timeout: EDGE.requestHeadersTimeout,
    // Underscored names are dropped (not refused): no proxy behind can read `x_ws_pod` as
    // `x-ws-pod`, and a native client that sends one still connects.
    common_http_protocol_options: { idle_timeout: idle, max_stream_duration: maxStream, headers_with_underscores_action: 'DROP_HEADER' },
    http2_protocol_options: {
      max_concurrent_streams: EDGE.http2MaxConcurrentStreams,
      initial_stream_window_size: EDGE.http2InitialStreamWindowBytes,
      initial_connection_window_size: EDGE.http2InitialConnectionWindowBytes,
    },
    upgrade_configs: [{ upgrade_type: 'websocket' }],
    // Envoy's own replies (any response flag: the pinned host gone, a refused connection)
    // carry LOCAL_REPLY_HEADER, so the filter gives such an upgrade's rate budget back and
    // passes over its pod; a backend's own answer never does (removed below).
    local_reply_config: {
      mappers: [
        {
          filter: { response_flag_filter: {} },
          headers_to_add: [{ header: { key: LOCAL_REPLY_HEADER, value: '%RESPONSE_FLAGS%' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
        },
      ],
    },
    // The lease log's entries for open streams: at the 101 and every renew interval
    // (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/observability/access_logging,
    // "Periodic access logs"). The stdout log filters them out: one line per request there.
    access_log_options: {
      access_log_flush_interval: seconds(p.renewIntervalSeconds),
      flush_log_on_tunnel_successfully_established: true,
    },
    route_config: {
      name: PUBLIC_LISTENER,
      request_headers_to_remove: REMOVED_CLIENT_HEADERS,
      response_headers_to_remove: [LOCAL_REPLY_HEADER],
      virtual_hosts: [
        {
          name: BACKEND_CLUSTER,
          domains: ['*'],
          routes: [
            {
              match: { prefix: '/' },
              route: {
                cluster: BACKEND_CLUSTER,
                // The response timeout ends at the response headers (a 101 turns it off: the
                // WebSocket then lives until idle or max duration), so it bounds the handshake.
                timeout: seconds(p.handshakeTimeoutSeconds ?? 10),
                idle_timeout: idle,
                max_stream_duration: { max_stream_duration: maxStream },
              },
            },
          ],
        },
      ],
    },
    http_filters: [
      { name: LUA_FILTER, typed_config: { '@type': TYPE_URLS.lua, default_source_code: { filename: `${l.luaDir}/filter.lua` } } },
      ROUTER,
    ],
    access_log: [STDOUT_LOG, leaseLog(l.stateDir)],
  };
  return {
    name: PUBLIC_LISTENER,
    address: socket(l.listenAddress, l.publicPort),
    per_connection_buffer_limit_bytes: EDGE.bufferLimitBytes,
    // The NLB's proxy protocol header comes first on every connection it makes, so no client
    // behind it can name its own address. Optional so that turning nlbProxyProtocol on or
    // off is not an outage: the NLB's target group and the Envoy pods change at different
    // moments, and a connection without the header is served with its peer's address.
    ...(p.proxyProtocol ? { listener_filters: [proxyProtocolFilter(true)] } : {}),
    filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: hcm }] }],
  };
}

function proxyProtocolFilter(optional: boolean): ListenerFilter {
  return {
    name: 'envoy.filters.listener.proxy_protocol',
    typed_config: {
      '@type': TYPE_URLS.proxyProtocol,
      ...(optional ? { allow_requests_without_proxy_protocol: true } : {}),
    },
  };
}

/**
 * What one proxy serves of /metrics and /stats/prometheus, each: a token bucket shared by
 * its workers (Envoy's local_ratelimit, before the Lua filter), so a flood of scrapes costs
 * a bounded amount of worker time whatever its rate, and the excess gets a 429 from C++
 * code. Prometheus scrapes a target once per interval (15-60 s); this leaves room for
 * several Prometheus replicas and a person with curl. The probes (/ready, /live) are not
 * limited.
 */
export const METRICS_SCRAPE_LIMIT = { perSecond: 10, burst: 20 } as const;
const SCRAPE_RATE_LIMIT = 'envoy.filters.http.local_ratelimit';

function scrapeLimit(statPrefix: string): LocalRateLimitConfig {
  const all = { default_value: { numerator: 100, denominator: 'HUNDRED' as const } };
  return {
    '@type': TYPE_URLS.localRateLimit,
    stat_prefix: statPrefix,
    token_bucket: { max_tokens: METRICS_SCRAPE_LIMIT.burst, tokens_per_fill: METRICS_SCRAPE_LIMIT.perSecond, fill_interval: '1s' },
    filter_enabled: all,
    filter_enforced: all,
    response_headers_to_add: [{ header: { key: 'retry-after', value: '1' } }],
  };
}

function metricsListener(p: EnvoyBootstrapProps, l: EnvoyLayout): Listener {
  const hcm: HttpConnectionManagerConfig = {
    '@type': TYPE_URLS.httpConnectionManager,
    stat_prefix: METRICS_LISTENER,
    codec_type: 'AUTO',
    request_timeout: '10s',
    route_config: {
      name: METRICS_LISTENER,
      virtual_hosts: [
        {
          name: METRICS_LISTENER,
          domains: ['*'],
          routes: [
            {
              // metrics.lua answers this itself (respond); reaching the router means it did not.
              name: 'metrics',
              match: { path: METRICS_PATH },
              direct_response: { status: 503, body: { inline_string: 'metrics filter did not answer\n' } },
              typed_per_filter_config: { [SCRAPE_RATE_LIMIT]: scrapeLimit('metrics_scrapes') },
            },
            {
              name: 'envoy_stats',
              match: { path: '/stats/prometheus' },
              route: { cluster: ADMIN_CLUSTER, timeout: '10s' },
              typed_per_filter_config: { ...LUA_OFF, [SCRAPE_RATE_LIMIT]: scrapeLimit('envoy_stats_scrapes') },
            },
            ...[READY_PATH, LIVE_PATH].map((path): Route => ({
              // metrics.lua answers GET/HEAD itself (ready.lua: admin's /ready, and for /ready
              // the agent's heartbeat). The route to admin /ready stays for what it passes on
              // (other methods, or a metrics.lua that failed), so the probes never depend on
              // the Lua filter.
              name: path.slice(1),
              match: { path },
              route: { cluster: ADMIN_CLUSTER, timeout: '2s', ...(path === LIVE_PATH ? { prefix_rewrite: READY_PATH } : {}) },
            })),
            {
              name: 'not_found',
              match: { prefix: '/' },
              direct_response: { status: 404 },
              typed_per_filter_config: LUA_OFF,
            },
          ],
        },
      ],
    },
    http_filters: [
      // No bucket here: only the routes above that carry one are limited.
      { name: SCRAPE_RATE_LIMIT, typed_config: { '@type': TYPE_URLS.localRateLimit, stat_prefix: 'scrapes' } },
      { name: LUA_FILTER, typed_config: { '@type': TYPE_URLS.lua, default_source_code: { filename: `${l.luaDir}/metrics.lua` } } },
      ROUTER,
    ],
  };
  return {
    name: METRICS_LISTENER,
    address: socket(l.listenAddress, l.metricsPort),
    per_connection_buffer_limit_bytes: EDGE.bufferLimitBytes,
    // Probes and scrapes must answer even when the public listener is at its limit.
    ignore_global_conn_limit: true,
    // ... and under memory pressure: the overload manager's 503s must not fail the
    // liveness probe (a restart would drop every WebSocket of the proxy).
    bypass_overload_manager: true,
    ...(p.proxyProtocol ? { listener_filters: [proxyProtocolFilter(true)] } : {}),
    filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: hcm }] }],
  };
}

function backendCluster(p: EnvoyBootstrapProps, maxConnections: number): Cluster {
  return {
    name: BACKEND_CLUSTER,
    // STRICT_DNS on a headless Service: one host per ready backend pod, named ip:port.
    type: 'STRICT_DNS',
    connect_timeout: '2s',
    lb_policy: 'LEAST_REQUEST',
    dns_lookup_family: 'V4_ONLY',
    dns_refresh_rate: '5s',
    respect_dns_ttl: false,
    // A pod that left the Service must leave the host list now, not when it fails a check.
    ignore_health_on_host_removal: true,
    // A new pod waits for its first passing check before the agent reports it healthy.
    // The override may pick a host whose check failed a moment ago (UNHEALTHY, DRAINING):
    // Redis chose it from the agent's report of at most a second before, and a pod that
    // fails its check is usually still serving (NotReady during its grace period). If it
    // is really gone the connect fails, and that pod is passed over by every proxy (F).
    common_lb_config: {
      ignore_new_hosts_until_first_hc: true,
      override_host_status: { statuses: ['UNKNOWN', 'HEALTHY', 'DEGRADED', 'UNHEALTHY', 'DRAINING'] },
    },
    per_connection_buffer_limit_bytes: EDGE.bufferLimitBytes,
    // Envoy's default circuit breakers (1024 connections / requests per cluster) would cap
    // a proxy at 1024 WebSockets and queue the rest until request_timeout, leases held.
    circuit_breakers: { thresholds: [{ max_connections: maxConnections, max_requests: maxConnections }] },
    health_checks: [
      {
        timeout: seconds(BACKEND_HEALTH_CHECK.timeoutSeconds),
        interval: seconds(BACKEND_HEALTH_CHECK.intervalSeconds),
        no_traffic_interval: seconds(BACKEND_HEALTH_CHECK.intervalSeconds),
        unhealthy_threshold: BACKEND_HEALTH_CHECK.unhealthyThreshold,
        healthy_threshold: 1,
        http_health_check: { path: p.healthCheckPath ?? '/' },
      },
    ],
    load_assignment: {
      cluster_name: BACKEND_CLUSTER,
      endpoints: [{ lb_endpoints: backendHosts(p).map((h) => ({ endpoint: { address: socket(h, p.backendPort) } })) }],
    },
  };
}

function backendHosts(p: EnvoyBootstrapProps): readonly string[] {
  return typeof p.backendHost === 'string' ? [p.backendHost] : p.backendHost;
}

function adminCluster(l: EnvoyLayout): Cluster {
  return {
    name: ADMIN_CLUSTER,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: ADMIN_CLUSTER,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: socket(ADMIN_ADDRESS, l.adminPort) } }] }],
    },
  };
}

/** The whole Envoy bootstrap of one proxy. */
export function buildEnvoyBootstrap(p: EnvoyBootstrapProps): Bootstrap {
  const hosts = backendHosts(p);
  if (hosts.length === 0) throw new Error("backendHost must name at least one host, got []; pass the headless Service's FQDN");
  for (const h of hosts) {
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(h)) {
      throw new Error(`backendHost must be a DNS name, got ${JSON.stringify(h)}; pass the headless Service's FQDN`);
    }
  }
  const layout = p.layout ?? POD_LAYOUT;
  const maxConnections = p.maxDownstreamConnections ?? EDGE.maxDownstreamConnections;
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 1) {
    throw new Error(`maxDownstreamConnections must be a positive integer, got ${maxConnections}`);
  }
  if (!Number.isInteger(p.backendPort) || p.backendPort < 1 || p.backendPort > 65535) {
    throw new Error(`backendPort must be an integer between 1 and 65535, got ${p.backendPort}`);
  }
  return {
    // Admin answers on loopback only: it can change runtime state and must never be public.
    // Not under the connection limit: metrics.lua's calls to it must work at the limit too.
    admin: { address: socket(ADMIN_ADDRESS, layout.adminPort), ignore_global_conn_limit: true },
    overload_manager: overloadManager(maxConnections),
    static_resources: {
      listeners: [publicListener(p, layout), metricsListener(p, layout)],
      clusters: [backendCluster(p, maxConnections), adminCluster(layout)],
    },
  };
}
