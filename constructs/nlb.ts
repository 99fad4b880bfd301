import { ServiceV1, ServiceV1SpecPort } from '@cdktf/provider-kubernetes/lib/service-v1';
import { Fn, ITerraformDependable, Token } from 'cdktf';
import { Construct } from 'constructs';
import { NLB_TCP_IDLE_TIMEOUT, NlbScheme, PublicServiceType } from '../config/schema';
import { METRICS_PORT, READY_PATH } from '../envoy/bootstrap';
import { NAMES, componentLabels } from './names';

const ANNOTATION = 'service.beta.kubernetes.io/aws-load-balancer';
/** The NLB's plain WebSocket listener port (ws://; the TLS one is nlbTlsPort). Envoy's own port is envoy/bootstrap.ts PUBLIC_PORT. */
export const NLB_PLAIN_PORT = 80;

export interface NlbProps {
  readonly namespace: string;
  /** Labels of the Envoy pods. */
  readonly selector: { readonly [key: string]: string };
  /**
   * Type of the Service. `LoadBalancer` is the NLB (the controller's annotations, the
   * apply waits for its address); `NodePort` and `ClusterIP` are for a cluster without a
   * load balancer implementation: no annotations, no wait, and none of the NLB-only props
   * (tls, exposeMetrics, proxyProtocol, sourceRanges) may be set.
   * @default 'LoadBalancer'
   * @see https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types
   */
  readonly type?: PublicServiceType;
  /**
   * Scheme of the NLB.
   * @default 'internet-facing'
   */
  readonly scheme?: NlbScheme;
  /**
   * Send proxy protocol v2 to Envoy (Envoy must expect it on the public listener).
   * @default false
   */
  readonly proxyProtocol?: boolean;
  /**
   * Also publish the metrics listener (9901) on the NLB.
   * @default false
   */
  readonly exposeMetrics?: boolean;
  /**
   * Seconds the NLB keeps a deregistering target's connections (WebSockets) alive.
   * @default 30
   */
  readonly deregistrationDelaySeconds?: number;
  /**
   * TCP idle timeout of the NLB's listener (`tcp.idle_timeout.seconds`, 60-6000). A
   * quiet WebSocket must be closed by Envoy's idle timeout, which answers the client,
   * before the NLB forgets the flow silently: set it above Envoy's.
   * @default - not set: the NLB keeps its own 350 s
   */
  readonly tcpIdleTimeoutSeconds?: number;
  /**
   * A TLS listener (certificates from ACM) in front of Envoy's plain listener.
   * @default - plain ws:// on port 80 only
   */
  readonly tls?: NlbTls;
  /**
   * Client address blocks allowed to connect (`loadBalancerSourceRanges`).
   * @default - anywhere
   */
  readonly sourceRanges?: readonly string[];
  /**
   * Created after these (e.g. the load balancer controller that reconciles it).
   * @default - none
   */
  readonly dependsOn?: ITerraformDependable[];
}

export interface NlbTls {
  /** ACM certificate ARNs; the first is the default, the others are offered by SNI. */
  readonly certificateArns: readonly string[];
  readonly port: number;
  /** ELB security policy of the listener. */
  readonly policy: string;
  /** Keep the plain port 80 open too. */
  readonly keepPlainPort: boolean;
}

/**
 * The public entry: a Service of type LoadBalancer reconciled by the AWS Load Balancer
 * Controller into an NLB with IP targets (straight to the Envoy pods), cross-zone load
 * balancing, and an HTTP health check on Envoy's `/ready` (metrics listener).
 * @see https://kubernetes-sigs.github.io/aws-load-balancer-controller/latest/guide/service/annotations/
 */
export class Nlb extends Construct {
  public readonly type: PublicServiceType;
  public readonly service: ServiceV1;
  /** DNS name of the NLB, or "" until it exists (always "" for a NodePort or ClusterIP Service). */
  public readonly hostname: string;
  public readonly annotations: { readonly [key: string]: string };

  constructor(scope: Construct, id: string, props: NlbProps) {
    super(scope, id);
    this.type = props.type ?? 'LoadBalancer';
    const delay = props.deregistrationDelaySeconds ?? 30;
    this.validate(props, delay);
    const ports = renderPorts(props);
    const lb = this.type === 'LoadBalancer';
    this.annotations = lb ? renderAnnotations(props, delay, ports) : {};
    this.service = this.renderService(props, ports);
    this.hostname = lb ? Token.asString(Fn.try([this.service.status.get(0).loadBalancer.get(0).ingress.get(0).hostname, ''])) : '';
  }

  private validate(props: NlbProps, delay: number): void {
    if (!Number.isInteger(delay) || delay < 0 || delay > 3600) {
      throw new Error(`Nlb: deregistrationDelaySeconds must be an integer between 0 and 3600, got ${delay}`);
    }
    const idle = props.tcpIdleTimeoutSeconds;
    if (idle !== undefined && (!Number.isInteger(idle) || idle < NLB_TCP_IDLE_TIMEOUT.min || idle > NLB_TCP_IDLE_TIMEOUT.max)) {
      throw new Error(
        `Nlb: tcpIdleTimeoutSeconds must be an integer between ${NLB_TCP_IDLE_TIMEOUT.min} and ${NLB_TCP_IDLE_TIMEOUT.max} (the NLB's range), got ${idle}`,
      );
    }
    if (this.type !== 'LoadBalancer') {
      const nlbOnly = Object.entries({
        tls: props.tls !== undefined,
        exposeMetrics: props.exposeMetrics === true,
        proxyProtocol: props.proxyProtocol === true,
        sourceRanges: (props.sourceRanges ?? []).length > 0,
      })
        .filter(([, set]) => set)
        .map(([name]) => name);
      if (nlbOnly.length > 0) {
        throw new Error(
          `Nlb: ${nlbOnly.join(', ')} apply to a LoadBalancer Service only, got type ${JSON.stringify(this.type)}; set type "LoadBalancer" or leave them unset`,
        );
      }
    }
    if (props.tls && props.tls.certificateArns.length === 0)
      throw new Error('Nlb: tls.certificateArns must name at least one ACM certificate');
  }

  private renderService(props: NlbProps, ports: ServiceV1SpecPort[]): ServiceV1 {
    const lb = this.type === 'LoadBalancer';
    return new ServiceV1(this, 'service', {
      metadata: {
        name: NAMES.nlb,
        namespace: props.namespace,
        labels: componentLabels(NAMES.envoy, 'load-balancer'),
        ...(lb ? { annotations: this.annotations } : {}),
      },
      spec: {
        type: this.type,
        selector: { ...props.selector },
        port: ports,
        ...(props.sourceRanges && props.sourceRanges.length > 0 ? { loadBalancerSourceRanges: [...props.sourceRanges] } : {}),
      },
      // Only a LoadBalancer gets an address to wait for; elsewhere the apply would hang.
      waitForLoadBalancer: lb,
      ...(props.dependsOn ? { dependsOn: props.dependsOn } : {}),
    });
  }
}

/**
 * The listeners the NLB publishes. TLS terminates at the NLB: its port goes to Envoy's
 * plain listener too. Refuses two on one port.
 */
function renderPorts(props: NlbProps): ServiceV1SpecPort[] {
  const tls = props.tls;
  const plain = { name: 'http', port: NLB_PLAIN_PORT, targetPort: 'http', protocol: 'TCP' };
  const ports = [
    ...(!tls || tls.keepPlainPort ? [plain] : []),
    ...(tls ? [{ name: 'https', port: tls.port, targetPort: 'http', protocol: 'TCP' }] : []),
    ...(props.exposeMetrics ? [{ name: 'metrics', port: METRICS_PORT, targetPort: 'metrics', protocol: 'TCP' }] : []),
  ];
  if (new Set(ports.map((p) => p.port)).size !== ports.length) {
    throw new Error(`Nlb: two listeners on one port (${ports.map((p) => `${p.name} ${p.port}`).join(', ')}); choose another tls.port`);
  }
  return ports;
}

/** The AWS Load Balancer Controller's annotations: the NLB, its listeners and its health check. */
function renderAnnotations(props: NlbProps, delay: number, ports: ServiceV1SpecPort[]): { [key: string]: string } {
  const tls = props.tls;
  const idle = props.tcpIdleTimeoutSeconds;
  // A TLS listener's idle timeout is fixed at 350 s by AWS: the attribute is for TCP
  // listeners only.
  const tcpListeners = ports.filter((p) => p.name !== 'https');
  return {
    [`${ANNOTATION}-type`]: 'external',
    [`${ANNOTATION}-nlb-target-type`]: 'ip',
    [`${ANNOTATION}-scheme`]: props.scheme ?? 'internet-facing',
    [`${ANNOTATION}-attributes`]: 'load_balancing.cross_zone.enabled=true',
    [`${ANNOTATION}-target-group-attributes`]: `deregistration_delay.timeout_seconds=${delay}`,
    // Needs a controller that knows listener attributes (v2.9.0+); an older one ignores
    // the annotation and the NLB keeps 350 s.
    ...Object.fromEntries(
      idle === undefined
        ? []
        : tcpListeners.map((p) => [`${ANNOTATION}-listener-attributes.${p.protocol}-${p.port}`, `tcp.idle_timeout.seconds=${idle}`]),
    ),
    ...(tls
      ? {
          [`${ANNOTATION}-ssl-cert`]: tls.certificateArns.join(','),
          [`${ANNOTATION}-ssl-ports`]: String(tls.port),
          [`${ANNOTATION}-ssl-negotiation-policy`]: tls.policy,
        }
      : {}),
    [`${ANNOTATION}-healthcheck-protocol`]: 'HTTP',
    [`${ANNOTATION}-healthcheck-port`]: String(METRICS_PORT),
    // The readiness path: a proxy whose agent is down takes no new clients (ready.lua).
    [`${ANNOTATION}-healthcheck-path`]: READY_PATH,
    [`${ANNOTATION}-healthcheck-interval`]: '10',
    [`${ANNOTATION}-healthcheck-timeout`]: '5',
    [`${ANNOTATION}-healthcheck-healthy-threshold`]: '2',
    [`${ANNOTATION}-healthcheck-unhealthy-threshold`]: '2',
    ...(props.proxyProtocol ? { [`${ANNOTATION}-proxy-protocol`]: '*' } : {}),
  };
}
