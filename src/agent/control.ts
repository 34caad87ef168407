// The control API between the CLI and the local daemon: one request per connection on a Unix socket,
// newline-delimited JSON. The daemon may send any number of `progress` lines before the final
// `result` or `error` line. One request per connection keeps both ends trivial and lets a long
// publish report progress without any multiplexing.
import net from 'node:net';
import fs from 'node:fs/promises';
import path from 'node:path';
import { UserError } from './errors.js';

export { UserError };

export interface ControlRequest {
  cmd: string;
  args?: Record<string, unknown>;
}

export type ControlLine =
  | { type: 'progress'; [key: string]: unknown }
  | { type: 'result'; result: unknown }
  | { type: 'error'; error: string };

export type ControlHandler = (
  req: ControlRequest,
  progress: (p: Record<string, unknown>) => void,
) => Promise<unknown>;


const MAX_REQUEST_BYTES = 64 * 1024;

/** Serve the control API on `socketPath` with mode 0660. Refuses if another daemon answers there. */
export async function serveControl(socketPath: string, handler: ControlHandler): Promise<net.Server> {
  await fs.mkdir(path.dirname(socketPath), { recursive: true });
  if (await socketAnswers(socketPath)) {
    throw new UserError(`another joblet-agent is already listening on ${socketPath}`);
  }
  // A socket file left by a killed daemon would make listen() fail with EADDRINUSE.
  await fs.rm(socketPath, { force: true });
  const server = net.createServer((conn) => handleConnection(conn, handler));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Create the socket with 0660 from the start (no window in which it is wider), then chmod to be sure.
    const oldMask = process.umask(0o117);
    server.listen(socketPath, () => {
      process.umask(oldMask);
      server.off('error', reject);
      resolve();
    });
  });
  await fs.chmod(socketPath, 0o660);
  return server;
}

function handleConnection(conn: net.Socket, handler: ControlHandler): void {
  let buf = '';
  let started = false;
  const send = (line: ControlLine) => {
    if (!conn.destroyed) conn.write(JSON.stringify(line) + '\n');
  };
  conn.setEncoding('utf8');
  conn.on('error', () => { /* the client went away; nothing to do */ });
  conn.on('data', (data: string) => {
    if (started) return;
    buf += data;
    if (buf.length > MAX_REQUEST_BYTES) {
      send({ type: 'error', error: 'control request too large' });
      conn.end();
      started = true;
      return;
    }
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    started = true;
    let req: ControlRequest;
    try {
      req = JSON.parse(buf.slice(0, nl));
      if (typeof req?.cmd !== 'string') throw new Error('no cmd');
    } catch {
      send({ type: 'error', error: 'malformed control request' });
      conn.end();
      return;
    }
    handler(req, (p) => send({ type: 'progress', ...p }))
      .then((result) => send({ type: 'result', result: result ?? null }))
      .catch((err: unknown) => send({ type: 'error', error: err instanceof Error ? err.message : String(err) }))
      .finally(() => conn.end());
  });
}

async function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/** Raised by the client when no daemon listens on the socket. */
export class DaemonDownError extends UserError {}

/** Send one request; `onProgress` sees each progress line; resolves with the result. */
export async function callDaemon(
  socketPath: string,
  req: ControlRequest,
  onProgress?: (p: Record<string, unknown>) => void,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socketPath);
    let buf = '';
    let settled = false;
    const finish = (fn: () => void) => { if (!settled) { settled = true; fn(); } };
    conn.setEncoding('utf8');
    conn.once('connect', () => conn.write(JSON.stringify(req) + '\n'));
    conn.on('error', (err: NodeJS.ErrnoException) => finish(() => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new DaemonDownError(
          `no joblet-agent daemon is listening on ${socketPath}; start one with "joblet-agent start --config FILE" (or pass --socket PATH)`));
      } else if (err.code === 'EACCES') {
        reject(new UserError(`permission denied on ${socketPath}; run as root or as a member of the socket's group`));
      } else {
        reject(new UserError(`cannot talk to the daemon on ${socketPath}: ${err.message}`));
      }
    }));
    conn.on('data', (data: string) => {
      buf += data;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const raw = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let line: ControlLine;
        try { line = JSON.parse(raw); } catch { finish(() => reject(new UserError('the daemon sent a malformed reply'))); conn.destroy(); return; }
        if (line.type === 'progress') onProgress?.(line);
        else if (line.type === 'result') finish(() => resolve(line.result));
        else if (line.type === 'error') finish(() => reject(new UserError(line.error)));
      }
    });
    conn.on('close', () => finish(() => reject(new UserError('the daemon closed the connection without an answer'))));
  });
}
