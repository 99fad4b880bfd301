import WebSocket from 'ws';

/**
 * Opens a WebSocket through the rig and waits for the echo backend's first message;
 * resolves with the socket, or with the status of the refusal.
 */
export function openWebSocket(url: string): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('message', () => resolve(ws));
    ws.once('unexpected-response', (_q, r) => {
      r.resume();
      resolve(r.statusCode ?? 0);
    });
    ws.once('error', (e) => {
      if (!String(e.message).startsWith('Unexpected server response')) reject(e);
    });
  });
}
