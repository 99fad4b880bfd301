// constructs/eks-providers.ts and constructs/kubeconfig-providers.ts: how the stack reaches the
// cluster (EKS lookups and an exec plugin, or a kubeconfig file with no AWS at all).
import * as path from 'path';
import { Testing } from 'cdktf';
import { FIXTURES, synth } from '../support/synth';

describe('GIVEN the defaults (EKS mode)', () => {
  const { text, json } = synth();

  it('looks up the EKS cluster and configures the providers from it', () => {
    expect(Testing.toHaveDataSourceWithProperties(text, 'aws_eks_cluster', { name: 'ws-eks' })).toBe(true);
    expect(json.provider.aws[0].region).toBe('us-east-1');
    const k8s = json.provider.kubernetes[0];
    expect(k8s.host).toMatch(/^\$\{data\.aws_eks_cluster\.[^.]+\.endpoint\}$/);
    expect(k8s.cluster_ca_certificate).toMatch(/^\$\{base64decode\(data\.aws_eks_cluster\.[^.]+\.certificate_authority\[0\]\.data\)\}$/);
  });

  it('authenticates kubernetes and helm with `aws eks get-token` (an exec plugin), not a 15-minute token read once', () => {
    // GIVEN the EKS profile with a Helm release (the controller)
    const policy = path.join(FIXTURES, 'iam', 'lb-controller-policy.json');
    const { json } = synth({ installLbController: true, lbControllerIamPolicyFile: policy });
    const exec = {
      api_version: 'client.authentication.k8s.io/v1beta1',
      command: 'aws',
      args: ['eks', 'get-token', '--cluster-name', 'ws-eks', '--region', 'us-east-1', '--output', 'json'],
    };
    const k8s = json.provider.kubernetes[0];
    // THEN both providers run the plugin, and no token is read at plan time
    expect(k8s.exec).toStrictEqual([exec]);
    expect(k8s.token).toBeUndefined();
    expect(json.data.aws_eks_cluster_auth).toBeUndefined();
    // helm 3.x takes `kubernetes` (and its `exec`) as nested objects, not blocks
    expect(json.provider.helm[0].kubernetes).toStrictEqual({ host: k8s.host, cluster_ca_certificate: k8s.cluster_ca_certificate, exec });
  });
});

describe('kubeconfig target', () => {
  // GIVEN a kubeconfig file and context instead of the EKS lookup
  const { json } = synth({ kubeconfigPath: '/etc/ws/kubeconfig', kubeContext: 'staging' });
  const text = JSON.stringify(json);

  it('configures kubernetes from the file and context (no helm: the one Helm release is EKS only)', () => {
    expect(json.provider.kubernetes).toStrictEqual([{ config_path: '/etc/ws/kubeconfig', config_context: 'staging' }]);
    expect(json.provider.helm).toBeUndefined();
    expect(json.provider.random).toStrictEqual([{}]);
  });

  it('has no AWS in the output: no aws provider, no aws_* data source or resource, no AWS requirement', () => {
    expect(Object.keys(json.provider).sort()).toStrictEqual(['kubernetes', 'random']);
    expect(Object.keys(json.terraform.required_providers).sort()).toStrictEqual(['kubernetes', 'random']);
    expect(json.data).toBeUndefined();
    expect(Object.keys(json.resource).filter((t) => t.startsWith('aws_'))).toStrictEqual([]);
    expect(text).not.toMatch(/aws_eks|"aws"|get-token/);
  });

  it("deploys the same objects as the EKS profile once metricsAllowedCidrs names the metrics port's sources", () => {
    const eks = synth().json;
    const own = synth({ kubeconfigPath: '/etc/ws/kubeconfig', kubeContext: 'staging', metricsAllowedCidrs: ['10.0.0.0/16'] }).json;
    for (const type of Object.keys(eks.resource)) {
      expect(Object.keys(own.resource[type]).sort()).toStrictEqual(Object.keys(eks.resource[type]).sort());
    }
    // Without them there is no VPC to look up: no Envoy NetworkPolicy rather than one
    // that would block the kubelet's probes (Redis keeps its own).
    expect(Object.keys(json.resource.kubernetes_network_policy_v1)).toStrictEqual(['redis_network-policy_61AE90EF']);
  });

  it("uses the file's current-context when kubeContext is empty", () => {
    const own = synth({ kubeconfigPath: '~/.kube/config' }).json;
    expect(own.provider.kubernetes).toStrictEqual([{ config_path: '~/.kube/config' }]);
  });
});
