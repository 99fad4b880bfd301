import { METRICS, REDIS_COUNTED_REASONS, REJECT_REASONS, RejectReason } from '../../lua/envoy/metrics-contract';
import { MetricFamily, SampleSet } from './prometheus';

/** One scrape of one proxy's metrics endpoint, reduced to what the view shows. */
export interface MetricsSnapshot {
  /** ms since epoch when the scrape finished */
  readonly at: number;
  readonly pods: ReadonlyArray<{ readonly pod: string; readonly active: number }>;
  readonly proxies: ReadonlyArray<{ readonly proxy: string; readonly active: number }>;
  readonly maxConnectionsPerPod?: number;
  readonly admitted?: number;
  readonly rejected: Readonly<Partial<Record<RejectReason, number>>>;
  readonly released?: number;
  readonly expired?: number;
  readonly reregistered?: number;
  /** Admitted upgrades that never reached their pod (the pod is passed over for a while). */
  readonly failedUpstream?: number;
  readonly rateWindowUsed?: number;
  /** The fleet as Redis holds it: pods some proxy reports healthy, pods passed over, live agents. */
  readonly podsReachable?: number;
  readonly podsPenalised?: number;
  readonly proxiesLive?: number;
  /** 1 while Redis waits for the proxies to put their streams back after a state loss. */
  readonly recovering?: number;
  /** Age of the Redis-held numbers (the agent's last snapshot). */
  readonly snapshotAgeSeconds?: number;
  readonly rateLimit?: number;
  readonly rateWindowSeconds?: number;
  readonly redisUp?: number;
  /** Per-worker counters kept outside Redis, summed over workers. */
  readonly redisErrors?: number;
  readonly failOpen?: number;
  /** The proxies that reported the per-worker counters (the one we scraped). */
  readonly reportingProxies: readonly string[];
  /** Number of ws_admission_* series seen: 0 means the endpoint is not ours or empty. */
  readonly seriesCount: number;
}

/** Per-minute rates from the difference of two snapshots' counters. */
export interface Rates {
  readonly seconds: number;
  readonly admitted?: number;
  readonly rejected: Readonly<Partial<Record<RejectReason, number>>>;
  readonly released?: number;
  readonly expired?: number;
  readonly reregistered?: number;
  readonly failedUpstream?: number;
  readonly redisErrors?: number;
  readonly failOpen?: number;
}

const byNatural = (a: string, b: string): number => a.localeCompare(b, 'en', { numeric: true });

export function snapshotFrom(families: readonly MetricFamily[], at: number): MetricsSnapshot {
  const s = new SampleSet(families);
  const pods = [...s.byLabel(METRICS.activeConnections, 'pod')]
    .map(([pod, active]) => ({ pod, active }))
    .sort((a, b) => byNatural(a.pod, b.pod));
  const proxies = [...s.byLabel(METRICS.activeConnectionsByProxy, 'proxy')]
    .map(([proxy, active]) => ({ proxy, active }))
    .sort((a, b) => byNatural(a.proxy, b.proxy));
  const rejectedBy = s.byLabel(METRICS.rejected, 'reason');
  const rejected: Partial<Record<RejectReason, number>> = {};
  // A declared family without a series for a reason means none counted yet (per-worker series
  // appear lazily), unless the reason is counted in Redis and Redis cannot be read: then its
  // series is missing, not zero.
  const redisReadable = s.scalar(METRICS.redisUp) !== 0;
  for (const r of REJECT_REASONS) {
    if (rejectedBy.has(r)) rejected[r] = rejectedBy.get(r);
    else if (s.has(METRICS.rejected) && (redisReadable || !REDIS_COUNTED_REASONS.includes(r))) rejected[r] = 0;
  }
  const reporting = new Set<string>();
  for (const n of [METRICS.redisErrors, METRICS.failOpen, METRICS.rejected])
    for (const x of s.all(n)) if (x.labels.proxy) reporting.add(x.labels.proxy);
  return {
    at,
    pods,
    proxies,
    maxConnectionsPerPod: s.scalar(METRICS.maxConnectionsPerPod),
    admitted: s.scalar(METRICS.admitted),
    rejected,
    released: s.scalar(METRICS.released),
    expired: s.scalar(METRICS.expired),
    reregistered: s.scalar(METRICS.reregistered),
    failedUpstream: s.scalar(METRICS.failedUpstream),
    rateWindowUsed: s.scalar(METRICS.rateWindowUsed),
    podsReachable: s.scalar(METRICS.podsReachable),
    podsPenalised: s.scalar(METRICS.podsPenalised),
    proxiesLive: s.scalar(METRICS.proxiesLive),
    recovering: s.scalar(METRICS.recovering),
    snapshotAgeSeconds: s.scalar(METRICS.snapshotAgeSeconds),
    rateLimit: s.scalar(METRICS.rateLimit),
    rateWindowSeconds: s.scalar(METRICS.rateWindowSeconds),
    redisUp: s.scalar(METRICS.redisUp),
    redisErrors: s.has(METRICS.redisErrors) ? (s.scalar(METRICS.redisErrors) ?? 0) : undefined,
    failOpen: s.has(METRICS.failOpen) ? (s.scalar(METRICS.failOpen) ?? 0) : undefined,
    reportingProxies: [...reporting].sort(byNatural),
    seriesCount: s.names.filter((n) => n.startsWith('ws_admission_')).reduce((a, n) => a + s.all(n).length, 0),
  };
}

/** A counter that went down was reset (proxy restart, Redis flush): no rate for that pair. */
function perMinute(prev: number | undefined, cur: number | undefined, seconds: number): number | undefined {
  if (prev === undefined || cur === undefined || seconds <= 0 || cur < prev) return undefined;
  return ((cur - prev) / seconds) * 60;
}

export function ratesBetween(prev: MetricsSnapshot, cur: MetricsSnapshot): Rates {
  const seconds = (cur.at - prev.at) / 1000;
  const rejected: Partial<Record<RejectReason, number>> = {};
  for (const r of REJECT_REASONS) {
    const v = perMinute(prev.rejected[r], cur.rejected[r], seconds);
    if (v !== undefined) rejected[r] = v;
  }
  return {
    seconds,
    admitted: perMinute(prev.admitted, cur.admitted, seconds),
    rejected,
    released: perMinute(prev.released, cur.released, seconds),
    expired: perMinute(prev.expired, cur.expired, seconds),
    reregistered: perMinute(prev.reregistered, cur.reregistered, seconds),
    failedUpstream: perMinute(prev.failedUpstream, cur.failedUpstream, seconds),
    redisErrors: perMinute(prev.redisErrors, cur.redisErrors, seconds),
    failOpen: perMinute(prev.failOpen, cur.failOpen, seconds),
  };
}

export interface RenderOptions {
  /** Terminal columns; every line is at most this long. */
  readonly width: number;
  readonly source: string;
  /** ANSI colours. @default false */
  readonly color?: boolean;
  readonly intervalSeconds?: number;
  readonly rates?: Rates;
  /** Shown instead of (or above) the data when the last scrape failed. */
  readonly error?: string;
}

// Narrower than this nothing useful fits; --width refuses less than 20.
const MIN_WIDTH = 20;

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || Number.isNaN(n)) return '-';
  return digits ? n.toFixed(digits) : String(Math.round(n));
}

function bar(value: number, max: number, width: number): string {
  if (width <= 0) return '';
  const ratio = max > 0 ? Math.min(1, Math.max(0, value / max)) : value > 0 ? 1 : 0;
  const full = Math.round(ratio * width);
  return '█'.repeat(full) + '░'.repeat(width - full);
}

function fit(line: string, width: number): string {
  // Width is measured in code points; every glyph used here is one column wide.
  const chars = [...line];
  return chars.length <= width ? line : chars.slice(0, Math.max(0, width - 1)).join('') + '…';
}

/**
 * The whole screen as text, deterministic for a given input (tests compare it to a
 * snapshot). Colour codes are only added when `color` is set, after fitting.
 */
export function renderScreen(snap: MetricsSnapshot | undefined, opts: RenderOptions): string {
  const width = Math.max(MIN_WIDTH, opts.width);
  const c = (code: string, s: string): string => (opts.color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const out: Array<{ text: string; color?: string }> = [];
  const push = (text: string, color?: string): void => {
    out.push({ text, color });
  };
  const finish = (): string => out.map((l) => (l.color ? c(l.color, fit(l.text, width)) : fit(l.text, width))).join('\n') + '\n';

  const when = snap
    ? new Date(snap.at)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
    : '';
  push(`ws-admission · ${opts.source}`, '1');
  if (when) push(`scraped ${when}${opts.intervalSeconds ? ` · refresh every ${opts.intervalSeconds} s · Ctrl-C to quit` : ''}`);
  if (opts.error) push(`! ${opts.error}${snap ? ' (showing the last good scrape)' : ''}`, '31');
  if (!snap) {
    push('no data yet');
    return finish();
  }
  if (snap.seriesCount === 0) {
    push('no ws_admission_* metrics in the response: is this the metrics listener (:9901/metrics)?', '33');
    return finish();
  }
  const rates = opts.rates;
  const rate = (v: number | undefined): string => (rates ? fmt(v, 1) : '-');

  push('');
  const up = snap.redisUp;
  const redisState = up === undefined ? 'unknown' : up >= 1 ? 'UP' : 'DOWN';
  push(
    `Redis ${redisState}   errors ${fmt(snap.redisErrors)} (${rate(rates?.redisErrors)}/min)   fail-open admissions ${fmt(snap.failOpen)} (${rate(rates?.failOpen)}/min)`,
    up === undefined ? undefined : up >= 1 ? '32' : '31',
  );
  if (up !== undefined && up < 1) push('  Redis-held numbers omitted: the agent cannot read Redis (or is not running)', '31');
  if (snap.recovering !== undefined && snap.recovering >= 1)
    push('  RECOVERING: Redis lost its state; nothing is admitted until every proxy has put its streams back', '33');
  if (snap.reportingProxies.length)
    push(`  per-worker counters (errors, fail-open, refusals made without Redis) from proxy ${snap.reportingProxies.join(', ')} only`);
  if (up !== undefined && up >= 1) {
    const penalised = snap.podsPenalised ?? 0;
    push(
      `Fleet: ${fmt(snap.podsReachable)} pods reachable · ${fmt(snap.podsPenalised)} passed over · ${fmt(snap.proxiesLive)} proxies live · data ${fmt(snap.snapshotAgeSeconds, 1)} s old`,
      penalised > 0 ? '33' : undefined,
    );
  }

  push('');
  const limit = snap.rateLimit;
  const used = snap.rateWindowUsed;
  const winLabel = `Rate window (${fmt(snap.rateWindowSeconds)} s)`;
  if (limit === 0) {
    push(`${winLabel}  ${fmt(used)} upgrades, no rate limit configured`);
  } else {
    const tail = ` ${fmt(used)}/${fmt(limit)}`;
    const barW = Math.min(40, width - winLabel.length - tail.length - 4);
    push(
      `${winLabel} [${bar(used ?? 0, limit ?? 0, barW)}]${tail}`,
      used !== undefined && limit !== undefined && used >= limit ? '33' : undefined,
    );
  }

  push('');
  const max = snap.maxConnectionsPerPod;
  push(`Connections per backend pod (limit ${fmt(max)})`, '1');
  if (snap.pods.length === 0) push('  no backend pod holds a lease');
  const podW = Math.min(Math.max(8, ...snap.pods.map((p) => p.pod.length)), 28);
  const tails = snap.pods.map((p) => ` ${fmt(p.active)}/${fmt(max)}${max !== undefined && p.active >= max ? ' FULL' : ''}`);
  const tailW = Math.max(0, ...tails.map((t) => t.length));
  const podBarW = Math.min(40, width - podW - tailW - 5);
  snap.pods.forEach((p, i) => {
    const full = max !== undefined && p.active >= max;
    push(`  ${fit(p.pod, podW).padEnd(podW)} [${bar(p.active, max ?? 0, podBarW)}]${tails[i]}`, full ? '33' : undefined);
  });
  if (snap.pods.length) {
    const total = snap.pods.reduce((a, p) => a + p.active, 0);
    push(`  total ${total} open${max !== undefined ? ` of ${max * snap.pods.length} slots on ${snap.pods.length} pods` : ''}`);
  }
  if (snap.proxies.length) {
    push('');
    push('Connections per Envoy proxy', '1');
    const proxyW = Math.min(Math.max(8, ...snap.proxies.map((p) => p.proxy.length)), 40);
    for (const p of snap.proxies) push(`  ${fit(p.proxy, proxyW).padEnd(proxyW)} ${fmt(p.active).padStart(5)}`);
  }

  push('');
  const labelW = 36;
  push(`${'Admissions'.padEnd(labelW)}${'total'.padStart(10)}${'per min'.padStart(10)}`, '1');
  const row = (label: string, total: number | undefined, perMin: number | undefined, color?: string): void =>
    push(`  ${label.padEnd(labelW - 2)}${fmt(total).padStart(10)}${rate(perMin).padStart(10)}`, color);
  row('admitted', snap.admitted, rates?.admitted);
  for (const r of REJECT_REASONS)
    row(`refused: ${r}`, snap.rejected[r], rates?.rejected[r], (snap.rejected[r] ?? 0) > 0 ? '33' : undefined);
  row('released', snap.released, rates?.released);
  row('expired (lease not renewed)', snap.expired, rates?.expired);
  row('re-registered (Redis lost)', snap.reregistered, rates?.reregistered, (snap.reregistered ?? 0) > 0 ? '33' : undefined);
  row('failed upstream (pod passed over)', snap.failedUpstream, rates?.failedUpstream, (snap.failedUpstream ?? 0) > 0 ? '33' : undefined);
  if (!rates && !opts.error) push('  (rates need two scrapes; they appear from the second refresh on)');

  return finish();
}

/** The machine-readable form for --json. */
export function toJson(snap: MetricsSnapshot, rates?: Rates): object {
  return { ...snap, at: new Date(snap.at).toISOString(), ratesPerMinute: rates ?? null };
}
