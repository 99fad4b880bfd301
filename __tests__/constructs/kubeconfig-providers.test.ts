// constructs/kubeconfig-providers.ts (KubeconfigProviders), built in a small test chart: a
// kubeconfig file and context instead of the EKS lookup, with no AWS at all.
import { KubeconfigProviders } from '../../constructs/kubeconfig-providers';
import { synthStack, testStack } from '../support/synth';

function build(path: string, context?: string) {
  const stack = testStack();
  new KubeconfigProviders(stack, 'kubeconfig', { path, context });
  return synthStack(stack);
}

it('configures kubernetes from the file and context, and random; no aws, no helm, no data source', () => {
  const json = build('/etc/ws/kubeconfig', 'staging');
  expect(json.provider).toStrictEqual({ kubernetes: [{ config_path: '/etc/ws/kubeconfig', config_context: 'staging' }], random: [{}] });
  expect(Object.keys(json.terraform.required_providers).sort()).toStrictEqual(['kubernetes', 'random']);
  expect(json.data).toBeUndefined();
});

it("uses the file's current-context without a context", () => {
  expect(build('~/.kube/config').provider.kubernetes).toStrictEqual([{ config_path: '~/.kube/config' }]);
});

it('refuses an empty path', () => {
  expect(() => build(' ')).toThrow(
    'KubeconfigProviders: path must not be empty; set kubeconfigPath to a kubeconfig file, e.g. "~/.kube/config"',
  );
});
