import { ServiceV1 } from '@cdktf/provider-kubernetes/lib/service-v1';
import { Construct } from 'constructs';
import { dns1123LabelProblem, labelsProblem } from '../config/validate';
import { componentLabels } from './names';

export interface BackendServiceProps {
  readonly namespace: string;
  /** Service name; Envoy resolves `<name>.<namespace>.svc.cluster.local`. */
  readonly name: string;
  /** Labels of the backend pods. */
  readonly selector: { readonly [key: string]: string };
  /** Container port of the backend pods. */
  readonly port: number;
}

/**
 * A headless Service (clusterIP None) over the WebSocket backend pods. A ClusterIP would
 * hide the pods behind one virtual IP; the per-pod limit needs Envoy to see each pod, so
 * its STRICT_DNS cluster resolves this name to one A record per ready pod.
 * `publishNotReadyAddresses: false`: a pod that is not ready is not offered.
 */
export class BackendService extends Construct {
  public readonly name: string;
  /** The DNS name Envoy's `backend` cluster resolves. */
  public readonly host: string;
  public readonly port: number;
  public readonly service: ServiceV1;

  constructor(scope: Construct, id: string, props: BackendServiceProps) {
    super(scope, id);
    const nameErr = dns1123LabelProblem(props.name);
    if (nameErr) throw new Error(`BackendService: name ${nameErr}, got ${JSON.stringify(props.name)}`);
    const selErr = labelsProblem(props.selector);
    if (selErr) throw new Error(`BackendService: selector ${selErr}, got ${JSON.stringify(props.selector)}`);
    if (!Number.isInteger(props.port) || props.port < 1 || props.port > 65535) {
      throw new Error(`BackendService: port must be an integer between 1 and 65535, got ${props.port}`);
    }
    this.name = props.name;
    this.port = props.port;
    this.host = `${props.name}.${props.namespace}.svc.cluster.local`;
    this.service = new ServiceV1(this, 'service', {
      metadata: { name: props.name, namespace: props.namespace, labels: componentLabels(props.name, 'backend') },
      spec: {
        clusterIp: 'None',
        publishNotReadyAddresses: false,
        selector: { ...props.selector },
        port: [{ name: 'ws', port: props.port, targetPort: String(props.port), protocol: 'TCP' }],
      },
    });
  }
}
