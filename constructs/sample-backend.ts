import { DeploymentV1 } from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { Construct } from 'constructs';
import { imageProblem } from '../config/validate';
import { NAMES, componentLabels } from './names';
import { containerSecurityContext, podSecurityContext, resources } from './security';

export interface SampleBackendProps {
  readonly namespace: string;
  /** Pinned WebSocket echo image that listens on `$PORT`. */
  readonly image: string;
  /** Labels the pods carry (the backend Service selects them). */
  readonly labels: { readonly [key: string]: string };
  readonly port: number;
  /**
   * Replicas.
   * @default 3
   */
  readonly replicas?: number;
  /**
   * Path of the readiness/liveness probes.
   * @default '/'
   */
  readonly healthCheckPath?: string;
}

/** A small WebSocket echo backend, so a default deploy works end to end. */
export class SampleBackend extends Construct {
  public readonly replicas: number;
  public readonly deployment: DeploymentV1;

  constructor(scope: Construct, id: string, props: SampleBackendProps) {
    super(scope, id);
    this.replicas = props.replicas ?? 3;
    if (!Number.isSafeInteger(this.replicas) || this.replicas < 1) {
      throw new Error(`SampleBackend: replicas must be a positive integer, got ${this.replicas}; use 1 or more`);
    }
    const imageErr = imageProblem(props.image);
    if (imageErr) throw new Error(`SampleBackend: image ${imageErr}, got ${JSON.stringify(props.image)}`);
    const labels = { ...componentLabels(NAMES.sampleBackend, 'backend'), ...props.labels };
    const probe = { httpGet: { path: props.healthCheckPath ?? '/', port: String(props.port) } };
    this.deployment = new DeploymentV1(this, 'deployment', {
      metadata: { name: NAMES.sampleBackend, namespace: props.namespace, labels },
      spec: {
        replicas: String(this.replicas),
        selector: { matchLabels: { ...props.labels } },
        template: {
          metadata: { labels },
          spec: {
            automountServiceAccountToken: false,
            enableServiceLinks: false,
            securityContext: podSecurityContext(65534),
            container: [
              {
                name: 'echo',
                image: props.image,
                port: [{ name: 'ws', containerPort: props.port, protocol: 'TCP' }],
                env: [{ name: 'PORT', value: String(props.port) }],
                resources: resources({ cpuRequest: '50m', memoryRequest: '32Mi', cpuLimit: '250m', memoryLimit: '64Mi' }),
                securityContext: containerSecurityContext(),
                readinessProbe: { ...probe, periodSeconds: 5, timeoutSeconds: 2 },
                livenessProbe: { ...probe, periodSeconds: 10, timeoutSeconds: 2 },
              },
            ],
          },
        },
      },
    });
  }
}
