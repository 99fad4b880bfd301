// main.ts, the app `npm run synth` runs: the stack from the resolved configuration written
// to the output directory, and a refused configuration printed as its problems with exit
// status 1 (no stack trace). Run in this process, with the environment it reads.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { STACK_NAME } from '../../constructs/stack';

const outdirs: string[] = [];
afterAll(() => outdirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** Runs main.ts once with these WS_ADMISSION_* variables (and no others) into a new output directory. */
async function runMain(env: { [name: string]: string }) {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'main-test-'));
  outdirs.push(outdir);
  const saved = { ...process.env };
  for (const name of Object.keys(process.env)) if (name.startsWith('WS_ADMISSION_')) delete process.env[name];
  Object.assign(process.env, env, { CDKTF_OUTDIR: outdir });
  const exit = jest.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const stdout = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    await jest.isolateModulesAsync(async () => {
      await import('../../main');
    });
    const text = (spy: typeof stderr) => spy.mock.calls.map(([t]) => String(t)).join('');
    return { outdir, exits: exit.mock.calls.map(([code]) => code), stderr: text(stderr), stdout: text(stdout) };
  } finally {
    exit.mockRestore();
    stderr.mockRestore();
    stdout.mockRestore();
    process.env = saved;
  }
}

it('synthesizes the stack on the defaults', async () => {
  const { outdir, exits, stderr, stdout } = await runMain({});
  expect({ exits, stderr }).toStrictEqual({ exits: [], stderr: '' });
  const file = path.join(outdir, 'stacks', STACK_NAME, 'cdk.tf.json');
  // It says what it wrote.
  expect(stdout).toMatch(/^synth: wrote \S*cdk\.tf\.json /);
  expect(path.resolve(stdout.split(' ')[2])).toBe(fs.realpathSync(file));
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  expect(Object.keys(json.resource)).toContain('kubernetes_deployment_v1');
});

it('prints the problems of a refused configuration and exits 1, writing no stack', async () => {
  const { outdir, exits, stderr, stdout } = await runMain({ WS_ADMISSION_MAX_CONNECTIONS_PER_POD: '0' });
  expect(exits).toStrictEqual([1]);
  expect(stdout).toBe('');
  expect(stderr).toBe(
    'Invalid configuration: maxConnectionsPerPod must be a positive integer, got 0. Fix: use a value of at least 1 (default 2).\n',
  );
  expect(fs.existsSync(path.join(outdir, 'stacks', STACK_NAME))).toBe(false);
});
