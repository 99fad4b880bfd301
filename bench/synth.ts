import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runAlone } from './alone';

/**
 * Synth benchmark: the compiled app run with plain node (what `npm run synth` runs,
 * compile step excluded) against the floor of merely loading cdktf and constructs, in
 * the same run, plus `npx cdktf synth` end to end.
 */
const ROOT = path.resolve(__dirname, '..');
const TARGET_RATIO = 2.5;

interface Timing {
  readonly runs: number;
  readonly medianMs: number;
  readonly minMs: number;
  readonly maxMs: number;
}

function timeCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr}`);
  return ms;
}

function summarize(samples: number[]): Timing {
  const s = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  const round = (n: number) => Math.round(n * 10) / 10;
  return { runs: s.length, medianMs: round(median), minMs: round(s[0]), maxMs: round(s[s.length - 1]) };
}

export interface SynthBenchOptions {
  /** Interleaved runs of the app and of the floor. @default 9 */
  readonly runs?: number;
  /** Runs of `npx cdktf synth` (slow). @default 3 */
  readonly cliRuns?: number;
}

export async function run(options: SynthBenchOptions = {}): Promise<Record<string, unknown>> {
  const runs = options.runs ?? Number(process.env.BENCH_SYNTH_RUNS ?? 9);
  const cliRuns = options.cliRuns ?? Number(process.env.BENCH_CLI_RUNS ?? 3);
  if (!fs.existsSync(path.join(ROOT, 'main.js'))) {
    throw new Error('main.js is missing: compile first (npm run presynth)');
  }
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-synth-'));
  const env = { ...process.env, CDKTF_OUTDIR: outdir, CHECKPOINT_DISABLE: '1' };
  const floorArgs = ['-e', "require('cdktf'); require('constructs')"];
  // One warm-up each (file system cache), then interleave so drift hits both alike.
  timeCommand(process.execPath, floorArgs, env);
  timeCommand(process.execPath, ['main.js'], env);
  const app: number[] = [];
  const floor: number[] = [];
  for (let i = 0; i < runs; i++) {
    floor.push(timeCommand(process.execPath, floorArgs, env));
    app.push(timeCommand(process.execPath, ['main.js'], env));
  }
  const cli: number[] = [];
  for (let i = 0; i < cliRuns; i++) {
    cli.push(timeCommand('npx', ['cdktf', 'synth', '--output', path.join(outdir, 'cli')], env));
  }
  fs.rmSync(outdir, { recursive: true, force: true });
  const appT = summarize(app);
  const floorT = summarize(floor);
  const ratio = Math.round((appT.medianMs / floorT.medianMs) * 100) / 100;
  return {
    app: { command: 'node main.js', ...appT },
    floor: { command: `node -e "require('cdktf'); require('constructs')"`, ...floorT },
    ratio,
    targetRatio: TARGET_RATIO,
    withinTarget: ratio <= TARGET_RATIO,
    cli: cliRuns > 0 ? { command: 'npx cdktf synth', ...summarize(cli) } : 'skipped',
  };
}

runAlone(module, run);
