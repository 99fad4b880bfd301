/**
 * The local rig's backend process: `node tools/rig/echo-backend.js --port P --backends M
 * --control-port C` serves M WebSocket echo backends (tools/rig/echo.ts) on
 * 127.0.1.1:P, 127.0.1.2:P, ... and a control API on 127.0.0.1:C:
 *
 *   GET  /counts          {"127.0.1.1:P": {"open": 1, "peak": 2, "upgrades": 5}, ...}
 *   POST /reset-peaks
 *   POST /close/<id>      the backend closes its WebSockets (close handshake)
 *   POST /drop/<id>       the backend drops its connections (no handshake)
 *   POST /kill/<id>       the backend stops listening and drops its connections
 *   POST /drain/<id>      the backend fails its health check (503) but keeps serving
 *   POST /revive/<id>     a killed or draining backend serves again, healthy
 *
 * Prints `ready` when every backend listens; exits on SIGTERM/SIGINT.
 */
import * as http from 'http';
import { parseArgs } from 'util';
import { EchoBackends, backendAddress } from './echo';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { port: { type: 'string' }, backends: { type: 'string' }, 'control-port': { type: 'string' } },
  });
  const port = Number(values.port);
  const count = Number(values.backends);
  const control = Number(values['control-port']);
  for (const [name, v] of [
    ['--port', port],
    ['--backends', count],
    ['--control-port', control],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 1) {
      process.stderr.write(`echo-backend: ${name} must be a positive integer, got ${String(v)}\n`);
      return 2;
    }
  }
  const backends = await EchoBackends.start(
    Array.from({ length: count }, (_, i) => backendAddress(i)),
    port,
  );
  const api = http.createServer((req, res) => {
    const [, action, id] = (req.url ?? '').split('/');
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body) + '\n');
    };
    try {
      if (req.method === 'GET' && action === 'counts') return reply(200, backends.counts());
      if (req.method === 'POST' && action === 'reset-peaks') {
        backends.resetPeaks();
        return reply(200, {});
      }
      if (req.method === 'POST' && action === 'close' && id) {
        backends.closeAll(decodeURIComponent(id));
        return reply(200, {});
      }
      if (req.method === 'POST' && action === 'drop' && id) {
        backends.dropAll(decodeURIComponent(id));
        return reply(200, {});
      }
      if (req.method === 'POST' && action === 'kill' && id) {
        return void backends.kill(decodeURIComponent(id)).then(() => reply(200, {}));
      }
      if (req.method === 'POST' && action === 'drain' && id) {
        backends.drain(decodeURIComponent(id));
        return reply(200, {});
      }
      if (req.method === 'POST' && action === 'revive' && id) {
        return void backends
          .revive(decodeURIComponent(id))
          .then(() => reply(200, {}))
          .catch((err: Error) => reply(400, { error: err.message }));
      }
      return reply(404, { error: `unknown ${req.method} ${req.url}` });
    } catch (err) {
      return reply(400, { error: err instanceof Error ? err.message : String(err) });
    }
  });
  await new Promise<void>((resolve, reject) => {
    api.once('error', (err: NodeJS.ErrnoException) => reject(new Error(`control port 127.0.0.1:${control} cannot listen: ${err.code}`)));
    api.listen(control, '127.0.0.1', resolve);
  });
  const stop = async () => {
    api.close();
    await backends.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  process.stdout.write('ready\n');
  return -1;
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err) => {
    process.stderr.write(`echo-backend: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
