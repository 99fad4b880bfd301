// constructs/backend-service.ts (BackendService), built in a small test chart: the headless
// Service over the WebSocket backend pods that Envoy's STRICT_DNS cluster resolves.
import { BackendService, BackendServiceProps } from '../../constructs/backend-service';
import { only, synthStack, testStack } from '../support/synth';

function build(props: Partial<BackendServiceProps> = {}) {
  const stack = testStack();
  const backend = new BackendService(stack, 'backend', {
    namespace: 'ns',
    name: 'ws-backend',
    selector: { app: 'chat' },
    port: 8080,
    ...props,
  });
  return { backend, service: only(synthStack(stack), 'kubernetes_service_v1') };
}

describe('GIVEN a name, a selector and a port', () => {
  const { backend, service } = build();

  it('is headless, offers ready pods only, and selects the backend pods on their port', () => {
    expect(service.metadata).toMatchObject({ name: 'ws-backend', namespace: 'ns' });
    expect(service.metadata.labels['app.kubernetes.io/component']).toBe('backend');
    expect(service.spec).toEqual({
      cluster_ip: 'None',
      publish_not_ready_addresses: false,
      selector: { app: 'chat' },
      port: [{ name: 'ws', port: 8080, target_port: '8080', protocol: 'TCP' }],
    });
  });

  it("names the host Envoy's backend cluster resolves", () => {
    expect([backend.name, backend.host, backend.port]).toEqual(['ws-backend', 'ws-backend.ns.svc.cluster.local', 8080]);
  });
});

describe('props are validated', () => {
  it('a DNS-1123 name, a non-empty valid selector, a TCP port', () => {
    expect(() => build({ name: 'Backend' })).toThrow('BackendService: name must be a DNS-1123 label');
    expect(() => build({ selector: {} })).toThrow('BackendService: selector must hold at least one label, got {}');
    expect(() => build({ selector: { 'bad key!': 'x' } })).toThrow('BackendService: selector has an invalid label key "bad key!"');
    for (const bad of [0, 65536, 80.5])
      expect(() => build({ port: bad })).toThrow(`BackendService: port must be an integer between 1 and 65535, got ${bad}`);
  });
});
