import { KubernetesProvider } from '@cdktf/provider-kubernetes/lib/provider';
import { RandomProvider } from '@cdktf/provider-random/lib/provider';
import { Construct } from 'constructs';
import { ClusterProviders } from './eks-providers';

export interface KubeconfigProvidersProps {
  /** Path of the kubeconfig file (`~` is expanded by the providers). */
  readonly path: string;
  /**
   * Context of the file to use.
   * @default - the file's current-context
   */
  readonly context?: string;
}

/**
 * Configures the kubernetes and random providers from a kubeconfig file and context: any
 * cluster the file reaches, with no AWS provider or lookup at all. (The stack's one Helm
 * release, the AWS Load Balancer Controller, is EKS only: no helm provider here.)
 * @see https://registry.terraform.io/providers/hashicorp/kubernetes/latest/docs#file-config
 */
export class KubeconfigProviders extends Construct implements ClusterProviders {
  public readonly kubernetes: KubernetesProvider;

  constructor(scope: Construct, id: string, props: KubeconfigProvidersProps) {
    super(scope, id);
    if (props.path.trim() === '') {
      throw new Error('KubeconfigProviders: path must not be empty; set kubeconfigPath to a kubeconfig file, e.g. "~/.kube/config"');
    }
    const connection = {
      configPath: props.path,
      ...(props.context ? { configContext: props.context } : {}),
    };
    this.kubernetes = new KubernetesProvider(this, 'kubernetes', connection);
    new RandomProvider(this, 'random', {});
  }
}
