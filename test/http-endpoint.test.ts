// The read-only HTTP endpoint, structured logs and per-command help, on real agent processes.
import test from 'ava';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { tmpDir, startFleet, startAgent, cli, waitFor, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

/** Series of a Prometheus text exposition: `name{labels}` -> value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

async function httpUrl(a: AgentHandle): Promise<string> {
  const url = (await a.json(['status'])).http;
  if (typeof url !== 'string') throw new Error('no http url in status');
  return url;
}

async function installed(a: AgentHandle, name: string): Promise<boolean> {
  return (await a.json(['list'])).some((r: any) => r.name === name);
}

test('metrics count a real transfer; health, readiness, read-only, and JSON logs', async (t) => {
  const root = await tmpDir(t);
  const [a, b] = await startFleet(t, root, 2, { extra: (i) => (i === 1 ? ['--log-format', 'json'] : []) });
  const [ua, ub] = [await httpUrl(a), await httpUrl(b)];
  t.regex(ua, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  t.not(ua, ub);

  const src = path.join(root, 'pkg');
  await makeRuntimeTree(src, { name: 'metered', version: '1.0.0', bulkBytes: 3 * 1024 * 1024 });
  const pub = await a.json(['publish', src]);
  await waitFor('b installs', () => installed(b, 'metered'), 90_000);

  // b's counters agree with what its status says it fetched; a's with what it served.
  const sb = await b.json(['status']);
  const mb = parseMetrics(await (await fetch(ub + 'metrics')).text());
  const done = sb.swarm.recentTransfers.find((x: any) => x.manifestId === pub.manifestId);
  t.truthy(done);
  t.is(mb.get('joblet_agent_runtimes_installed'), 1);
  t.is(mb.get('joblet_agent_chunks_received_total'), done.fetchedChunks);
  t.true(done.fetchedChunks > 0);
  t.is(mb.get('joblet_agent_downloaded_bytes_total{source="far"}'), done.fetchedBytes, 'no --zone: every peer is far');
  t.is(mb.get('joblet_agent_downloaded_bytes_total{source="zone"}'), 0);
  t.is(mb.get('joblet_agent_installs_total{result="installed"}'), 1);
  t.is(mb.get('joblet_agent_installs_total{result="failed"}'), 0);
  t.is(mb.get('joblet_agent_install_duration_seconds_count'), 1);
  t.true(mb.get('joblet_agent_install_duration_seconds_sum')! > 0);
  t.is(mb.get('joblet_agent_install_duration_seconds_bucket{le="+Inf"}'), 1);
  t.is(mb.get('joblet_agent_corrupt_chunks_total'), 0);
  t.is(mb.get('joblet_agent_transfers_active'), 0);
  t.is(mb.get('joblet_agent_peers'), 1);
  t.true(mb.get('joblet_agent_store_bytes')! > 0);
  t.true(mb.has('process_cpu_user_seconds_total'), 'prom-client default metrics are there');
  t.true(mb.has('nodejs_eventloop_lag_seconds'));
  t.is(mb.get(`joblet_agent_info{version="${sb.version}",peer_id="${sb.peerId}",zone="",arch="${sb.arch}"}`), 1);
  const ma = parseMetrics(await (await fetch(ua + 'metrics')).text());
  const sa = await a.json(['status']);
  t.is(ma.get('joblet_agent_uploaded_bytes_total'), sa.swarm.uploads.bytesServed);
  t.true(sa.swarm.uploads.bytesServed >= done.fetchedBytes);
  t.is(ma.get('joblet_agent_store_bytes'), sa.store.bytes);
  const res = await fetch(ub + 'metrics');
  t.regex(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);

  // Health and readiness.
  const health = await fetch(ub + 'healthz');
  t.is(health.status, 200);
  t.is(await health.text(), 'ok\n');
  const ready = await fetch(ub + 'readyz');
  t.is(ready.status, 200);
  // The runtimes dir vanishes (an operator's mistake): not ready, and the reason says what to do.
  await fs.rm(b.runtimesDir, { recursive: true, force: true });
  const notReady = await fetch(ub + 'readyz');
  t.is(notReady.status, 503);
  t.regex(await notReady.text(), new RegExp(`not ready: the runtimes dir ${b.runtimesDir} does not exist; create it`));
  await fs.mkdir(b.runtimesDir);
  t.is((await fetch(ub + 'readyz')).status, 200);

  // Read-only: every other method is refused and changes nothing.
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    const r = await fetch(ub + 'api/status', { method });
    t.is(r.status, 405, method);
    t.is(r.headers.get('allow'), 'GET, HEAD');
  }
  const head = await fetch(ub + 'metrics', { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(await head.text(), '');
  t.is((await fetch(ub + 'nothing-here')).status, 404);
  t.is((await b.json(['list'])).length, 1);

  // DNS rebinding: a loopback listener answers only to loopback host names.
  const port = new URL(ub).port;
  const rebound = await rawGet(Number(port), '/api/status', 'attacker.example:' + port);
  t.regex(rebound, /^HTTP\/1\.1 421 /);
  t.regex(await rawGet(Number(port), '/healthz', 'localhost:' + port), /^HTTP\/1\.1 200 /);

  // The dashboard's JSON carries the fleet view and the recent events.
  const api = await (await fetch(ub + 'api/status')).json() as any;
  t.is(api.peerId, sb.peerId);
  t.true(api.events.some((e: any) => e.event === 'installed' && e.name === 'metered'));
  const page = await fetch(ub);
  t.regex(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
  t.regex(await page.text(), /<script src="\/dashboard\.js"><\/script>/);

  // b logged JSON: one object per line with time, level and event; the install has its fields.
  const lines = b.logs().trim().split('\n').map((l) => JSON.parse(l));
  for (const l of lines) {
    t.regex(l.time, /^\d{4}-\d\d-\d\dT/);
    t.true(['debug', 'info', 'warn', 'error'].includes(l.level));
    t.is(typeof l.event, 'string');
  }
  const inst = lines.find((l) => l.event === 'installed');
  t.like(inst, { level: 'info', name: 'metered', version: '1.0.0', manifestId: pub.manifestId });
  t.true(inst.bytes > 0 && inst.ms >= 0 && inst.chunks === done.fetchedChunks);
  t.truthy(lines.find((l) => l.event === 'learned' && l.manifestId === pub.manifestId && l.peer === sa.peerId));
  // a logged text: `event key=value`, readable.
  t.regex(a.logs(), /^published name=metered version=1\.0\.0 manifestId=sha256:[0-9a-f]+ chunks=\d+ newChunks=\d+$/m);
});

/** A GET with a chosen Host header (fetch does not allow setting it). */
function rawGet(port: number, p: string, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => c.write(`GET ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (d) => (buf += d));
    c.on('end', () => resolve(buf));
    c.on('error', reject);
  });
}

test('--http off listens nowhere; a bad or busy address is one clear error; --log-level warn keeps info out', async (t) => {
  const root = await tmpDir(t);
  const a = await startAgent(t, path.join(root, 'a'), ['--http', 'off', '--log-level', 'warn'], { env: { JOBLET_AGENT_TEST_FAULT: 'slow:1' } });
  const s = await a.json(['status']);
  t.is(s.http, null);
  t.notRegex(a.logs(), /http_listening|^started/m);
  t.regex(a.logs(), /^WARN test_fault_active fault=slow:1$/m, 'a warning still shows');

  const bad = await cli(['start', '--config', a.config, '--http', 'localhost']);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /invalid http "localhost" \(from --http or config file .*\): give HOST:PORT .* or off/);
  const badFormat = await cli(['start', '--config', a.config, '--log-format', 'xml']);
  t.is(badFormat.code, 1);
  t.regex(badFormat.stderr, /invalid logFormat "xml".*give text or json/);

  // A port someone else holds: the agent refuses to start and says what to do.
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => holder.close(() => r())));
  const port = (holder.address() as net.AddressInfo).port;
  await a.stop();
  const busy = await cli(['start', '--config', a.config, '--http', `127.0.0.1:${port}`]);
  t.is(busy.code, 1);
  t.regex(busy.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} for the HTTP endpoint: the address is already in use; choose another address with --http`));
  // It did not leave its socket behind: a normal start still works.
  const again = await startAgent(t, path.join(root, 'a'));
  t.regex((await again.json(['status'])).http, /^http:\/\/127\.0\.0\.1:\d+\/$/);
});

test('COMMAND --help prints that command\'s usage and exits 0', async (t) => {
  // Every command the general usage lists, so a new command without its own help fails here.
  const listed = [...new Set([...(await cli(['--help'])).stdout.matchAll(/^  ([a-z]+) /gm)].map((m) => m[1]!))];
  t.true(listed.length >= 10, listed.join(' '));
  for (const cmd of ['init', 'start', 'publish', 'wait', 'info', 'list', 'status', 'remove', 'verify', 'repair']) t.true(listed.includes(cmd), cmd);
  for (const cmd of listed) {
    const r = await cli([cmd, '--help']);
    t.is(r.code, 0, cmd);
    t.regex(r.stdout, new RegExp(`^usage: joblet-agent ${cmd}\\b`), cmd);
    t.is(r.stderr, '');
  }
  t.is((await cli(['help', 'status'])).stdout, (await cli(['status', '--help'])).stdout);
  t.regex((await cli(['start', '--help'])).stdout, /--http HOST:PORT\|off[\s\S]*--log-format text\|json[\s\S]*--log-level LEVEL/);
  t.regex((await cli(['publish', 'x.tgz', '-h'])).stdout, /^usage: joblet-agent publish PKG/);
  const unknown = await cli(['help', 'frobnicate']);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command "frobnicate"/);
  const general = await cli(['--help']);
  t.is(general.code, 0);
  t.regex(general.stdout, /joblet-agent COMMAND --help/);
});

test('with --zone, downloaded bytes are split into zone and far by the zone of the peer that sent them', async (t) => {
  const root = await tmpDir(t);
  const zones = ['dc-a', 'dc-b', 'dc-b'];
  const fleet = await startFleet(t, root, 3, { extra: (i) => ['--zone', zones[i]] });
  await waitFor('zones known', async () => {
    const s = await fleet[2].json(['status']);
    return s.swarm.peers.filter((p: any) => p.zone !== null).length >= 2;
  }, 60_000);
  const src = path.join(root, 'pkg');
  await makeRuntimeTree(src, { name: 'zoned', version: '1.0.0', bulkBytes: 4 * 1024 * 1024 });
  const pub = await fleet[0].json(['publish', src]);
  await Promise.all(fleet.slice(1).map((a) => waitFor('install', () => installed(a, 'zoned'), 90_000)));
  let zoneTotal = 0;
  for (const a of fleet.slice(1)) {
    const s = await a.json(['status']);
    const zoneOf = new Map<string, string | null>(s.swarm.hosts.map((h: any) => [h.peerId, h.zone]));
    const done = s.swarm.recentTransfers.find((x: any) => x.manifestId === pub.manifestId);
    let zone = 0;
    let far = 0;
    for (const src of done.sources) {
      t.true(Number.isInteger(src.window) && src.window >= 1 && src.window <= 4, `source window ${src.window}`);
      if (zoneOf.get(src.peer) === 'dc-b') zone += src.bytes;
      else far += src.bytes;
    }
    const m = parseMetrics(await (await fetch(s.http + 'metrics')).text());
    t.is(m.get('joblet_agent_downloaded_bytes_total{source="zone"}'), zone, a.dir);
    t.is(m.get('joblet_agent_downloaded_bytes_total{source="far"}'), far, a.dir);
    t.is(zone + far, done.fetchedBytes);
    zoneTotal += zone;
  }
  t.log(`bytes moved inside dc-b: ${zoneTotal}`);
});
