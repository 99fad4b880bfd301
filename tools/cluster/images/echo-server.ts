/**
 * The echo stand-in image's program (echo.Containerfile): one backend of the local rig
 * (tools/rig/echo.ts) on this pod's own address and `$PORT`, so it names itself
 * `<pod ip>:<port>` exactly as Envoy lists it. `GET /counts` answers with its counts.
 */
import * as os from 'os';
import { EchoBackends } from '../../rig/echo';

function podAddress(): string {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  throw new Error('echo-server: this pod has no IPv4 address besides loopback');
}

async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? '8080');
  if (!Number.isSafeInteger(port) || port < 1 || port > 65535)
    throw new Error(`echo-server: PORT must be a port number, got ${process.env.PORT}`);
  const backends = await EchoBackends.start([podAddress()], port);
  process.stdout.write(`echo-server: ${backends.ids.join(', ')} ready\n`);
  const stop = (): void => void backends.stop().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
