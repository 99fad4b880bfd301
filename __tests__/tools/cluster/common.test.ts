// The local cluster's ports stay inside the range this project's cluster tests own.
import { clusterPorts, DEFAULT_BASE_PORT, PORT_RANGE } from '../../../tools/cluster/common';

describe('clusterPorts', () => {
  it('gives each component its own port from the base', () => {
    expect(clusterPorts(DEFAULT_BASE_PORT)).toStrictEqual({
      etcdClient: 23400,
      etcdPeer: 23401,
      apiserver: 23402,
      controllerManager: 23403,
      scheduler: 23404,
      kwok: 23405,
      kubelet: 23406,
      kubeProxyMetrics: 23407,
      kubeProxyHealthz: 23408,
      kubeRouterHealth: 23409,
    });
    expect(PORT_RANGE).toStrictEqual({ min: 23000, max: 23999 });
  });

  it.each([[21000], [22999], [23991], [23400.5]])('refuses base %p (outside 23000-23999 or not an integer)', (base) => {
    expect(() => clusterPorts(base)).toThrow(
      `cluster: basePort must be an integer with basePort..basePort+9 inside 23000-23999, got ${base}`,
    );
  });
});
