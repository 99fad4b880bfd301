/**
 * `npm run metrics` — a live terminal view of the admission system, from one Envoy's
 * metrics listener (GET :9901/metrics). Refreshes in place like `watch`.
 *
 *   npm run metrics -- --url http://127.0.0.1:9901/metrics
 *   npm run metrics -- --port-forward [--namespace ws] [--target deployment/envoy]
 *   npm run metrics -- --once            # one screen, then exit
 *   npm run metrics -- --once --json     # one JSON document (no --once: one per line)
 */
import { parseArgs } from 'util';
import { ExpositionError, parseExposition } from './prometheus';
import { MetricsSnapshot, Rates, ratesBetween, renderScreen, snapshotFrom, toJson } from './view';
import { LongRunning, NodeProcessRunner, ProcessRunner } from '../common/process';
import { Clock, realClock } from '../common/wait';
import { DEFAULT_ENVOY_TARGET, DEFAULT_NAMESPACE } from '../common/stack-info';

export interface MetricsDeps {
  readonly fetchText: (url: string, timeoutMs: number) => Promise<string>;
  readonly runner: ProcessRunner;
  readonly out: { write(s: string): unknown; readonly isTTY?: boolean; readonly columns?: number };
  readonly err: { write(s: string): unknown };
  readonly clock: Clock;
  /** Resolves when the user asks to stop (Ctrl-C); the live loop ends then. */
  readonly stopSignal: Promise<void>;
  readonly env: NodeJS.ProcessEnv;
}

export async function fetchText(url: string, timeoutMs: number): Promise<string> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
    throw new Error(`cannot reach ${url}: ${why}`, { cause: err });
  }
  const body = await res.text();
  if (!res.ok) throw new Error(`${url} answered HTTP ${res.status}${body ? `: ${body.trim().split('\n')[0].slice(0, 120)}` : ''}`);
  return body;
}

const USAGE = `usage: npm run metrics -- [--url URL | --port-forward [--namespace NS] [--target KIND/NAME]]
                            [--once] [--json] [--interval SECONDS] [--width COLUMNS] [--no-color]

  --url URL          metrics endpoint (default http://127.0.0.1:9901/metrics)
  --port-forward     start "kubectl port-forward" to the Envoy deployment's port 9901, stop it on exit
  --namespace NS     Kubernetes namespace (default $WS_ADMISSION_NAMESPACE or ${DEFAULT_NAMESPACE})
  --target KIND/NAME what to port-forward to (default ${DEFAULT_ENVOY_TARGET})
  --once             one scrape, print, exit (exit 1 if the endpoint is unreachable)
  --json             machine-readable output (one JSON document per scrape)
  --interval S       seconds between refreshes (default 2)
  --width N          columns (default: the terminal's, else 100)
  --no-color         no ANSI colours (also when NO_COLOR is set or output is not a terminal)
`;

interface Parsed {
  url?: string;
  portForward: boolean;
  namespace: string;
  target: string;
  once: boolean;
  json: boolean;
  interval: number;
  width?: number;
  color: boolean;
  help: boolean;
}

export function parseMetricsArgs(argv: readonly string[], env: NodeJS.ProcessEnv): Parsed {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      url: { type: 'string' },
      'port-forward': { type: 'boolean', default: false },
      namespace: { type: 'string', short: 'n' },
      target: { type: 'string' },
      once: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      interval: { type: 'string', default: '2' },
      width: { type: 'string' },
      'no-color': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  const interval = Number(values.interval);
  if (!Number.isFinite(interval) || interval < 0.2)
    throw new Error(`--interval must be a number of seconds >= 0.2, got ${values.interval}`);
  const width = values.width === undefined ? undefined : Number(values.width);
  if (width !== undefined && (!Number.isInteger(width) || width < 20))
    throw new Error(`--width must be an integer >= 20, got ${values.width}`);
  if (values.url && values['port-forward']) throw new Error('--url and --port-forward exclude each other: pick one source');
  return {
    url: values.url,
    portForward: Boolean(values['port-forward']),
    namespace: values.namespace ?? env.WS_ADMISSION_NAMESPACE ?? DEFAULT_NAMESPACE,
    target: values.target ?? DEFAULT_ENVOY_TARGET,
    once: Boolean(values.once),
    json: Boolean(values.json),
    interval,
    width,
    color: !values['no-color'] && !env.NO_COLOR,
    help: Boolean(values.help),
  };
}

/** Starts `kubectl port-forward TARGET :9901` and answers the local URL. */
async function startPortForward(runner: ProcessRunner, namespace: string, target: string): Promise<{ url: string; pf: LongRunning }> {
  const pf = runner.start('kubectl', ['port-forward', '--namespace', namespace, target, ':9901']);
  try {
    // kubectl prints "Forwarding from 127.0.0.1:43121 -> 9901" once it listens.
    const line = await pf.waitForOutput(/Forwarding from 127\.0\.0\.1:\d+/, 15000);
    const port = line.split('127.0.0.1:')[1].split(' ')[0];
    return { url: `http://127.0.0.1:${port}/metrics`, pf };
  } catch (err) {
    await pf.stop();
    throw new Error(
      `kubectl port-forward to ${target} in namespace ${namespace} failed: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
}

async function scrape(deps: MetricsDeps, url: string): Promise<MetricsSnapshot> {
  const text = await deps.fetchText(url, 3000);
  return snapshotFrom(parseExposition(text), deps.clock.now());
}

/** Runs the command; answers the exit code. Never throws for an unreachable or empty endpoint. */
export async function runMetrics(argv: readonly string[], deps: MetricsDeps): Promise<number> {
  let args: Parsed;
  try {
    args = parseMetricsArgs(argv, deps.env);
  } catch (err) {
    deps.err.write(`metrics: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    deps.out.write(USAGE);
    return 0;
  }

  let pf: LongRunning | undefined;
  let url = args.url ?? 'http://127.0.0.1:9901/metrics';
  if (args.portForward) {
    try {
      ({ url, pf } = await startPortForward(deps.runner, args.namespace, args.target));
    } catch (err) {
      deps.err.write(`metrics: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
  }
  const source = args.portForward ? `${args.target} (port-forward ${url})` : url;
  const tty = Boolean(deps.out.isTTY);
  // Read at every refresh: a resized terminal gets a screen of its new width.
  const widthNow = (): number => args.width ?? (tty ? deps.out.columns : undefined) ?? 100;
  const color = args.color && tty;

  try {
    if (args.once) {
      try {
        const snap = await scrape(deps, url);
        deps.out.write(args.json ? `${JSON.stringify(toJson(snap), null, 2)}\n` : renderScreen(snap, { width: widthNow(), source, color }));
        return snap.seriesCount === 0 ? 1 : 0;
      } catch (err) {
        const msg = describe(err);
        if (args.json) deps.out.write(`${JSON.stringify({ error: msg, source })}\n`);
        else deps.err.write(`metrics: ${msg}\n`);
        return 1;
      }
    }

    let prev: MetricsSnapshot | undefined;
    let stopped = false;
    void deps.stopSignal.then(() => {
      stopped = true;
    });
    if (tty && !args.json) deps.out.write('\x1b[?25l');
    while (!stopped) {
      let snap: MetricsSnapshot | undefined;
      let error: string | undefined;
      try {
        snap = await scrape(deps, url);
      } catch (err) {
        error = `${describe(err)} — retrying every ${args.interval} s`;
      }
      const rates: Rates | undefined = snap && prev ? ratesBetween(prev, snap) : undefined;
      if (args.json) {
        deps.out.write(`${JSON.stringify(snap ? toJson(snap, rates) : { error, source })}\n`);
      } else {
        const screen = renderScreen(snap ?? prev, {
          width: widthNow(),
          source,
          color,
          rates: snap ? rates : undefined,
          error: error ?? undefined,
          intervalSeconds: args.interval,
        });
        deps.out.write(tty ? `\x1b[H\x1b[2J${screen}` : `${screen}\n`);
      }
      if (snap) prev = snap;
      await Promise.race([deps.clock.sleep(args.interval * 1000), deps.stopSignal]);
    }
    return 0;
  } finally {
    if (tty && !args.json && !args.once) deps.out.write('\x1b[?25h');
    if (pf) await pf.stop();
  }
}

function describe(err: unknown): string {
  if (err instanceof ExpositionError) return `the endpoint's answer is ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

if (require.main === module) {
  const stopSignal = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  runMetrics(process.argv.slice(2), {
    fetchText,
    runner: new NodeProcessRunner(),
    out: process.stdout,
    err: process.stderr,
    clock: realClock,
    stopSignal,
    env: process.env,
  }).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`metrics: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
