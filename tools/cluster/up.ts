/**
 * npm run cluster:up [-- --dir DIR --base-port P --lifetime SECONDS]
 * Starts the local cluster (tools/cluster/cluster.ts) from the installed toolchain and
 * prints the KUBECONFIG to use. `npm run cluster:down` stops it; every process also ends
 * by itself after --lifetime (default 2 h).
 */
import { parseArgs } from 'util';
import { DEFAULT_BASE_PORT, DEFAULT_DIR, startCluster } from './cluster';
import { findInstalled } from './toolchain';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { dir: { type: 'string' }, 'base-port': { type: 'string' }, lifetime: { type: 'string' } } });
  const toolchain = findInstalled();
  const state = await startCluster({
    toolchain,
    dir: values.dir ?? DEFAULT_DIR,
    basePort: values['base-port'] ? Number(values['base-port']) : DEFAULT_BASE_PORT,
    lifetimeSeconds: values.lifetime ? Number(values.lifetime) : 7200,
  });
  process.stdout.write(
    `cluster: up (etcd, kube-apiserver :${state.ports.apiserver}, kube-controller-manager, kube-scheduler, kwok; logs in ${state.dir}/logs)\n`,
  );
  process.stdout.write(`export KUBECONFIG=${state.kubeconfig}\n`);
  process.stdout.write(`kubectl: ${toolchain.bin.kubectl}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
