import * as dns from 'dns';
import WebSocket from 'ws';
import { Reporter } from '../common/progress';
import { ProcessRunner, lastLine } from '../common/process';
import { Clock, done, notYet, waitFor } from '../common/wait';

/** Network probes, injectable for tests. */
export interface NetProbes {
  lookup(host: string): Promise<string[]>;
  httpGet(url: string, timeoutMs: number): Promise<{ status: number }>;
  /** Opens a WebSocket and closes it at once; answers 101 or the status of the refusal. */
  wsUpgrade(url: string, timeoutMs: number): Promise<{ status: number; headers?: Record<string, string | string[] | undefined> }>;
}

export const realProbes: NetProbes = {
  async lookup(host) {
    const all = await dns.promises.lookup(host, { all: true });
    return all.map((a) => a.address);
  },
  async httpGet(url, timeoutMs) {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    await res.arrayBuffer();
    return { status: res.status };
  },
  wsUpgrade(url, timeoutMs) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
      ws.once('upgrade', (res) => {
        resolve({ status: res.statusCode ?? 101, headers: res.headers });
        ws.close(1000, 'deploy check');
      });
      ws.once('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers });
        res.resume();
        ws.terminate();
      });
      ws.once('error', (err) => reject(err));
    });
  },
};

export interface VerifyContext {
  readonly runner: ProcessRunner;
  readonly probes: NetProbes;
  readonly reporter: Reporter;
  readonly clock?: Clock;
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs: number;
  readonly intervalMs?: number;
}

interface DeploymentJson {
  metadata: { name: string; generation?: number };
  spec?: { replicas?: number };
  status?: { replicas?: number; readyReplicas?: number; updatedReplicas?: number; availableReplicas?: number; observedGeneration?: number };
}

/** The same conditions `kubectl rollout status` waits for, for every Deployment in the namespace. */
export function rolloutState(d: DeploymentJson): { ready: boolean; detail: string } {
  const want = d.spec?.replicas ?? 1;
  const s = d.status ?? {};
  if ((s.observedGeneration ?? 0) < (d.metadata.generation ?? 0))
    return { ready: false, detail: `${d.metadata.name}: new spec not yet observed` };
  const updated = s.updatedReplicas ?? 0;
  const available = s.availableReplicas ?? 0;
  const total = s.replicas ?? 0;
  if (updated < want) return { ready: false, detail: `${d.metadata.name}: ${updated}/${want} replicas updated` };
  if (total > updated) return { ready: false, detail: `${d.metadata.name}: ${total - updated} old replicas pending termination` };
  if (available < updated) return { ready: false, detail: `${d.metadata.name}: ${available}/${want} replicas available` };
  return { ready: true, detail: `${d.metadata.name} ${available}/${want}` };
}

async function kubectlJson<T>(ctx: VerifyContext, args: string[]): Promise<T> {
  const r = await ctx.runner.run('kubectl', [...args, '-o', 'json', '--request-timeout=15s'], { env: ctx.env, timeoutMs: 30000 });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${lastLine(r)}`);
  return JSON.parse(r.stdout) as T;
}

export async function waitForRollouts(ctx: VerifyContext, namespace: string): Promise<string[]> {
  const what = `the Deployments in namespace ${namespace} to be rolled out`;
  return waitFor(
    what,
    async () => {
      const list = await kubectlJson<{ items: DeploymentJson[] }>(ctx, ['get', 'deployments', '-n', namespace]);
      if (list.items.length === 0) return notYet(`no Deployment in namespace ${namespace}`);
      const states = list.items.map(rolloutState);
      const pending = states.filter((s) => !s.ready);
      return pending.length ? notYet(pending.map((s) => s.detail).join('; ')) : done(states.map((s) => s.detail));
    },
    {
      timeoutMs: ctx.timeoutMs,
      intervalMs: ctx.intervalMs,
      clock: ctx.clock,
      onProgress: (e, d) => ctx.reporter.progress('rollouts', e, d),
    },
  );
}

interface ServiceJson {
  metadata: { name: string };
  spec?: { type?: string };
  status?: { loadBalancer?: { ingress?: Array<{ hostname?: string; ip?: string }> } };
}

/** The hostname the AWS Load Balancer Controller wrote into the LoadBalancer Service's status. */
export async function waitForLoadBalancer(ctx: VerifyContext, namespace: string, serviceName?: string): Promise<string> {
  const what = `the NLB hostname on ${serviceName ? `Service ${serviceName}` : 'the LoadBalancer Service'} in namespace ${namespace}`;
  return waitFor(
    what,
    async () => {
      const list = await kubectlJson<{ items: ServiceJson[] }>(ctx, ['get', 'services', '-n', namespace]);
      const lbs = list.items.filter((s) => (serviceName ? s.metadata.name === serviceName : s.spec?.type === 'LoadBalancer'));
      if (lbs.length === 0) return notYet(serviceName ? `no Service ${serviceName}` : 'no Service of type LoadBalancer');
      const ingress = lbs[0].status?.loadBalancer?.ingress?.[0];
      const host = ingress?.hostname ?? ingress?.ip;
      return host
        ? done(host)
        : notYet(`Service ${lbs[0].metadata.name} has no load balancer address yet (is the AWS Load Balancer Controller running?)`);
    },
    {
      timeoutMs: ctx.timeoutMs,
      intervalMs: ctx.intervalMs,
      clock: ctx.clock,
      onProgress: (e, d) => ctx.reporter.progress('NLB address', e, d),
    },
  );
}

export async function waitForDns(ctx: VerifyContext, host: string): Promise<string[]> {
  return waitFor(
    `DNS name ${host} to resolve`,
    async () => {
      const addrs = await ctx.probes.lookup(host);
      return addrs.length ? done(addrs) : notYet('no address yet');
    },
    { timeoutMs: ctx.timeoutMs, intervalMs: ctx.intervalMs, clock: ctx.clock, onProgress: (e, d) => ctx.reporter.progress('DNS', e, d) },
  );
}

/** Any answer below 500 proves the path client -> NLB -> Envoy -> backend works. */
export async function waitForHttp(ctx: VerifyContext, url: string): Promise<number> {
  return waitFor(
    `an HTTP answer (< 500) from ${url}`,
    async () => {
      const r = await ctx.probes.httpGet(url, 5000);
      return r.status < 500 ? done(r.status) : notYet(`HTTP ${r.status}`);
    },
    {
      timeoutMs: ctx.timeoutMs,
      intervalMs: ctx.intervalMs,
      clock: ctx.clock,
      onProgress: (e, d) => ctx.reporter.progress('HTTP health check', e, d),
    },
  );
}

/**
 * One WebSocket upgrade answered 101. A 503 is waited through, with the filter's reason
 * (`x-ws-admission`): `recovering` right after Redis started empty (the agents put the
 * open streams back first, at most 10 s), `no_backend` before a proxy's agent registered
 * a healthy backend pod, `capacity` when every pod is full. A 429 means the rate limit is
 * already used up and is reported as what it is.
 */
export async function waitForWebSocket(ctx: VerifyContext, url: string): Promise<number> {
  return waitFor(
    `a WebSocket upgrade (101) at ${url}`,
    async () => {
      const r = await ctx.probes.wsUpgrade(url, 5000);
      if (r.status === 101) return done(101);
      if (r.status === 429) return notYet(`429 rate limited (retry-after ${String(r.headers?.['retry-after'] ?? '?')} s)`);
      const reason = r.headers?.['x-ws-admission'];
      return notYet(`HTTP ${r.status} instead of 101${reason ? ` (x-ws-admission: ${String(reason)})` : ''}`);
    },
    {
      timeoutMs: ctx.timeoutMs,
      intervalMs: ctx.intervalMs,
      clock: ctx.clock,
      onProgress: (e, d) => ctx.reporter.progress('WebSocket upgrade', e, d),
    },
  );
}

/** After a destroy: waits until no Service of type LoadBalancer is left in `namespace` (the controller deletes the NLB then). */
export async function waitForLoadBalancerGone(ctx: VerifyContext, namespace: string): Promise<boolean> {
  return waitFor(
    `the LoadBalancer Service in ${namespace} to be deleted (the controller deletes the NLB then)`,
    async () => {
      const r = await ctx.runner.run('kubectl', ['get', 'services', '-n', namespace, '-o', 'json', '--request-timeout=15s'], {
        env: ctx.env,
        timeoutMs: 30000,
      });
      if (r.code !== 0 && /NotFound|not found/i.test(r.stderr)) return done(true);
      if (r.code !== 0) return notYet(r.stderr.trim());
      const lbs = (JSON.parse(r.stdout) as { items: ServiceJson[] }).items.filter((s) => s.spec?.type === 'LoadBalancer');
      return lbs.length ? notYet(`still there: ${lbs.map((s) => s.metadata.name).join(', ')}`) : done(true);
    },
    {
      timeoutMs: ctx.timeoutMs,
      intervalMs: ctx.intervalMs,
      clock: ctx.clock,
      onProgress: (e, d) => ctx.reporter.progress('load balancer deletion', e, d),
    },
  );
}
