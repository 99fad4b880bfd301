import { LEASE_LOG_FILE, PUBLIC_LISTENER, buildEnvoyBootstrap } from '../../../envoy/bootstrap';

/**
 * What the filter's envoy_on_response sees of a routed request's answer, read from the
 * stack's own bootstrap (so a change there shows up here):
 *  - a backend's answer, less the route's `response_headers_to_remove`;
 *  - Envoy's router answering itself (no backend reached): its 503 and body, plus the
 *    headers of the first `local_reply_config` mapper that matches. Recorded from Envoy
 *    1.40 (a Lua filter listing the response headers): `:status 503, content-length,
 *    content-type text/plain`, no header of the router's own.
 * (The router's own x-envoy-upstream-service-time is the driver's: driver.lua ops.response.)
 *
 * UH: no healthy upstream (the strictly pinned host is no longer in the cluster).
 * UF: upstream connection failure (the pinned host refused or timed out the connection).
 */
export type LocalReplyFlag = 'UH' | 'UF';

const BODIES: Record<LocalReplyFlag, string> = {
  UH: 'no healthy upstream',
  UF: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure',
};

interface Mapper {
  filter?: { response_flag_filter?: { flags?: string[] } };
  headers_to_add?: Array<{ header: { key: string; value: string } }>;
}

/** The public listener's connection manager in the stack's bootstrap. */
function publicHcm(): any {
  const b: any = buildEnvoyBootstrap({
    backendHost: 'backend',
    backendPort: 8080,
    idleTimeoutSeconds: 60,
    maxStreamDurationSeconds: 3600,
    renewIntervalSeconds: 5,
  });
  const listener = b.static_resources.listeners.find((l: any) => l.name === PUBLIC_LISTENER);
  return listener.filter_chains[0].filters[0].typed_config;
}

/** A backend's answer as the filter sees it: the route's response_headers_to_remove applied. */
export function backendAnswer(headers: Array<[string, string]>): Array<[string, string]> {
  const removed = new Set<string>(((publicHcm().route_config.response_headers_to_remove ?? []) as string[]).map((h) => h.toLowerCase()));
  return headers.filter(([k]) => !removed.has(k.toLowerCase()));
}

/** The response headers of Envoy's local reply with response flag `flag`. */
export function envoyLocalReply(flag: LocalReplyFlag): Array<[string, string]> {
  const body = BODIES[flag];
  const headers: Array<[string, string]> = [
    [':status', '503'],
    ['content-length', String(body.length)],
    ['content-type', 'text/plain'],
  ];
  // LocalReply::rewrite runs before the encoder filters (source: filter_manager.cc
  // sendLocalReplyViaFilterChain): the first mapper whose filter matches adds its headers.
  for (const m of (publicHcm().local_reply_config?.mappers ?? []) as Mapper[]) {
    const f = m.filter?.response_flag_filter;
    if (!f || (f.flags && f.flags.length > 0 && !f.flags.includes(flag))) continue;
    for (const h of m.headers_to_add ?? []) headers.push([h.header.key.toLowerCase(), h.header.value.replace(/%RESPONSE_FLAGS%/g, flag)]);
    break;
  }
  return headers;
}

/**
 * Whether the stack's lease log writes entries for a stream with this dynamic metadata: its
 * `metadata_filter` (namespace, key path, exact value) applied as Envoy applies it.
 */
export function leaseLogged(metadata: Record<string, Record<string, unknown>> | undefined): boolean {
  const log = publicHcm().access_log.find((a: any) => a.typed_config.path?.endsWith(`/${LEASE_LOG_FILE}`));
  const { matcher, match_if_key_not_found: ifMissing } = log.filter.metadata_filter;
  let value: unknown = metadata?.[matcher.filter];
  for (const { key } of matcher.path as Array<{ key: string }>) value = (value as Record<string, unknown> | undefined)?.[key];
  return value === undefined ? ifMissing : value === matcher.value.string_match.exact;
}
