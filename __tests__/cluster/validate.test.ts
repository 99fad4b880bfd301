// Every config profile of the stack tests, judged by the real providers: `init` from the
// toolchain's offline mirror, then `validate` (schemas, types, references, required
// attributes). Kubeconfig mode: the aws provider is not built (see toolchain.json).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { findInstalled } from '../../tools/cluster/toolchain';
import { PROFILES, synthInto, tf, tfOk } from './support';

const toolchain = findInstalled();
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ws-validate-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe(`${toolchain.cli.kind} ${toolchain.cli.version} validate with the real kubernetes and random providers`, () => {
  it.each(PROFILES.map(([name, overrides], i) => [name, i, overrides] as const))('%s', (_name, i, overrides) => {
    // GIVEN the profile in kubeconfig mode (no AWS provider to build)
    const { dir, json } = synthInto(path.join(root, `p${i}`), toolchain, { ...overrides, kubeconfigPath: '/nonexistent/kubeconfig' });
    expect(Object.keys(json.terraform.required_providers).sort()).toStrictEqual(['kubernetes', 'random']);
    // WHEN init (without the backend: the S3 profile needs no AWS to validate) and validate run
    tfOk(toolchain, dir, ['init', '-backend=false', '-input=false']);
    const out = tfOk(toolchain, dir, ['validate']);
    // THEN the providers accept every block, without a warning
    expect(out).toContain('Success! The configuration is valid');
    expect(out).not.toMatch(/Warning/);
  });

  it('refuses what the providers do not know (the check can fail)', () => {
    // GIVEN the defaults with one attribute the kubernetes provider has no schema for
    const { dir, json } = synthInto(path.join(root, 'broken'), toolchain, { kubeconfigPath: '/nonexistent/kubeconfig' });
    const deployments = json.resource.kubernetes_deployment_v1;
    const first = Object.keys(deployments)[0];
    deployments[first].spec.template.spec.container[0].no_such_field = true;
    fs.writeFileSync(path.join(dir, 'cdk.tf.json'), JSON.stringify(json));
    tfOk(toolchain, dir, ['init', '-backend=false', '-input=false']);
    // WHEN validated THEN it fails and names the attribute
    const r = tf(toolchain, dir, ['validate']);
    expect(r.status).toBe(1);
    expect(r.out).toContain('no_such_field');
  });
});
