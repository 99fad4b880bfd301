// The local rig runs the stack's own generated config: this pins that it differs from
// a pod's only in addresses, ports, paths (and the backend endpoints it points at).
import { parse } from 'yaml';
import { loadConfig } from '../../../config/load';
import { ENVOY_YAML_KEY } from '../../../constructs/filter-config';
import { DEFAULT_BASE_PORT, localLayout, localRedis, proxyName, renderLocalFiles } from '../../../tools/rig/rig';
import { byName, synth, unescapeTemplate } from '../../support/synth';

type Json = any;

/** Paths (a.b[0].c) of every leaf that differs between two JSON values. */
function diffPaths(a: Json, b: Json, at = ''): string[] {
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return a === b ? [] : [at];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) => diffPaths(a[k], b[k], Array.isArray(a) ? `${at}[${k}]` : at ? `${at}.${k}` : k));
}

describe('the local rig', () => {
  const config = loadConfig({ env: {} });
  const pod = parse(unescapeTemplate(byName(synth({}, []).json, 'kubernetes_config_map_v1', 'ws-envoy-config').data[ENVOY_YAML_KEY]));
  const files = renderLocalFiles({ config, backends: 1 }, '/tmp/rig');
  const local = parse(files.envoyYaml[0]);

  it("differs from a pod's envoy.yaml only in addresses, ports, paths and the backend endpoint", () => {
    const L = 'static_resources.listeners';
    const HCM = 'filter_chains[0].filters[0].typed_config';
    expect(diffPaths(pod, local).sort()).toEqual(
      [
        'admin.address.socket_address.port_value',
        `${L}[0].address.socket_address.address`,
        `${L}[0].address.socket_address.port_value`,
        `${L}[0].${HCM}.access_log[1].typed_config.path`,
        `${L}[0].${HCM}.http_filters[0].typed_config.default_source_code.filename`,
        `${L}[1].address.socket_address.address`,
        `${L}[1].address.socket_address.port_value`,
        `${L}[1].${HCM}.http_filters[1].typed_config.default_source_code.filename`,
        'static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address',
        'static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value',
        'static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value',
      ].sort(),
    );
  });

  it("writes settings.lua from the same config, with only Redis' address and password file its own", () => {
    const settings = files.lua.get('settings.lua')!;
    expect(settings).toContain('redis_host = "127.0.0.1",');
    expect(settings).toContain(`redis_port = ${DEFAULT_BASE_PORT},`);
    expect(settings).toContain(`redis_password_file = "${localRedis(DEFAULT_BASE_PORT, '/tmp/rig').passwordFile}",`);
    expect(settings).toContain(`max_connections_per_pod = ${config.maxConnectionsPerPod},`);
    expect(settings).toContain(`lease_ttl_ms = ${config.leaseTtlSeconds * 1000},`);
    // The pod's Lua files (the filter, the agent and its modules, the drain), not the Redis
    // library: the rig's administrator loads that into Redis, as the Redis pod's loader does.
    for (const f of ['filter.lua', 'metrics.lua', 'agent.lua', 'lease_log.lua', 'streams.lua', 'drain.lua'])
      expect(files.lua.has(f)).toBe(true);
    expect(files.lua.has('ws_admission.lua')).toBe(false);
    expect(settings).toContain(`renew_interval_ms = ${config.renewIntervalSeconds * 1000},`);
  });

  it('takes settings overrides (tests: a faster metrics snapshot)', () => {
    const fast = renderLocalFiles({ config, settingsOverrides: { metrics_snapshot_ms: 200 } }, '/tmp/rig');
    expect(fast.lua.get('settings.lua')).toContain('metrics_snapshot_ms = 200,');
  });

  it('lays proxies out on distinct ports and state folders, and refuses an unknown settings override', () => {
    const a = localLayout(DEFAULT_BASE_PORT, 0, '/w');
    const b = localLayout(DEFAULT_BASE_PORT, 1, '/w');
    expect([a.publicPort, a.metricsPort, a.adminPort, b.publicPort]).toEqual([10010, 10011, 10012, 10013]);
    expect(a.stateDir).not.toBe(b.stateDir);
    expect(proxyName(1)).toBe('envoy-1');
    expect(() => renderLocalFiles({ config, settingsOverrides: { no_such_field: 1 } }, '/tmp/rig')).toThrow(
      'settingsOverrides: no_such_field is not a settings.lua field',
    );
  });
});
