// constructs/backend-service.ts and constructs/sample-backend.ts: the headless Service over
// the backend pods and the optional sample echo backend.
// (Each block: GIVEN the profile its describe names, WHEN the stack is synthesized, THEN the
// resources it checks.)
import { Json, byName, resources, synth } from '../support/synth';

describe('GIVEN the defaults', () => {
  const { json } = synth();

  it('creates a headless Service over the backend pods', () => {
    expect(byName(json, 'kubernetes_service_v1', 'ws-backend').spec).toEqual({
      cluster_ip: 'None',
      publish_not_ready_addresses: false,
      selector: { 'app.kubernetes.io/name': 'ws-echo' },
      port: [{ name: 'ws', port: 8080, target_port: '8080', protocol: 'TCP' }],
    });
  });

  it('deploys the sample echo backend: 3 pinned replicas the headless Service selects', () => {
    const echo = byName(json, 'kubernetes_deployment_v1', 'ws-echo');
    expect(echo.spec.replicas).toBe('3');
    expect(echo.spec.template.spec.container[0].image).toBe('jmalloc/echo-server:v0.3.7');
    expect(echo.spec.template.metadata.labels['app.kubernetes.io/name']).toBe('ws-echo');
    expect(echo.spec.template.spec.container[0].env).toEqual([{ name: 'PORT', value: '8080' }]);
  });
});

describe('GIVEN one option at a time', () => {
  it('deploySampleBackend=false leaves the backend to the user', () => {
    const { json } = synth({ deploySampleBackend: false });
    expect(
      resources(json, 'kubernetes_deployment_v1')
        .map((d: Json) => d.metadata.name)
        .sort(),
    ).toEqual(['ws-envoy', 'ws-redis']);
    expect(byName(json, 'kubernetes_service_v1', 'ws-backend')).toBeDefined();
  });
});
