// constructs/eks-providers.ts (EksProviders), built in a small test chart: the EKS cluster
// lookup and the providers configured from it, authenticated by an exec plugin.
import { Testing } from 'cdktf';
import { EXEC_API_VERSION, EksProviders, EksProvidersProps } from '../../constructs/eks-providers';
import { synthStack, testStack } from '../support/synth';

function build(props: Partial<EksProvidersProps> = {}) {
  const stack = testStack();
  const providers = new EksProviders(stack, 'eks', { clusterName: 'ws-eks', region: 'us-east-1', ...props });
  return { providers, json: synthStack(stack), text: Testing.synth(stack) };
}
const EXEC = {
  api_version: EXEC_API_VERSION,
  command: 'aws',
  args: ['eks', 'get-token', '--cluster-name', 'ws-eks', '--region', 'us-east-1', '--output', 'json'],
};

describe('GIVEN a cluster name and region', () => {
  const { json, text } = build();

  it('looks up the EKS cluster and configures aws (tagging what it creates), kubernetes from the cluster, random; no helm', () => {
    expect(Testing.toHaveDataSourceWithProperties(text, 'aws_eks_cluster', { name: 'ws-eks' })).toBe(true);
    expect(json.provider.aws).toEqual([{ region: 'us-east-1', default_tags: [{ tags: { 'app.kubernetes.io/part-of': 'ws-admission' } }] }]);
    expect(json.provider.random).toEqual([{}]);
    expect(json.provider.helm).toBeUndefined();
    const k8s = json.provider.kubernetes[0];
    expect(k8s.host).toMatch(/^\$\{data\.aws_eks_cluster\.[^.]+\.endpoint\}$/);
    expect(k8s.cluster_ca_certificate).toMatch(/^\$\{base64decode\(data\.aws_eks_cluster\.[^.]+\.certificate_authority\[0\]\.data\)\}$/);
  });

  it('authenticates with `aws eks get-token` (an exec plugin, run again before expiry), not a 15-minute token read once', () => {
    expect(json.provider.kubernetes[0].exec).toStrictEqual([EXEC]);
    expect(json.provider.kubernetes[0].token).toBeUndefined();
    expect(json.data.aws_eks_cluster_auth).toBeUndefined();
  });
});

describe('GIVEN one prop at a time', () => {
  it('helm: configured like kubernetes (nested objects in helm 3.x, not blocks)', () => {
    const { json } = build({ helm: true });
    const k8s = json.provider.kubernetes[0];
    expect(json.provider.helm[0].kubernetes).toStrictEqual({
      host: k8s.host,
      cluster_ca_certificate: k8s.cluster_ca_certificate,
      exec: EXEC,
    });
  });

  it('tags: added to the default one', () => {
    expect(build({ tags: { team: 'edge' } }).json.provider.aws[0].default_tags).toEqual([
      { tags: { 'app.kubernetes.io/part-of': 'ws-admission', team: 'edge' } },
    ]);
  });

  it('refuses an empty cluster name', () => {
    expect(() => build({ clusterName: ' ' })).toThrow(
      'EksProviders: clusterName must not be empty; set clusterName to the name of your EKS cluster',
    );
  });
});
