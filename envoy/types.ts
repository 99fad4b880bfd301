/**
 * The subset of the Envoy v3 API the stack writes, as TypeScript types.
 * Field names are the proto field names (snake_case) so the objects serialise 1:1.
 *
 * @see https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/bootstrap/v3/bootstrap.proto
 */

/** A protobuf Duration in its JSON/YAML form, e.g. `"300s"`, `"0.250s"`. */
export type Duration = `${number}s`;

export const TYPE_URLS = {
  httpConnectionManager: 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  lua: 'type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua',
  luaPerRoute: 'type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute',
  router: 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
  proxyProtocol: 'type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol',
  stdoutAccessLog: 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog',
  fileAccessLog: 'type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog',
  fixedHeap: 'type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig',
  downstreamConnections: 'type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig',
  localRateLimit: 'type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit',
} as const;

/** config.core.v3.SocketAddress */
export interface SocketAddress {
  readonly address: string;
  readonly port_value: number;
  readonly protocol?: 'TCP' | 'UDP';
}

/** config.core.v3.Address */
export interface Address {
  readonly socket_address: SocketAddress;
}

/** config.core.v3.DataSource (only the file form). */
export interface DataSource {
  readonly filename: string;
}

/** extensions.filters.http.lua.v3.Lua */
export interface LuaFilterConfig {
  readonly '@type': typeof TYPE_URLS.lua;
  readonly default_source_code: DataSource;
  readonly stat_prefix?: string;
}

/** extensions.filters.http.lua.v3.LuaPerRoute */
export interface LuaPerRouteConfig {
  readonly '@type': typeof TYPE_URLS.luaPerRoute;
  readonly disabled: true;
}

/** type.v3.TokenBucket */
export interface TokenBucket {
  readonly max_tokens: number;
  readonly tokens_per_fill: number;
  readonly fill_interval: Duration;
}

/** config.core.v3.RuntimeFractionalPercent (a constant share, no runtime key). */
export interface FractionalPercent {
  readonly default_value: { readonly numerator: number; readonly denominator: 'HUNDRED' };
}

/** extensions.filters.http.local_ratelimit.v3.LocalRateLimit: no bucket at the filter level, one per route. */
export interface LocalRateLimitConfig {
  readonly '@type': typeof TYPE_URLS.localRateLimit;
  readonly stat_prefix: string;
  readonly token_bucket?: TokenBucket;
  readonly filter_enabled?: FractionalPercent;
  readonly filter_enforced?: FractionalPercent;
  readonly response_headers_to_add?: readonly { readonly header: { readonly key: string; readonly value: string } }[];
}

/** extensions.filters.http.router.v3.Router */
export interface RouterConfig {
  readonly '@type': typeof TYPE_URLS.router;
}

/** extensions.filters.network.http_connection_manager.v3.HttpFilter */
export type HttpFilter =
  | { readonly name: 'envoy.filters.http.lua'; readonly typed_config: LuaFilterConfig }
  | { readonly name: 'envoy.filters.http.local_ratelimit'; readonly typed_config: LocalRateLimitConfig }
  | { readonly name: 'envoy.filters.http.router'; readonly typed_config: RouterConfig };

/** config.route.v3.RouteMatch (prefix or exact path). */
export type RouteMatch = { readonly prefix: string } | { readonly path: string };

/** config.route.v3.RouteAction.MaxStreamDuration */
export interface MaxStreamDuration {
  readonly max_stream_duration: Duration;
}

/** config.route.v3.RouteAction */
export interface RouteAction {
  readonly cluster: string;
  /** Upstream response timeout; `0s` disables it (needed for long-lived WebSockets). */
  readonly timeout?: Duration;
  /** Per-route stream idle timeout (overrides the HCM's `stream_idle_timeout`). */
  readonly idle_timeout?: Duration;
  readonly max_stream_duration?: MaxStreamDuration;
  /** Replaces the matched prefix of the path upstream. */
  readonly prefix_rewrite?: string;
}

/** config.route.v3.DirectResponseAction */
export interface DirectResponseAction {
  readonly status: number;
  readonly body?: { readonly inline_string: string };
}

/** config.route.v3.Route */
export type Route = {
  readonly name?: string;
  readonly match: RouteMatch;
  readonly typed_per_filter_config?: { readonly [filterName: string]: LuaPerRouteConfig | LocalRateLimitConfig };
} & ({ readonly route: RouteAction } | { readonly direct_response: DirectResponseAction });

/** config.route.v3.VirtualHost */
export interface VirtualHost {
  readonly name: string;
  readonly domains: readonly string[];
  readonly routes: readonly Route[];
}

/** config.route.v3.RouteConfiguration */
export interface RouteConfiguration {
  readonly name: string;
  readonly virtual_hosts: readonly VirtualHost[];
  /** Request headers removed before the request goes upstream. */
  readonly request_headers_to_remove?: readonly string[];
  /** Response headers removed from every routed response (before the local reply mappers run on a local reply). */
  readonly response_headers_to_remove?: readonly string[];
}

/**
 * HttpConnectionManager.LocalReplyConfig: changes to the replies Envoy makes itself; the
 * first mapper whose filter matches applies, before the encoder filters see the reply.
 * @see https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/local_reply
 */
export interface LocalReplyConfig {
  readonly mappers: ReadonlyArray<{
    /** config.accesslog.v3.ResponseFlagFilter: no flags listed = any response flag. */
    readonly filter: { readonly response_flag_filter: { readonly flags?: readonly string[] } };
    readonly headers_to_add: ReadonlyArray<{
      readonly header: { readonly key: string; readonly value: string };
      readonly append_action: 'OVERWRITE_IF_EXISTS_OR_ADD';
    }>;
  }>;
}

/** HttpConnectionManager.UpgradeConfig */
export interface UpgradeConfig {
  readonly upgrade_type: 'websocket';
}

/** config.core.v3.HttpProtocolOptions */
export interface HttpProtocolOptions {
  /** Connection idle timeout (no active streams). */
  readonly idle_timeout?: Duration;
  readonly max_stream_duration?: Duration;
  /** What to do with a header whose name has an underscore (ambiguous with "-" behind some proxies). */
  readonly headers_with_underscores_action?: 'ALLOW' | 'REJECT_REQUEST' | 'DROP_HEADER';
}

/** config.accesslog.v3.MetadataFilter (dynamic metadata matched by a MetadataMatcher) */
export interface MetadataAccessLogFilter {
  readonly metadata_filter: {
    readonly matcher: {
      readonly filter: string;
      readonly path: ReadonlyArray<{ readonly key: string }>;
      readonly value: { readonly string_match: { readonly exact: string } };
    };
    /** Log when the key is absent (Envoy's default: true). */
    readonly match_if_key_not_found?: boolean;
  };
}

/**
 * config.accesslog.v3.LogTypeFilter: only entries of these types (%ACCESS_LOG_TYPE%).
 * @see https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/accesslog/v3/accesslog.proto
 */
export interface LogTypeAccessLogFilter {
  readonly log_type_filter: {
    readonly types: readonly ('DownstreamEnd' | 'DownstreamPeriodic' | 'DownstreamTunnelSuccessfullyEstablished')[];
  };
}

/**
 * HttpConnectionManager.HcmAccessLogOptions: access log entries before a stream ends.
 * @see https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto
 */
export interface HcmAccessLogOptions {
  /** An entry for every open stream this often. */
  readonly access_log_flush_interval?: Duration;
  /** An entry when an upgrade or CONNECT tunnel is established (the 101). */
  readonly flush_log_on_tunnel_successfully_established?: boolean;
}

/** config.accesslog.v3.AccessLog: stdout (extensions.access_loggers.stream.v3) or a file (file.v3). */
export type AccessLog =
  | {
      readonly name: 'envoy.access_loggers.stdout';
      readonly filter?: LogTypeAccessLogFilter;
      readonly typed_config: {
        readonly '@type': typeof TYPE_URLS.stdoutAccessLog;
        /** config.core.v3.SubstitutionFormatString in its JSON form. */
        readonly log_format?: { readonly json_format: { readonly [field: string]: string } };
      };
    }
  | {
      readonly name: 'envoy.access_loggers.file';
      readonly filter?: MetadataAccessLogFilter;
      readonly typed_config: {
        readonly '@type': typeof TYPE_URLS.fileAccessLog;
        readonly path: string;
        readonly log_format: { readonly text_format_source: { readonly inline_string: string } };
      };
    };

/** extensions.filters.network.http_connection_manager.v3.HttpConnectionManager */
export interface HttpConnectionManagerConfig {
  readonly '@type': typeof TYPE_URLS.httpConnectionManager;
  readonly stat_prefix: string;
  readonly codec_type: 'AUTO' | 'HTTP1' | 'HTTP2';
  readonly use_remote_address?: boolean;
  readonly xff_num_trusted_hops?: number;
  readonly internal_address_config?: InternalAddressConfig;
  readonly skip_xff_append?: boolean;
  readonly stream_idle_timeout?: Duration;
  readonly request_timeout?: Duration;
  readonly common_http_protocol_options?: HttpProtocolOptions;
  readonly http2_protocol_options?: Http2ProtocolOptions;
  /** Time to receive a request's headers. */
  readonly request_headers_timeout?: Duration;
  readonly upgrade_configs?: readonly UpgradeConfig[];
  readonly local_reply_config?: LocalReplyConfig;
  readonly access_log_options?: HcmAccessLogOptions;
  readonly route_config: RouteConfiguration;
  readonly http_filters: readonly HttpFilter[];
  readonly access_log?: readonly AccessLog[];
}

/**
 * HttpConnectionManager.InternalAddressConfig: which downstream addresses make a request
 * "internal" (internal requests keep their `x-envoy-*` headers).
 * @see https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/header_sanitizing
 */
export interface InternalAddressConfig {
  readonly unix_sockets?: boolean;
  readonly cidr_ranges?: readonly CidrRange[];
}

/** config.core.v3.CidrRange */
export interface CidrRange {
  readonly address_prefix: string;
  readonly prefix_len: number;
}

/** config.listener.v3.Filter (network filter) */
export interface NetworkFilter {
  readonly name: 'envoy.filters.network.http_connection_manager';
  readonly typed_config: HttpConnectionManagerConfig;
}

/** config.listener.v3.ListenerFilter */
export interface ListenerFilter {
  readonly name: 'envoy.filters.listener.proxy_protocol';
  readonly typed_config: {
    readonly '@type': typeof TYPE_URLS.proxyProtocol;
    /** Also accept connections without the header (against the standard). */
    readonly allow_requests_without_proxy_protocol?: boolean;
  };
}

/** config.listener.v3.FilterChain */
export interface FilterChain {
  readonly filters: readonly NetworkFilter[];
}

/** config.listener.v3.Listener */
export interface Listener {
  readonly name: string;
  readonly address: Address;
  /** Read/write buffer of each connection (flow control beyond it). */
  readonly per_connection_buffer_limit_bytes?: number;
  /** Not counted against (nor refused by) the global downstream connection limit. */
  readonly ignore_global_conn_limit?: boolean;
  /** Not subject to the overload manager's actions. */
  readonly bypass_overload_manager?: boolean;
  readonly listener_filters?: readonly ListenerFilter[];
  readonly filter_chains: readonly FilterChain[];
}

/** config.overload.v3.OverloadManager (the monitors and actions the stack uses). */
export interface OverloadManager {
  readonly refresh_interval: Duration;
  readonly resource_monitors: ReadonlyArray<
    | {
        readonly name: 'envoy.resource_monitors.fixed_heap';
        readonly typed_config: { readonly '@type': typeof TYPE_URLS.fixedHeap; readonly max_heap_size_bytes: number };
      }
    | {
        readonly name: 'envoy.resource_monitors.global_downstream_max_connections';
        readonly typed_config: {
          readonly '@type': typeof TYPE_URLS.downstreamConnections;
          readonly max_active_downstream_connections: number;
        };
      }
  >;
  readonly actions: ReadonlyArray<{
    readonly name: 'envoy.overload_actions.shrink_heap' | 'envoy.overload_actions.stop_accepting_requests';
    readonly triggers: ReadonlyArray<{ readonly name: string; readonly threshold: { readonly value: number } }>;
  }>;
}

/** config.core.v3.Http2ProtocolOptions (flow-control and concurrency bounds). */
export interface Http2ProtocolOptions {
  readonly max_concurrent_streams: number;
  readonly initial_stream_window_size: number;
  readonly initial_connection_window_size: number;
}

/** config.core.v3.HealthCheck (HTTP only) */
export interface HealthCheck {
  readonly timeout: Duration;
  readonly interval: Duration;
  readonly unhealthy_threshold: number;
  readonly healthy_threshold: number;
  readonly no_traffic_interval?: Duration;
  readonly http_health_check: { readonly path: string };
}

/** config.endpoint.v3.ClusterLoadAssignment */
export interface ClusterLoadAssignment {
  readonly cluster_name: string;
  readonly endpoints: ReadonlyArray<{
    readonly lb_endpoints: ReadonlyArray<{ readonly endpoint: { readonly address: Address } }>;
  }>;
}

/** config.cluster.v3.Cluster */
export interface Cluster {
  readonly name: string;
  readonly type: 'STATIC' | 'STRICT_DNS' | 'LOGICAL_DNS';
  readonly connect_timeout: Duration;
  readonly lb_policy?: 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'RANDOM';
  readonly dns_lookup_family?: 'V4_ONLY' | 'V6_ONLY' | 'AUTO' | 'V4_PREFERRED' | 'ALL';
  readonly dns_refresh_rate?: Duration;
  readonly respect_dns_ttl?: boolean;
  /** Remove a host gone from DNS at once, even while it still passes health checks. */
  readonly ignore_health_on_host_removal?: boolean;
  readonly common_lb_config?: {
    /** New hosts take no traffic until their first health check passed. */
    readonly ignore_new_hosts_until_first_hc?: boolean;
    /**
     * The health states a host may be in for a filter's override (setUpstreamOverrideHost)
     * to pick it (Envoy's default: UNKNOWN, HEALTHY, DEGRADED).
     */
    readonly override_host_status?: {
      readonly statuses: readonly ('UNKNOWN' | 'HEALTHY' | 'UNHEALTHY' | 'DRAINING' | 'TIMEOUT' | 'DEGRADED')[];
    };
  };
  readonly health_checks?: readonly HealthCheck[];
  /** Read/write buffer of each upstream connection. */
  readonly per_connection_buffer_limit_bytes?: number;
  readonly circuit_breakers?: { readonly thresholds: ReadonlyArray<{ readonly max_connections: number; readonly max_requests: number }> };
  readonly load_assignment: ClusterLoadAssignment;
}

/** config.bootstrap.v3.Admin */
export interface Admin {
  readonly address: Address;
  readonly ignore_global_conn_limit?: boolean;
  readonly access_log?: readonly AccessLog[];
}

/** config.bootstrap.v3.Bootstrap (static resources only) */
export interface Bootstrap {
  readonly admin: Admin;
  readonly overload_manager?: OverloadManager;
  readonly static_resources: {
    readonly listeners: readonly Listener[];
    readonly clusters: readonly Cluster[];
  };
}
