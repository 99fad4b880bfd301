import { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { DataAwsEksCluster } from '@cdktf/provider-aws/lib/data-aws-eks-cluster';
import { DataAwsEksClusterAuth } from '@cdktf/provider-aws/lib/data-aws-eks-cluster-auth';
import { HelmProvider } from '@cdktf/provider-helm/lib/provider';
import { KubernetesProvider } from '@cdktf/provider-kubernetes/lib/provider';
import { RandomProvider } from '@cdktf/provider-random/lib/provider';
import { Fn } from 'cdktf';
import { Construct } from 'constructs';

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
}

/**
 * Looks up an existing EKS cluster and configures the aws, kubernetes, helm and random
 * providers from it. The token comes from `aws_eks_cluster_auth` (valid ~15 min), so a
 * long apply keeps working only if it finishes within that window; re-run on expiry.
 * @see https://registry.terraform.io/providers/hashicorp/aws/latest/docs/data-sources/eks_cluster_auth
 */
export class EksProviders extends Construct {
  public readonly cluster: DataAwsEksCluster;
  public readonly kubernetes: KubernetesProvider;
  public readonly helm: HelmProvider;

  constructor(scope: Construct, id: string, props: EksProvidersProps) {
    super(scope, id);
    if (props.clusterName.trim() === '') {
      throw new Error('EksProviders: clusterName must not be empty; set clusterName to the name of your EKS cluster');
    }
    new AwsProvider(this, 'aws', {
      region: props.region,
      defaultTags: [{ tags: { 'app.kubernetes.io/part-of': 'ws-admission', ...(props.tags ?? {}) } }],
    });
    this.cluster = new DataAwsEksCluster(this, 'cluster', { name: props.clusterName });
    const auth = new DataAwsEksClusterAuth(this, 'auth', { name: props.clusterName });
    const connection = {
      host: this.cluster.endpoint,
      clusterCaCertificate: Fn.base64decode(this.cluster.certificateAuthority.get(0).data),
      token: auth.token,
    };
    this.kubernetes = new KubernetesProvider(this, 'kubernetes', connection);
    this.helm = new HelmProvider(this, 'helm', { kubernetes: connection });
    new RandomProvider(this, 'random', {});
  }
}
