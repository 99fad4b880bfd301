// constructs/nlb.ts (Nlb), built in a small test chart: the LoadBalancer Service the AWS Load
// Balancer Controller turns into an NLB, its listeners, TLS, idle timeouts and health check.
// (The values the stack derives from the config, e.g. the idle timeout from
// idleTimeoutSeconds and the wss:// URL: constructs/stack.test.ts.)
import { TerraformOutput } from 'cdktf';
import { NLB_PLAIN_PORT, Nlb, NlbProps } from '../../constructs/nlb';
import { METRICS_PORT, READY_PATH } from '../../envoy/bootstrap';
import { Json, only, synthStack, testStack } from '../support/synth';

const LBC = 'service.beta.kubernetes.io/aws-load-balancer';
const SELECTOR = { 'app.kubernetes.io/name': 'ws-envoy', 'app.kubernetes.io/part-of': 'ws-admission' };
const ARN = 'arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
const TLS = { certificateArns: [ARN], port: 443, policy: 'ELBSecurityPolicy-TLS13-1-2-2021-06', keepPlainPort: false };

/** An Nlb in a test chart: the construct and its Service. */
function build(props: Partial<NlbProps> = {}) {
  const stack = testStack();
  const nlb = new Nlb(stack, 'nlb', { namespace: 'ns', selector: SELECTOR, ...props });
  return { nlb, service: only(synthStack(stack), 'kubernetes_service_v1') };
}
const listenerAttributes = (svc: Json) =>
  Object.entries(svc.metadata.annotations as Record<string, string>).filter(([k]) => k.startsWith(`${LBC}-listener-attributes.`));

describe('GIVEN the defaults', () => {
  const { nlb, service } = build();

  it('is an internet-facing NLB with IP targets, cross-zone, a 30 s deregistration and an HTTP health check on READY_PATH', () => {
    expect(service.metadata).toMatchObject({ name: 'ws-envoy-nlb', namespace: 'ns' });
    expect(service.wait_for_load_balancer).toBe(true);
    expect(service.metadata.annotations).toEqual({
      [`${LBC}-type`]: 'external',
      [`${LBC}-nlb-target-type`]: 'ip',
      [`${LBC}-scheme`]: 'internet-facing',
      [`${LBC}-attributes`]: 'load_balancing.cross_zone.enabled=true',
      [`${LBC}-target-group-attributes`]: 'deregistration_delay.timeout_seconds=30',
      [`${LBC}-healthcheck-protocol`]: 'HTTP',
      [`${LBC}-healthcheck-port`]: String(METRICS_PORT),
      [`${LBC}-healthcheck-path`]: READY_PATH,
      [`${LBC}-healthcheck-interval`]: '10',
      [`${LBC}-healthcheck-timeout`]: '5',
      [`${LBC}-healthcheck-healthy-threshold`]: '2',
      [`${LBC}-healthcheck-unhealthy-threshold`]: '2',
    });
    expect(nlb.annotations).toEqual(service.metadata.annotations);
  });

  it("publishes the plain ws:// port only, to the pods' http port, from anywhere", () => {
    expect(service.spec).toEqual({
      type: 'LoadBalancer',
      selector: SELECTOR,
      port: [{ name: 'http', port: NLB_PLAIN_PORT, target_port: 'http', protocol: 'TCP' }],
    });
    expect(NLB_PLAIN_PORT).toBe(80);
  });

  it('gives its hostname null-safe: "" until the controller has made the NLB', () => {
    expect(nlb.hostname).toMatch(/^\$\{TfToken\[TOKEN\.\d+\]\}$/);
    const stack = testStack();
    const n = new Nlb(stack, 'nlb', { namespace: 'ns', selector: SELECTOR });
    // An output of it shows the expression Terraform evaluates.
    new TerraformOutput(stack, 'h', { value: n.hostname });
    expect(synthStack(stack).output.h.value).toMatch(
      /^\$\{try\(kubernetes_service_v1\.nlb_service_[0-9A-F]+\.status\[0\]\.load_balancer\[0\]\.ingress\[0\]\.hostname, ""\)\}$/,
    );
  });
});

describe('GIVEN one prop at a time', () => {
  it('scheme internal, proxy protocol, the metrics port, source ranges, another deregistration delay', () => {
    const { service } = build({
      scheme: 'internal',
      proxyProtocol: true,
      exposeMetrics: true,
      sourceRanges: ['203.0.113.0/24'],
      deregistrationDelaySeconds: 5,
    });
    const a = service.metadata.annotations;
    expect(a[`${LBC}-scheme`]).toBe('internal');
    expect(a[`${LBC}-proxy-protocol`]).toBe('*');
    expect(a[`${LBC}-target-group-attributes`]).toBe('deregistration_delay.timeout_seconds=5');
    expect(service.spec.port).toEqual([
      { name: 'http', port: 80, target_port: 'http', protocol: 'TCP' },
      { name: 'metrics', port: METRICS_PORT, target_port: 'metrics', protocol: 'TCP' },
    ]);
    expect(service.spec.load_balancer_source_ranges).toEqual(['203.0.113.0/24']);
  });

  it('tcpIdleTimeoutSeconds: on every TCP listener it publishes (the metrics one too)', () => {
    const { service } = build({ tcpIdleTimeoutSeconds: 330, exposeMetrics: true });
    expect(listenerAttributes(service)).toEqual([
      [`${LBC}-listener-attributes.TCP-80`, 'tcp.idle_timeout.seconds=330'],
      [`${LBC}-listener-attributes.TCP-${METRICS_PORT}`, 'tcp.idle_timeout.seconds=330'],
    ]);
    // Not set: the NLB keeps its own 350 s (for a controller older than v2.9.0).
    expect(listenerAttributes(build().service)).toEqual([]);
  });

  it('tls: terminates at the NLB (certificates, port, policy) and sends to the plain listener; the plain port closes', () => {
    const { service } = build({
      tls: { ...TLS, certificateArns: [ARN, ARN.replace('eu-west-1', 'us-east-1')] },
      tcpIdleTimeoutSeconds: 330,
    });
    const a = service.metadata.annotations;
    expect(a[`${LBC}-ssl-cert`]).toBe(`${ARN},${ARN.replace('eu-west-1', 'us-east-1')}`);
    expect(a[`${LBC}-ssl-ports`]).toBe('443');
    expect(a[`${LBC}-ssl-negotiation-policy`]).toBe('ELBSecurityPolicy-TLS13-1-2-2021-06');
    expect(service.spec.port).toEqual([{ name: 'https', port: 443, target_port: 'http', protocol: 'TCP' }]);
    // AWS fixes a TLS listener's idle timeout at 350 s: the attribute is for TCP listeners only.
    expect(listenerAttributes(service)).toEqual([]);
  });

  it('tls with keepPlainPort: both listeners, the idle timeout on the plain one', () => {
    const { service } = build({ tls: { ...TLS, port: 8443, keepPlainPort: true }, tcpIdleTimeoutSeconds: 150 });
    expect(service.spec.port.map((p: Json) => [p.name, p.port])).toEqual([
      ['http', 80],
      ['https', 8443],
    ]);
    expect(listenerAttributes(service)).toEqual([[`${LBC}-listener-attributes.TCP-80`, 'tcp.idle_timeout.seconds=150']]);
  });

  it('dependsOn: created after it (the load balancer controller, whose webhook acts on it)', () => {
    const stack = testStack();
    const first = new Nlb(stack, 'first', { namespace: 'ns', selector: SELECTOR });
    new Nlb(stack, 'second', { namespace: 'ns2', selector: SELECTOR, dependsOn: [first.service] });
    const services = Object.values(synthStack(stack).resource.kubernetes_service_v1 as Record<string, Json>);
    expect(services[1].depends_on).toEqual([expect.stringMatching(/^kubernetes_service_v1\.first_service_/)]);
  });
});

describe('props are validated', () => {
  it("the TCP idle timeout is within the NLB's 60-6000 s", () => {
    for (const bad of [59, 6001, 90.5]) {
      expect(() => build({ tcpIdleTimeoutSeconds: bad })).toThrow(
        `Nlb: tcpIdleTimeoutSeconds must be an integer between 60 and 6000 (the NLB's range), got ${bad}`,
      );
    }
  });

  it('the deregistration delay is 0-3600 s', () => {
    expect(() => build({ deregistrationDelaySeconds: 4000 })).toThrow(
      'Nlb: deregistrationDelaySeconds must be an integer between 0 and 3600, got 4000',
    );
  });

  it('TLS needs a certificate, and no two listeners share a port', () => {
    expect(() => build({ tls: { ...TLS, certificateArns: [] } })).toThrow(
      'Nlb: tls.certificateArns must name at least one ACM certificate',
    );
    expect(() => build({ tls: { ...TLS, port: 80, keepPlainPort: true } })).toThrow(
      'Nlb: two listeners on one port (http 80, https 80); choose another tls.port',
    );
  });
});

describe.each(['NodePort', 'ClusterIP'] as const)('GIVEN type %s (a cluster without a load balancer controller)', (type) => {
  const { nlb, service } = build({ type });

  it('is a Service of that type, without the controller annotations, that the apply does not wait for', () => {
    expect(service.spec.type).toBe(type);
    expect(service.wait_for_load_balancer).toBe(false);
    expect(service.metadata.annotations).toBeUndefined();
    expect(service.spec.port).toEqual([{ name: 'http', port: 80, target_port: 'http', protocol: 'TCP' }]);
    expect(nlb.hostname).toBe('');
  });

  it('refuses the props only an NLB has', () => {
    expect(() => build({ type, proxyProtocol: true, sourceRanges: ['10.0.0.0/8'] })).toThrow(
      `Nlb: proxyProtocol, sourceRanges apply to a LoadBalancer Service only, got type "${type}"; set type "LoadBalancer" or leave them unset`,
    );
  });
});
