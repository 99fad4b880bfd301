/**
 * `npm run local [-- --proxies N --backends M --base-port P --workers W --keep]`: the data
 * plane on this machine (tools/rig/rig.ts): Redis with the ws_admission library, N
 * real Envoys with the stack's generated config, each with its agent, M WebSocket echo
 * backends on loopback addresses. Limits come from the usual configuration
 * (WS_ADMISSION_CONFIG file, WS_ADMISSION_* variables).
 *
 * Prints one line per proxy, `proxy <name> ws://127.0.0.1:<port>/ metrics
 * http://127.0.0.1:<port>/metrics`, then `ready`. Ctrl-C or SIGTERM stops everything.
 */
import { parseArgs } from 'util';
import { loadConfig } from '../../config/load';
import { DEFAULT_BASE_PORT, LocalRig } from './rig';

function int(name: string, raw: string | undefined, def: number): number {
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n)) throw new Error(`--${name} must be a whole number, got "${raw}"`);
  return n;
}

async function main(): Promise<number> {
  // Signals during startup too: whatever has started is stopped, nothing is left behind.
  let stopRequested = false;
  let wake: () => void = () => undefined;
  const onSignal = () => {
    stopRequested = true;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let rig: LocalRig | undefined;
  try {
    const { values } = parseArgs({
      options: {
        proxies: { type: 'string' },
        backends: { type: 'string' },
        'base-port': { type: 'string' },
        workers: { type: 'string' },
        keep: { type: 'boolean' },
      },
    });
    const config = loadConfig();
    rig = await LocalRig.start({
      config,
      proxies: int('proxies', values.proxies, 2),
      backends: int('backends', values.backends, 3),
      basePort: int('base-port', values['base-port'], DEFAULT_BASE_PORT),
      concurrency: int('workers', values.workers, 1),
      keepFiles: values.keep ?? false,
    });
  } catch (err) {
    process.stderr.write(`local: ${err instanceof Error ? err.message : String(err)}\n`);
    await rig?.stop();
    return 1;
  }
  if (!stopRequested) {
    for (const p of rig.proxies) process.stdout.write(`proxy ${p.name} ${p.publicUrl} metrics ${p.metricsUrl}\n`);
    process.stdout.write('ready\n');
    await new Promise<void>((resolve) => {
      wake = resolve;
    });
  }
  await rig.stop();
  process.stderr.write(`local: stopped${rig.options.keepFiles ? `; files kept in ${rig.workDir}` : ''}\n`);
  return 0;
}

void main().then((code) => process.exit(code));
