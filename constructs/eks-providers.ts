import { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { DataAwsEksCluster } from '@cdktf/provider-aws/lib/data-aws-eks-cluster';
import { HelmProvider } from '@cdktf/provider-helm/lib/provider';
import { KubernetesProvider } from '@cdktf/provider-kubernetes/lib/provider';
import { RandomProvider } from '@cdktf/provider-random/lib/provider';
import { Fn } from 'cdktf';
import { Construct } from 'constructs';
import { PART_OF } from './names';

/** The exec credential API both providers ask `aws eks get-token` for. */
export const EXEC_API_VERSION = 'client.authentication.k8s.io/v1beta1';

/** What the rest of the stack needs from the cluster connection, whichever mode made it. */
export interface ClusterProviders {
  readonly kubernetes: KubernetesProvider;
}

export interface EksProvidersProps {
  /** Name of the existing EKS cluster. */
  readonly clusterName: string;
  /** AWS region of the cluster. */
  readonly region: string;
  /**
   * Tags added to every AWS resource the stack creates (aws provider `default_tags`).
   * @default - { 'app.kubernetes.io/part-of': 'ws-admission' }
   */
  readonly tags?: { readonly [key: string]: string };
  /**
   * Configure the helm provider too (for a Helm release in the stack: the AWS Load
   * Balancer Controller, `installLbController`).
   * @default false
   */
  readonly helm?: boolean;
}

/**
 * Looks up an existing EKS cluster and configures the aws, kubernetes and random providers
 * from it (and helm, when asked). Kubernetes credentials come from an exec plugin (`aws eks get-token`),
 * run again whenever the token nears expiry: an apply that waits for rollouts and the NLB
 * longer than a token's 15 minutes keeps working, where a token read once by the
 * `aws_eks_cluster_auth` data source would expire half way. Needs the AWS CLI where
 * terraform runs.
 * @see https://registry.terraform.io/providers/hashicorp/kubernetes/latest/docs#exec-plugins
 */
export class EksProviders extends Construct implements ClusterProviders {
  public readonly cluster: DataAwsEksCluster;
  public readonly kubernetes: KubernetesProvider;
  public readonly helm?: HelmProvider;

  constructor(scope: Construct, id: string, props: EksProvidersProps) {
    super(scope, id);
    if (props.clusterName.trim() === '') {
      throw new Error('EksProviders: clusterName must not be empty; set clusterName to the name of your EKS cluster');
    }
    new AwsProvider(this, 'aws', {
      region: props.region,
      defaultTags: [{ tags: { 'app.kubernetes.io/part-of': PART_OF, ...(props.tags ?? {}) } }],
    });
    this.cluster = new DataAwsEksCluster(this, 'cluster', { name: props.clusterName });
    const exec = {
      apiVersion: EXEC_API_VERSION,
      command: 'aws',
      args: ['eks', 'get-token', '--cluster-name', props.clusterName, '--region', props.region, '--output', 'json'],
    };
    const endpoint = {
      host: this.cluster.endpoint,
      clusterCaCertificate: Fn.base64decode(this.cluster.certificateAuthority.get(0).data),
    };
    this.kubernetes = new KubernetesProvider(this, 'kubernetes', { ...endpoint, exec: [exec] });
    if (props.helm) this.helm = new HelmProvider(this, 'helm', { kubernetes: { ...endpoint, exec } });
    new RandomProvider(this, 'random', {});
  }
}
