/**
 * Upgrade throughput through real Envoy, one worker each, side by side in one run:
 *   (a) Envoy without the admission filter (the same generated config, the Lua filter and
 *       the lease log taken out);
 *   (b) the stack's own config (the admission filter, Redis with the production ACL);
 *   (c) Envoy's standard global rate limiting: the `envoy.filters.http.ratelimit` filter
 *       and the envoyproxy/ratelimit service (Go, built from the Go module proxy by
 *       commit, cached outside the repository) on its own redis-server.
 * Ours does more than (c) (the per-pod limit, the lease), in one FCALL ws_admit per
 * upgrade on the worker; the pods are registered by the proxy's agent (ws_hosts). Limits
 * are set so nothing is refused: the cost of deciding, not of refusing, is measured. Then (b) again with
 * LARGE_FLEET healthy backends instead of 3 (its own rig): the admission's cost must not
 * grow with the fleet (issue 9), so its rate is given as a ratio of (b)'s. Last, a refusal
 * flood (every pod full) with the worker's capacity cache on (250 ms) and off: its gain.
 *
 * Load: CLIENTS loops, each a fresh TCP connection per upgrade (request written at once,
 * timed to the end of the 101's headers, then dropped), for SECONDS per variant. Reported:
 * upgrades/s, p50/p99 latency (ms), CPU seconds of Envoy (and of Redis / the ratelimit
 * service), each variant's rate as a ratio of (a)'s.
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { stringify } from 'yaml';
import { loadConfig } from '../config/load';
import { LocalRig, localLayout } from '../tools/rig/rig';
import { cpuSeconds, pidOfRedis, ONE_CLIENT } from './measure';
import { RigVariants, publicHcm, withoutAdmission } from './variants';
import { UPGRADE, untilUpgraded, upgradeOnce } from './ws';

const CLIENTS = 8;
const SECONDS = 5;
const BASE = 24300;
const LARGE_FLEET = 1000;
/** envoyproxy/ratelimit by commit (the Go module proxy serves no tagged version). */
export const RATELIMIT = { module: 'github.com/envoyproxy/ratelimit/src/service_cmd', version: 'v1.4.1-0.20260122083618-3fb702589d36' };
const TOOLS = process.env.WS_BENCH_TOOLS || '/var/cache/ws-bench-tools';

function ratelimitBinary(): string {
  const bin = path.join(TOOLS, `ratelimit-${RATELIMIT.version}`);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(TOOLS, { recursive: true });
  const gobin = fs.mkdtempSync(path.join(os.tmpdir(), 'rl-'));
  const r = spawnSync('nice', ['-n', '10', 'go', 'install', `${RATELIMIT.module}@${RATELIMIT.version}`], {
    env: { ...process.env, GOBIN: gobin, GOFLAGS: '-mod=mod' },
    encoding: 'utf8',
    timeout: 20 * 60_000,
  });
  if (r.status !== 0) throw new Error(`building envoyproxy/ratelimit failed: ${r.stderr.slice(-2000)}`);
  fs.renameSync(path.join(gobin, 'service_cmd'), bin);
  return bin;
}

async function load(port: number, pids: Array<number | undefined>, want = 101): Promise<Record<string, number>> {
  const cpu0 = pids.map(cpuSeconds);
  const end = Date.now() + SECONDS * 1000;
  const lat: number[] = [];
  let ok = 0;
  let other = 0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (Date.now() < end) {
        const r = await upgradeOnce(port);
        if (r.status === want) {
          ok++;
          lat.push(r.ms);
        } else other++;
      }
    }),
  );
  lat.sort((a, b) => a - b);
  const cpu = pids.map((p, i) => Math.round((cpuSeconds(p) - cpu0[i]) * 100) / 100);
  return {
    upgradesPerSecond: Math.round(ok / SECONDS),
    notUpgraded: other,
    p50Ms: Math.round(lat[Math.floor(lat.length / 2)] * 100) / 100,
    p99Ms: Math.round(lat[Math.floor(lat.length * 0.99)] * 100) / 100,
    envoyCpuSeconds: cpu[0],
    sideCpuSeconds: cpu[1] ?? NaN,
  };
}

/**
 * A refusal flood: every pod full (3 pods, 1 connection each, held open), upgrades answered
 * 503 as fast as they come, with the worker's capacity cache (capacityCacheMs) at `cacheMs`.
 * What the cache buys is the ratio of the two runs.
 */
async function refusalFlood(cacheMs: number, basePort: number): Promise<Record<string, number>> {
  const config = loadConfig({
    env: {},
    overrides: {
      ...ONE_CLIENT,
      maxConnectionsPerPod: 1,
      rateLimitPerMinute: 100_000_000,
      envoyMaxConnections: 50_000,
      capacityCacheMs: cacheMs,
    },
  });
  const rig = await LocalRig.start({
    config,
    basePort,
    proxies: 1,
    backends: 3,
    backendsIn: 'inline',
    concurrency: 1,
  });
  const held: net.Socket[] = [];
  try {
    const port = rig.proxies[0].publicPort;
    for (let i = 0; i < 3; i++) {
      const s = net.connect(port, '127.0.0.1', () => s.write(UPGRADE));
      held.push(s);
      const got = await new Promise<string>((resolve) => {
        let g = '';
        s.on('data', (d) => {
          g += d.toString('latin1');
          if (g.includes('\r\n\r\n')) resolve(g);
        });
      });
      if (!got.startsWith('HTTP/1.1 101')) throw new Error(`refusal flood: connection ${i} not upgraded: ${got.slice(0, 60)}`);
    }
    if ((await upgradeOnce(port)).status !== 503) throw new Error('refusal flood: the 4th upgrade was not refused');
    const redisPid = await pidOfRedis(rig);
    const r = await load(port, [rig.proxies[0].envoy!.pid, redisPid], 503);
    const { upgradesPerSecond, notUpgraded, ...rest } = r;
    return { refusalsPerSecond: upgradesPerSecond, notRefused: notUpgraded, ...rest };
  } finally {
    for (const s of held) s.destroy();
    await rig.stop();
  }
}

/** (b) with LARGE_FLEET healthy backends: its own rig, checked to have every pod registered for the proxy (its agent, ws_hosts). */
async function largeFleet(config: ReturnType<typeof loadConfig>): Promise<Record<string, number>> {
  const rig = await LocalRig.start({
    config,
    basePort: BASE + 50,
    proxies: 1,
    backends: LARGE_FLEET,
    backendsIn: 'inline',
    concurrency: 1,
  });
  try {
    const port = rig.proxies[0].publicPort;
    await untilUpgraded(port, () => `the ${LARGE_FLEET}-backend rig never answered 101`);
    const registered = await rig.registeredHosts(rig.proxies[0].name);
    if (registered !== LARGE_FLEET) throw new Error(`the ${LARGE_FLEET}-backend rig's proxy has ${registered} pods registered`);
    const redisPid = await pidOfRedis(rig);
    return { ...(await load(port, [rig.proxies[0].envoy!.pid, redisPid])), podsRegistered: registered };
  } finally {
    await rig.stop();
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const rl = ratelimitBinary();
  const config = loadConfig({
    env: {},
    overrides: { ...ONE_CLIENT, maxConnectionsPerPod: 1_000_000, rateLimitPerMinute: 100_000_000, envoyMaxConnections: 50_000 },
  });
  const rig = await LocalRig.start({
    config,
    basePort: BASE,
    proxies: 1,
    backends: 3,
    backendsIn: 'inline',
    concurrency: 1,
  });
  const children: ChildProcess[] = [];
  let stopped = false;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-throughput-'));
  // (a) and (c): the same generated bootstrap as proxies 1 and 2 of the rig's layout.
  const variants = new RigVariants(rig, work);
  try {
    const plain = variants.start(1, withoutAdmission);
    // (c): its own redis-server and the ratelimit service.
    const rlRedisPort = BASE + 80;
    const rlGrpc = BASE + 81;
    const rlRedis = spawn('redis-server', ['--port', String(rlRedisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    children.push(rlRedis);
    const runtime = path.join(work, 'runtime', 'ratelimit', 'config');
    fs.mkdirSync(runtime, { recursive: true });
    fs.writeFileSync(
      path.join(runtime, 'ws.yaml'),
      stringify({
        domain: 'ws',
        descriptors: [{ key: 'generic_key', value: 'upgrade', rate_limit: { unit: 'minute', requests_per_unit: 100_000_000 } }],
      }),
    );
    const rlLog = fs.openSync(path.join(work, 'ratelimit.log'), 'a');
    const rlProc = spawn(rl, [], {
      env: {
        PATH: process.env.PATH,
        USE_STATSD: 'false',
        LOG_LEVEL: 'error',
        REDIS_SOCKET_TYPE: 'tcp',
        REDIS_URL: `127.0.0.1:${rlRedisPort}`,
        RUNTIME_ROOT: path.join(work, 'runtime'),
        RUNTIME_SUBDIRECTORY: 'ratelimit',
        RUNTIME_WATCH_ROOT: 'false',
        GRPC_HOST: '127.0.0.1',
        GRPC_PORT: String(rlGrpc),
        HOST: '127.0.0.1',
        PORT: String(BASE + 82),
        DEBUG_HOST: '127.0.0.1',
        DEBUG_PORT: String(BASE + 83),
      },
      stdio: ['ignore', rlLog, rlLog],
    });
    children.push(rlProc);
    const rlEnvoy = variants.start(2, (b) => {
      withoutAdmission(b);
      const hcm = publicHcm(b);
      hcm.http_filters = [
        {
          name: 'envoy.filters.http.ratelimit',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit',
            domain: 'ws',
            failure_mode_deny: false,
            timeout: '0.2s',
            rate_limit_service: { grpc_service: { envoy_grpc: { cluster_name: 'ratelimit' } }, transport_api_version: 'V3' },
          },
        },
        ...hcm.http_filters,
      ];
      hcm.route_config.virtual_hosts[0].routes[0].route.rate_limits = [{ actions: [{ generic_key: { descriptor_value: 'upgrade' } }] }];
      b.static_resources.clusters.push({
        name: 'ratelimit',
        type: 'STATIC',
        connect_timeout: '1s',
        typed_extension_protocol_options: {
          'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            explicit_http_config: { http2_protocol_options: {} },
          },
        },
        load_assignment: {
          cluster_name: 'ratelimit',
          endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: rlGrpc } } } }] }],
        },
      });
    });
    // Ready when each answers an upgrade with 101.
    const plainPort = plain.layout.publicPort;
    const rlPort = rlEnvoy.layout.publicPort;
    for (const port of [plainPort, rlPort, localLayout(BASE, 0, rig.workDir).publicPort]) {
      await untilUpgraded(port, () => {
        const logs = fs
          .readdirSync(work)
          .filter((f) => f.endsWith('.log'))
          .map((f) => `${f}: ${fs.readFileSync(path.join(work, f), 'utf8').slice(-1500)}`);
        return `the variant on port ${port} never answered 101:\n${logs.join('\n')}`;
      });
    }
    const redisPid = await pidOfRedis(rig);
    const a = await load(plainPort, [plain.pid]);
    const b = await load(rig.proxies[0].publicPort, [rig.proxies[0].envoy!.pid, redisPid]);
    const c = await load(rlPort, [rlEnvoy.pid, rlProc.pid]);
    for (const ch of children) ch.kill('SIGTERM');
    await variants.stop();
    await rig.stop();
    stopped = true;
    const large = await largeFleet(config);
    const floodCached = await refusalFlood(250, BASE + 100);
    const floodUncached = await refusalFlood(0, BASE + 120);
    const ratio = (x: Record<string, number>) => Math.round((x.upgradesPerSecond / a.upgradesPerSecond) * 100) / 100;
    return {
      setup: `${CLIENTS} clients, a new TCP connection per upgrade, ${SECONDS} s per variant, 1 Envoy worker each; ratelimit ${RATELIMIT.version}`,
      a_noFilter: a,
      b_admission: { ...b, rateVsA: ratio(b), sideIs: 'redis-server' },
      c_envoyRatelimit: { ...c, rateVsA: ratio(c), sideIs: 'ratelimit service' },
      bVsC: Math.round((b.upgradesPerSecond / c.upgradesPerSecond) * 100) / 100,
      [`b_admission_${LARGE_FLEET}Pods`]: { ...large, rateVsB: Math.round((large.upgradesPerSecond / b.upgradesPerSecond) * 100) / 100 },
      refusalFlood: {
        capacityCache250ms: floodCached,
        capacityCacheOff: floodUncached,
        cacheGain: Math.round((floodCached.refusalsPerSecond / floodUncached.refusalsPerSecond) * 100) / 100,
      },
    };
  } finally {
    if (!stopped) {
      for (const ch of children) ch.kill('SIGTERM');
      await variants.stop();
      await rig.stop();
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
}
