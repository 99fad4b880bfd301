// config/names.ts: the Kubernetes names and labels of the stack's objects, which the
// constructs use (through constructs/names.ts) and the config refuses to clash with. (The
// names themselves are pinned by the stack's snapshots, __tests__/constructs/stack.test.ts.)
import { ENVOY_SELECTOR, NAMES, PART_OF, REDIS_SELECTOR, componentLabels, selectorLabels } from '../../config/names';
import { dns1123LabelProblem } from '../../config/validate';

it('names every object with a DNS-1123 label, and no two objects of one kind alike', () => {
  for (const [key, name] of Object.entries(NAMES)) expect({ key, problem: dns1123LabelProblem(name) }).toEqual({ key, problem: null });
  const services = [NAMES.redis, NAMES.nlb, NAMES.envoyMetrics];
  const configMaps = [NAMES.envoyConfig, NAMES.redisFunctions];
  const deployments = [NAMES.envoy, NAMES.redis, NAMES.sampleBackend];
  const policies = [NAMES.redisPolicy, NAMES.envoyPolicy];
  for (const kind of [services, configMaps, deployments, policies]) expect(new Set(kind).size).toBe(kind.length);
});

it("labels a component with the recommended app.kubernetes.io labels, the stack's own part-of among them", () => {
  expect(componentLabels('ws-envoy', 'proxy')).toStrictEqual({
    'app.kubernetes.io/name': 'ws-envoy',
    'app.kubernetes.io/component': 'proxy',
    'app.kubernetes.io/part-of': PART_OF,
    'app.kubernetes.io/managed-by': 'cdktf',
  });
});

it("selects a component on a stable subset of its labels, so a selector always matches the component's pods", () => {
  for (const [name, selector] of [
    [NAMES.envoy, ENVOY_SELECTOR],
    [NAMES.redis, REDIS_SELECTOR],
  ] as const) {
    expect(selector).toStrictEqual(selectorLabels(name));
    expect(selector).toStrictEqual({ 'app.kubernetes.io/name': name, 'app.kubernetes.io/part-of': PART_OF });
    expect(componentLabels(name, 'any')).toMatchObject(selector);
  }
});
