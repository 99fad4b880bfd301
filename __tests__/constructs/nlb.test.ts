// constructs/nlb.ts (EnvoyNlb): the NLB Service, its listeners, TLS and idle timeouts, and the
// metrics Service beside it, as the stack synthesizes them.
// (Each block: GIVEN the profile its describe names, WHEN the stack is synthesized, THEN the
// resources it checks.)
import { EVERYTHING_CHANGED, Json, byName, resources, synth } from '../support/synth';

const LBC = 'service.beta.kubernetes.io/aws-load-balancer';

describe('GIVEN the defaults', () => {
  const { json } = synth();

  it('puts Envoy behind an internet-facing NLB with IP targets, cross-zone and a /ready health check', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.wait_for_load_balancer).toBe(true);
    expect(nlb.spec.type).toBe('LoadBalancer');
    expect(nlb.spec.port).toEqual([{ name: 'http', port: 80, target_port: 'http', protocol: 'TCP' }]);
    expect(nlb.metadata.annotations).toEqual({
      [`${LBC}-type`]: 'external',
      [`${LBC}-nlb-target-type`]: 'ip',
      [`${LBC}-scheme`]: 'internet-facing',
      [`${LBC}-attributes`]: 'load_balancing.cross_zone.enabled=true',
      [`${LBC}-target-group-attributes`]: 'deregistration_delay.timeout_seconds=30',
      // Envoy's idle timeout (300 s) + 30 s: Envoy ends a quiet WebSocket, not the NLB.
      [`${LBC}-listener-attributes.TCP-80`]: 'tcp.idle_timeout.seconds=330',
      [`${LBC}-healthcheck-protocol`]: 'HTTP',
      [`${LBC}-healthcheck-port`]: '9901',
      [`${LBC}-healthcheck-path`]: '/ready',
      [`${LBC}-healthcheck-interval`]: '10',
      [`${LBC}-healthcheck-timeout`]: '5',
      [`${LBC}-healthcheck-healthy-threshold`]: '2',
      [`${LBC}-healthcheck-unhealthy-threshold`]: '2',
    });
  });

  it('serves metrics on a ClusterIP Service, not on the NLB', () => {
    expect(byName(json, 'kubernetes_service_v1', 'ws-envoy-metrics').spec).toMatchObject({
      type: 'ClusterIP',
      port: [{ name: 'metrics', port: 9901, target_port: 'metrics', protocol: 'TCP' }],
    });
  });

  it('labels the metrics Service uniquely, so a ServiceMonitor selects only it', () => {
    const labels = byName(json, 'kubernetes_service_v1', 'ws-envoy-metrics').metadata.labels;
    expect(labels['app.kubernetes.io/component']).toBe('metrics');
    const matching = resources(json, 'kubernetes_service_v1').filter((svc: Json) =>
      Object.entries(labels).every(([k, v]) => svc.metadata.labels?.[k] === v),
    );
    expect(matching.map((svc: Json) => svc.metadata.name)).toEqual(['ws-envoy-metrics']);
  });
});

describe('GIVEN every option changed (EVERYTHING_CHANGED)', () => {
  const { json } = synth(EVERYTHING_CHANGED);

  it('makes the NLB internal, with proxy protocol and the metrics port', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    expect(nlb.metadata.annotations[`${LBC}-scheme`]).toBe('internal');
    expect(nlb.metadata.annotations[`${LBC}-proxy-protocol`]).toBe('*');
    expect(nlb.spec.port.map((p: Json) => p.port)).toEqual([80, 8443, 9901]);
  });

  it('terminates TLS at the NLB: the certificate, the port, the policy, the wss:// URL, the source ranges', () => {
    const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
    const a = nlb.metadata.annotations;
    expect(a[`${LBC}-ssl-cert`]).toBe('arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b');
    expect(a[`${LBC}-ssl-ports`]).toBe('8443');
    expect(a[`${LBC}-ssl-negotiation-policy`]).toBe('ELBSecurityPolicy-TLS13-1-3-2021-06');
    // The TLS port goes to Envoy's plain listener; the plain port was kept (nlbKeepPlainPort).
    expect(nlb.spec.port.find((p: Json) => p.name === 'https')).toEqual({
      name: 'https',
      port: 8443,
      target_port: 'http',
      protocol: 'TCP',
    });
    expect(nlb.spec.load_balancer_source_ranges).toEqual(['203.0.113.0/24', '198.51.100.0/24']);
    expect(json.output.websocket_url.value).toBe('wss://chat.example.com:8443/');
  });
});

describe('GIVEN one option at a time', () => {
  it("keeps the NLB's TCP idle timeout above Envoy's on every listener it publishes (120 s -> 150 s; 10 s -> the NLB minimum 60 s)", () => {
    for (const [idle, nlbIdle] of [
      [120, 150],
      [10, 60],
    ]) {
      const { json } = synth({ idleTimeoutSeconds: idle, renewIntervalSeconds: 5, exposeMetricsOnNlb: true, nlbScheme: 'internal' });
      const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');
      const ports = nlb.spec.port.map((p: Json) => p.port);
      expect(ports).toEqual([80, 9901]);
      const attrs = Object.entries(nlb.metadata.annotations as Record<string, string>).filter(([k]) =>
        k.startsWith(`${LBC}-listener-attributes.`),
      );
      expect(attrs).toEqual(ports.map((p: number) => [`${LBC}-listener-attributes.TCP-${p}`, `tcp.idle_timeout.seconds=${nlbIdle}`]));
    }
  });

  it("nlbSetIdleTimeout=false leaves the NLB's listener attributes alone (for a controller whose IAM policy lacks them)", () => {
    const { json } = synth({ nlbSetIdleTimeout: false, idleTimeoutSeconds: 300 });
    const keys = Object.keys(byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb').metadata.annotations);
    expect(keys.filter((k) => k.includes('listener-attributes'))).toEqual([]);
    expect(keys).toContain(`${LBC}-target-group-attributes`);
  });
});

describe('TLS at the NLB with the defaults around it', () => {
  const arn = 'arn:aws:acm:us-east-1:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b';
  const { json } = synth({ nlbTls: true, nlbTlsCertificateArns: [arn] });
  const nlb = byName(json, 'kubernetes_service_v1', 'ws-envoy-nlb');

  it('closes the plain port, listens on 443 with the current default policy, and gives the wss:// URL of the NLB', () => {
    expect(nlb.spec.port).toEqual([{ name: 'https', port: 443, target_port: 'http', protocol: 'TCP' }]);
    expect(nlb.metadata.annotations['service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy']).toBe(
      'ELBSecurityPolicy-TLS13-1-2-2021-06',
    );
    // AWS fixes a TLS listener's idle timeout at 350 s: the attribute is for TCP listeners
    // only, so there is none here, and the kept plain port gets its own.
    expect(Object.keys(nlb.metadata.annotations).filter((k) => k.includes('listener-attributes'))).toEqual([]);
    const kept = byName(
      synth({ nlbTls: true, nlbTlsCertificateArns: [arn], nlbKeepPlainPort: true }).json,
      'kubernetes_service_v1',
      'ws-envoy-nlb',
    );
    expect(Object.entries(kept.metadata.annotations).filter(([k]) => k.includes('listener-attributes'))).toEqual([
      ['service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-80', 'tcp.idle_timeout.seconds=330'],
    ]);
    expect(nlb.spec.load_balancer_source_ranges).toBeUndefined();
    expect(json.output.websocket_url.value).toBe(
      'wss://${try(kubernetes_service_v1.nlb_service_D1F1CBFF.status[0].load_balancer[0].ingress[0].hostname, "")}/',
    );
    // No autoscaler by default: the Deployment keeps its count.
    expect(json.resource.kubernetes_horizontal_pod_autoscaler_v2).toBeUndefined();
    expect(byName(json, 'kubernetes_deployment_v1', 'ws-envoy').spec.replicas).toBe('2');
  });
});
