/** npm run cluster:down [-- --dir DIR]: stops the cluster `cluster:up` started there and removes its folder. */
import * as fs from 'fs';
import { parseArgs } from 'util';
import { DEFAULT_DIR } from './common';
import { readState, stopCluster } from './cluster';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { dir: { type: 'string' } } });
  const dir = values.dir ?? DEFAULT_DIR;
  if (!fs.existsSync(dir)) {
    process.stdout.write(`cluster: nothing in ${dir}\n`);
    return;
  }
  await stopCluster(readState(dir), true);
  process.stdout.write(`cluster: stopped, ${dir} removed\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
