import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { chooseStack, cdktfOutDir, findOutput, readOutputsFile, synthesizedStacks } from '../../../tools/common/stack-info';
import { parseMetricsArgs } from '../../../tools/metrics/metrics';
import { parseImageArgs } from '../../../tools/deploy/image';
import { formatCommand, KILL_GRACE_MS, NodeProcessRunner } from '../../../tools/common/process';

describe('stack info', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stack-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads the synthesized stacks and the output directory from cdktf files', () => {
    expect(synthesizedStacks(dir)).toEqual([]);
    fs.writeFileSync(path.join(dir, 'cdktf.json'), JSON.stringify({ app: 'node main.js', output: 'out' }));
    fs.mkdirSync(path.join(dir, 'out'));
    fs.writeFileSync(path.join(dir, 'out', 'manifest.json'), JSON.stringify({ stacks: { a: {}, b: {} } }));
    expect(cdktfOutDir(dir)).toBe('out');
    expect(synthesizedStacks(dir, 'out')).toEqual(['a', 'b']);
  });

  it('chooses the only stack, or the named one, and says why not otherwise', () => {
    expect(chooseStack(undefined, ['ws-envoy-admission'])).toBe('ws-envoy-admission');
    expect(chooseStack('b', ['a', 'b'])).toBe('b');
    expect(() => chooseStack(undefined, ['a', 'b'])).toThrow('the app has several stacks (a, b): pass --stack NAME');
    expect(() => chooseStack(undefined, [])).toThrow('the app synthesized no stack (cdktf.out/manifest.json lists none)');
    expect(() => chooseStack('c', ['a', 'b'])).toThrow('stack "c" is not in the synthesized app; stacks: a, b');
  });

  it('finds outputs by name in snake or camel case, ignoring empty values', () => {
    const file = path.join(dir, 'outputs.json');
    fs.writeFileSync(
      file,
      JSON.stringify({ s: { load_balancer_hostname: 'x.elb.amazonaws.com', namespace: '', websocketUrl: 'ws://x/' } }),
    );
    const o = readOutputsFile(file, 's');
    expect(findOutput(o, 'loadBalancerHostname')).toBe('x.elb.amazonaws.com');
    expect(findOutput(o, 'websocket_url')).toBe('ws://x/');
    expect(findOutput(o, 'namespace')).toBeUndefined();
    expect(readOutputsFile(path.join(dir, 'missing.json'), 's')).toEqual({});
  });
});

describe('argument errors name the flag and the value', () => {
  it('metrics', () => {
    expect(() => parseMetricsArgs(['--width', '10'], {})).toThrow('--width must be an integer >= 20, got 10');
    expect(() => parseMetricsArgs(['--url', 'http://x', '--port-forward'], {})).toThrow(
      '--url and --port-forward exclude each other: pick one source',
    );
    expect(parseMetricsArgs([], { WS_ADMISSION_NAMESPACE: 'prod', NO_COLOR: '1' })).toMatchObject({
      namespace: 'prod',
      target: 'deployment/ws-envoy',
      color: false,
      interval: 2,
    });
  });
  it('image', () => {
    expect(() => parseImageArgs([], undefined)).toThrow('no image given: set envoyImage in the config or pass --image');
  });
});

describe('process runner', () => {
  it('answers 127 for a program that is not installed, and captures output otherwise', async () => {
    const r = new NodeProcessRunner();
    expect(await r.run('definitely-not-installed-ws-admission', [])).toMatchObject({ code: 127, notFound: true });
    expect(await r.run(process.execPath, ['-e', 'process.stdout.write("hi"); process.stderr.write("err"); process.exit(3)'])).toMatchObject(
      { code: 3, stdout: 'hi', stderr: 'err', notFound: false },
    );
    expect(
      await r.run(
        process.execPath,
        ['-e', 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(s.toUpperCase()))'],
        { input: 'secret' },
      ),
    ).toMatchObject({ code: 0, stdout: 'SECRET' });
    expect(await r.run(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { timeoutMs: 200 })).toMatchObject({ code: 124 });
  });
  it('kills a timed-out command that ignores SIGTERM, and answers 124 all the same', async () => {
    const r = new NodeProcessRunner();
    const t0 = Date.now();
    const res = await r.run(process.execPath, ['-e', 'process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000)'], {
      timeoutMs: 300,
    });
    expect(res).toMatchObject({ code: 124, notFound: false });
    expect(Date.now() - t0).toBeLessThan(300 + 2 * KILL_GRACE_MS + 2000);
  });
  it('waits for a long-running command to print a line, and stops it', async () => {
    const r = new NodeProcessRunner();
    const p = r.start(process.execPath, ['-e', 'console.log("Forwarding from 127.0.0.1:40123 -> 9901"); setInterval(() => {}, 1000)']);
    await expect(p.waitForOutput(/Forwarding from/, 5000)).resolves.toBe('Forwarding from 127.0.0.1:40123 -> 9901');
    await p.stop();
    const dead = r.start(process.execPath, ['-e', 'console.error("error: no such deployment"); process.exit(1)']);
    await expect(dead.waitForOutput(/Forwarding/, 5000)).rejects.toThrow('exited (code 1) before it was ready: error: no such deployment');
    const missing = r.start('definitely-not-installed-ws-admission', ['port-forward']);
    await expect(missing.waitForOutput(/Forwarding/, 5000)).rejects.toThrow(
      'exited (code 127) before it was ready: definitely-not-installed-ws-admission is not installed (not on PATH)',
    );
  });
  it('quotes commands for messages', () => {
    expect(formatCommand('aws', ['ecr', 'describe-images', '--image-ids', 'imageTag=1.0'])).toBe(
      'aws ecr describe-images --image-ids imageTag=1.0',
    );
    expect(formatCommand('sh', ['-c', "echo 'x y'"])).toBe(`sh -c 'echo '\\''x y'\\'''`);
  });
});
