// constructs/sample-backend.ts (SampleBackend), built in a small test chart: the optional
// WebSocket echo backend, so a default deploy works end to end.
import { SampleBackend, SampleBackendProps } from '../../constructs/sample-backend';
import { RESTRICTED_CONTAINER, only, restrictedPod, synthStack, testStack } from '../support/synth';

const LABELS = { 'app.kubernetes.io/name': 'ws-echo' };

function build(props: Partial<SampleBackendProps> = {}) {
  const stack = testStack();
  const backend = new SampleBackend(stack, 'sample', {
    namespace: 'ns',
    image: 'jmalloc/echo-server:v0.3.7',
    labels: LABELS,
    port: 8080,
    ...props,
  });
  const deployment = only(synthStack(stack), 'kubernetes_deployment_v1');
  return { backend, deployment, echo: deployment.spec.template.spec.container[0] };
}

describe('GIVEN the defaults', () => {
  const { deployment, echo } = build();

  it('runs 3 replicas of the pinned image, labelled so the backend Service selects them, listening on $PORT', () => {
    expect(deployment.metadata).toMatchObject({ name: 'ws-echo', namespace: 'ns' });
    expect(deployment.spec.replicas).toBe('3');
    expect(deployment.spec.selector).toEqual({ match_labels: LABELS });
    expect(deployment.spec.template.metadata.labels).toMatchObject(LABELS);
    expect(echo.image).toBe('jmalloc/echo-server:v0.3.7');
    expect(echo.env).toEqual([{ name: 'PORT', value: '8080' }]);
    expect(echo.port).toEqual([{ name: 'ws', container_port: 8080, protocol: 'TCP' }]);
  });

  it('probes the health check path, and runs restricted as nobody', () => {
    expect(echo.readiness_probe.http_get).toEqual({ path: '/', port: '8080' });
    expect(echo.liveness_probe.http_get).toEqual({ path: '/', port: '8080' });
    expect(deployment.spec.template.spec.security_context).toEqual(restrictedPod(65534));
    expect(echo.security_context).toEqual(RESTRICTED_CONTAINER);
  });
});

describe('GIVEN one prop at a time', () => {
  it('replicas, port and health check path', () => {
    const { deployment, echo } = build({ replicas: 5, port: 9000, healthCheckPath: '/healthz' });
    expect(deployment.spec.replicas).toBe('5');
    expect(echo.env).toEqual([{ name: 'PORT', value: '9000' }]);
    expect(echo.readiness_probe.http_get).toEqual({ path: '/healthz', port: '9000' });
  });
});

describe('props are validated', () => {
  it('replicas and image', () => {
    expect(() => build({ replicas: -1 })).toThrow('SampleBackend: replicas must be a positive integer, got -1; use 1 or more');
    expect(() => build({ image: 'Echo' })).toThrow('SampleBackend: image must be an image reference like');
  });
});
