// The read-only HTTP endpoint: Prometheus metrics, health checks, the fleet dashboard and its JSON.
// Nothing here changes state: only GET and HEAD are served, and every handler only reads.
// There is no authentication, so the default binds to loopback; an operator who opens it to a network
// exposes the fleet's topology (peer ids, addresses, runtime names) to whoever can reach it.
import http from 'node:http';
import net from 'node:net';
import { UserError } from '../../errors.js';
import { parseHttpAddress } from '../../http-address.js';
import { log, recentEvents } from '../../log.js';
import type { Agent } from '../daemon.js';
import type { PrometheusExporter } from './prometheus.js';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS, FAVICON_SVG } from './dashboard.js';

export type AgentStatus = Awaited<ReturnType<Agent['status']>>;

/** What the endpoint reads from the daemon. */
export interface HttpSource {
  status(): Promise<AgentStatus>;
  /** null when ready; otherwise why not, in a sentence that says what to look at. */
  readiness(): Promise<string | null>;
}

export interface HttpEndpoint {
  url: string;
  close(): Promise<void>;
}

/** The dashboard polls: many tabs must not each rescan the store, so a status is reused this long. */
const STATUS_CACHE_MS = 500;

const STATIC: Record<string, { type: string; body: string }> = {
  '/': { type: 'text/html; charset=utf-8', body: DASHBOARD_HTML },
  '/dashboard.js': { type: 'text/javascript; charset=utf-8', body: DASHBOARD_JS },
  '/dashboard.css': { type: 'text/css; charset=utf-8', body: DASHBOARD_CSS },
  '/favicon.svg': { type: 'image/svg+xml', body: FAVICON_SVG },
};

/** Listen on `setting` (HOST:PORT, port 0 for any free one); null for 'off'. */
export async function startHttp(setting: string, source: HttpSource): Promise<HttpEndpoint | null> {
  const addr = parseHttpAddress(setting);
  if (addr === null) return null;
  if (addr === undefined) throw new UserError(`invalid http "${setting}": give HOST:PORT or off`);
  // prom-client is loaded on the first scrape: an agent nobody scrapes starts faster and keeps less in memory.
  let exporterP: Promise<PrometheusExporter> | null = null;
  const exporter = () => (exporterP ??= import('./prometheus.js').then((m) => new m.PrometheusExporter(() => source.status())));
  let cached: { at: number; status: Promise<AgentStatus> } | null = null;
  const status = () => {
    const now = Date.now();
    if (!cached || now - cached.at > STATUS_CACHE_MS) {
      cached = { at: now, status: source.status() };
      cached.status.catch(() => { cached = null; });
    }
    return cached.status;
  };
  const loopbackOnly = isLoopback(addr.host);
  const server = http.createServer((req, res) => {
    handle(req, res, { exporter, status, source, loopbackOnly }).catch((err: Error) => {
      log.error('http_error', { path: req.url ?? '', error: err.message });
      if (!res.headersSent) send(res, req, 500, 'text/plain; charset=utf-8', 'internal error; see the agent log\n');
      else res.destroy();
    });
  });
  // Idle keep-alive sockets must not hold up the daemon's stop.
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the address is already in use'
        : err.code === 'EADDRNOTAVAIL' ? 'no interface of this host has that address'
        : err.code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : err.message;
      reject(new UserError(`cannot listen on ${setting} for the HTTP endpoint: ${why}; ` +
        'choose another address with --http HOST:PORT (http: in the config), or turn it off with --http off'));
    });
    server.listen(addr.port, addr.host, () => resolve());
  });
  const bound = server.address() as net.AddressInfo;
  const host = bound.family === 'IPv6' || bound.address.includes(':') ? `[${bound.address}]` : bound.address;
  const url = `http://${host}:${bound.port}/`;
  log.info('http_listening', { url });
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

interface Ctx {
  exporter: () => Promise<PrometheusExporter>;
  status: () => Promise<AgentStatus>;
  source: HttpSource;
  loopbackOnly: boolean;
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, ctx: Ctx): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed: this endpoint is read-only (GET and HEAD only)\n');
    return;
  }
  // A web page elsewhere could point a DNS name at 127.0.0.1 and read this endpoint through the
  // operator's browser (DNS rebinding). On loopback, only loopback host names are accepted.
  if (ctx.loopbackOnly && !loopbackHostHeader(req.headers.host)) {
    send(res, req, 421, 'text/plain; charset=utf-8', 'this endpoint listens on loopback: use http://127.0.0.1:PORT/ or http://localhost:PORT/\n');
    return;
  }
  const pathname = new URL(req.url ?? '/', 'http://x').pathname;
  const page = STATIC[pathname];
  if (page) {
    send(res, req, 200, page.type, page.body);
    return;
  }
  switch (pathname) {
    case '/metrics': {
      const exporter = await ctx.exporter();
      send(res, req, 200, exporter.contentType, await exporter.scrape());
      return;
    }
    case '/healthz':
      send(res, req, 200, 'text/plain; charset=utf-8', 'ok\n');
      return;
    case '/readyz': {
      const reason = await ctx.source.readiness();
      send(res, req, reason === null ? 200 : 503, 'text/plain; charset=utf-8', reason === null ? 'ready\n' : `not ready: ${reason}\n`);
      return;
    }
    case '/api/status':
      send(res, req, 200, 'application/json; charset=utf-8',
        JSON.stringify({ ...(await ctx.status()), events: recentEvents(50), generatedAt: new Date().toISOString() }));
      return;
    default:
      send(res, req, 404, 'text/plain; charset=utf-8', 'not found; try /, /metrics, /healthz, /readyz or /api/status\n');
  }
}

function send(res: http.ServerResponse, req: http.IncomingMessage, code: number, type: string, body: string): void {
  const bytes = Buffer.from(body, 'utf8');
  res.writeHead(code, {
    'Content-Type': type,
    'Content-Length': bytes.length,
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    // The dashboard loads only its own script and style, and talks only to this agent.
    'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (net.isIPv4(host) && host.startsWith('127.'));
}

function loopbackHostHeader(header: string | undefined): boolean {
  if (!header) return false;
  const m = /^(\[[^\]]+\]|[^:]+)(?::\d+)?$/.exec(header);
  if (!m) return false;
  const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1].toLowerCase();
  return isLoopback(host);
}
