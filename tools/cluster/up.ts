/**
 * npm run cluster:up [-- --kwok --dir DIR --base-port P --lifetime SECONDS]
 * Starts the local cluster (tools/cluster/cluster.ts) from the installed toolchain and
 * prints the KUBECONFIG to use: a real node (containerd, kubelet, kube-proxy, kube-router,
 * CoreDNS, the images of tools/cluster/images.ts; root), or with --kwok the API-only
 * cluster with a kwok fake node. `npm run cluster:down` stops it; every process also ends
 * by itself after --lifetime (default 2 h).
 */
import { parseArgs } from 'util';
import { startCluster } from './cluster';
import { DEFAULT_BASE_PORT, DEFAULT_DIR } from './common';
import { findImages, imageRefs } from './images';
import { findInstalled } from './toolchain';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { dir: { type: 'string' }, 'base-port': { type: 'string' }, lifetime: { type: 'string' }, kwok: { type: 'boolean' } },
  });
  const toolchain = findInstalled();
  const kind = values.kwok ? 'kwok' : 'real';
  const state = await startCluster({
    toolchain,
    kind,
    images: kind === 'real' ? findImages(toolchain) : undefined,
    dir: values.dir ?? DEFAULT_DIR,
    basePort: values['base-port'] ? Number(values['base-port']) : DEFAULT_BASE_PORT,
    lifetimeSeconds: values.lifetime ? Number(values.lifetime) : 7200,
    progress: (line) => process.stdout.write(`cluster: ${line}\n`),
  });
  process.stdout.write(
    kind === 'real'
      ? `cluster: up (etcd, kube-apiserver ${state.server}, kube-controller-manager, kube-scheduler; node ${state.nodeName}: containerd, kubelet, kube-proxy, kube-router, CoreDNS; logs in ${state.dir}/logs)\n`
      : `cluster: up (etcd, kube-apiserver :${state.ports.apiserver}, kube-controller-manager, kube-scheduler, kwok; logs in ${state.dir}/logs)\n`,
  );
  if (kind === 'real') {
    const refs = imageRefs(toolchain);
    process.stdout.write(
      `cluster: the stack's images: WS_ADMISSION_ENVOY_IMAGE=${refs.envoy} WS_ADMISSION_REDIS_IMAGE=${refs.redis} WS_ADMISSION_SAMPLE_BACKEND_IMAGE=${refs.echo}\n`,
    );
  }
  process.stdout.write(`export KUBECONFIG=${state.kubeconfig}\n`);
  process.stdout.write(`kubectl: ${toolchain.bin.kubectl}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
