import * as fs from 'fs';
import * as path from 'path';
import * as os from 'os';
import { parseArgs } from 'util';

/**
 * `npm run bench`: runs every benchmark part that exists (synth here; Redis and filter
 * parts are written by other parts of the project and may be missing), prints all
 * numbers and writes bench-results/latest.json. `npm run bench -- <part> ...` runs only
 * the parts named, in the order of PARTS, and writes bench-results/latest-<parts>.json
 * (a part's numbers never replace the whole run's).
 */
const ROOT = path.resolve(__dirname, '..');
const PARTS = [
  'synth',
  'redis',
  'scale',
  'clients',
  'fleet',
  'churn',
  'filter',
  'slots',
  'stall',
  'scrape',
  'memory',
  'throughput',
  'messages',
] as const;

/** The parts named on the command line (all when none is), checked against PARTS. */
export function partsToRun(argv: readonly string[]): readonly string[] {
  const { positionals } = parseArgs({ args: [...argv], allowPositionals: true, strict: true, options: {} });
  const unknown = positionals.filter((p) => !(PARTS as readonly string[]).includes(p));
  if (unknown.length > 0) throw new Error(`unknown bench part ${unknown.join(', ')}; the parts are: ${PARTS.join(' ')}`);
  return positionals.length === 0 ? PARTS : PARTS.filter((p) => positionals.includes(p));
}

type Part = { run?: () => Promise<Record<string, unknown>> };

async function runPart(name: string): Promise<unknown> {
  const compiled = path.join(__dirname, `${name}.js`);
  const source = path.join(__dirname, `${name}.ts`);
  if (!fs.existsSync(compiled)) {
    return fs.existsSync(source) ? { status: 'not compiled', hint: 'run tsc first (npm run bench compiles)' } : 'not present';
  }
  let mod: Part;
  try {
    mod = (await import(compiled)) as Part;
  } catch (e) {
    return { status: 'failed to load', error: (e as Error).message };
  }
  if (typeof mod.run !== 'function') return { status: 'no run() export' };
  const start = Date.now();
  try {
    const result = await mod.run();
    return { ...result, wallSeconds: Math.round((Date.now() - start) / 100) / 10 };
  } catch (e) {
    return { status: 'failed', error: (e as Error).message };
  }
}

async function main(): Promise<void> {
  const parts = partsToRun(process.argv.slice(2));
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
  };
  for (const part of parts) {
    process.stdout.write(`== ${part}\n`);
    results[part] = await runPart(part);
    process.stdout.write(JSON.stringify(results[part], null, 2) + '\n');
  }
  const synth = results.synth as {
    app?: { medianMs: number };
    floor?: { medianMs: number };
    ratio?: number;
    targetRatio?: number;
    cli?: { medianMs: number } | string;
  };
  if (synth && synth.app && synth.floor) {
    const cli = typeof synth.cli === 'object' ? `${synth.cli.medianMs} ms` : String(synth.cli);
    process.stdout.write(
      `== summary\nsynth: app ${synth.app.medianMs} ms vs floor ${synth.floor.medianMs} ms = ${synth.ratio}x ` +
        `(target <= ${synth.targetRatio}x); npx cdktf synth ${cli}\n`,
    );
  }
  const dir = path.join(ROOT, 'bench-results');
  const file = path.join(dir, parts.length === PARTS.length ? 'latest.json' : `latest-${parts.join('-')}.json`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`wrote ${path.relative(ROOT, file)}\n`);
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`${e.stack ?? e.message}\n`);
    process.exit(1);
  });
}
