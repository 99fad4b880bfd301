// constructs/security.ts: the "restricted" Pod Security Standard every pod of the stack runs
// under (podSecurityContext, containerSecurityContext) and one container's requests and
// limits (resources), as a Deployment in a small test chart renders them. (Each construct's
// own pods: envoy.test.ts, redis.test.ts, sample-backend.test.ts.)
import { DeploymentV1 } from '@cdktf/provider-kubernetes/lib/deployment-v1';
import { containerSecurityContext, podSecurityContext, resources } from '../../constructs/security';
import { RESTRICTED_CONTAINER, only, restrictedPod, synthStack, testStack } from '../support/synth';

/** A Deployment of one container that uses the three helpers; its synthesized pod spec. */
function pod(uid: number) {
  const stack = testStack();
  new DeploymentV1(stack, 'deployment', {
    metadata: { name: 'd' },
    spec: {
      selector: { matchLabels: { app: 'd' } },
      template: {
        metadata: { labels: { app: 'd' } },
        spec: {
          securityContext: podSecurityContext(uid),
          container: [
            {
              name: 'c',
              image: 'c:1',
              securityContext: containerSecurityContext(),
              resources: resources({ cpuRequest: '10m', memoryRequest: '16Mi', cpuLimit: '100m', memoryLimit: '32Mi' }),
            },
          ],
        },
      },
    },
  });
  return only(synthStack(stack), 'kubernetes_deployment_v1').spec.template.spec;
}

describe('GIVEN a pod built with the helpers', () => {
  const spec = pod(10101);

  it('runs the pod as the given non-root user and group, owns its mounted files, with RuntimeDefault seccomp', () => {
    expect(spec.security_context).toStrictEqual(restrictedPod(10101));
  });

  it('runs the container without privileges, escalation or capabilities, on a read-only root filesystem', () => {
    expect(spec.container[0].security_context).toStrictEqual(RESTRICTED_CONTAINER);
  });

  it('gives the container its requests and limits', () => {
    expect(spec.container[0].resources).toStrictEqual({
      requests: { cpu: '10m', memory: '16Mi' },
      limits: { cpu: '100m', memory: '32Mi' },
    });
  });
});
