// A real Prometheus server (Debian's `prometheus` package; .ci/run installs it) scrapes an agent.
import test from 'ava';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { tmpDir, startAgent, waitFor } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

const PROMETHEUS = '/usr/bin/prometheus';
const present = await fs.access(PROMETHEUS).then(() => true, () => false);
const isRoot = process.getuid?.() === 0;
// As root (CI) the binary must be there; elsewhere its absence skips this test, saying so.
const maybe = present || isRoot ? test : test.skip;
const title = present || isRoot
  ? 'a real Prometheus scrapes the agent: the target is up and joblet_agent_* series have the agent\'s values'
  : `a real Prometheus scrapes the agent (SKIPPED: ${PROMETHEUS} is missing; apt-get install prometheus)`;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

maybe(title, async (t) => {
  const root = await tmpDir(t, 'ja-prom-');
  const agent = await startAgent(t, path.join(root, 'agent'));
  const src = path.join(root, 'pkg');
  await makeRuntimeTree(src, { name: 'scraped', version: '1.0.0', bulkBytes: 1024 * 1024 });
  await agent.json(['publish', src]);
  const status = await agent.json(['status']);
  const target = new URL(status.http).host;

  const promPort = await freePort();
  const config = path.join(root, 'prometheus.yml');
  await fs.writeFile(config, [
    'global:', '  scrape_interval: 1s', '  scrape_timeout: 1s',
    'scrape_configs:', '  - job_name: joblet-agent', '    static_configs:', `      - targets: ['${target}']`, '',
  ].join('\n'));
  const prom = spawn(PROMETHEUS, [
    `--config.file=${config}`, `--storage.tsdb.path=${path.join(root, 'tsdb')}`,
    `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let promLog = '';
  prom.stderr!.on('data', (d) => (promLog += d));
  const exited = new Promise<void>((r) => prom.on('exit', () => r()));
  t.teardown(async () => {
    if (prom.exitCode === null && prom.signalCode === null) process.kill(prom.pid!, 'SIGTERM');
    await exited;
    if (!t.passed) console.error(`---- prometheus log ----\n${promLog}---- end ----`);
  });
  const api = `http://127.0.0.1:${promPort}/api/v1`;
  const query = async (q: string) => {
    const r = await fetch(`${api}/query?query=${encodeURIComponent(q)}`);
    const body = await r.json() as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    return body.data.result;
  };

  const up = await waitFor('Prometheus sees the agent up', async () => {
    const r = await fetch(`${api}/targets`);
    const body = await r.json() as { data: { activeTargets: { health: string; lastError: string; scrapeUrl: string }[] } };
    return body.data.activeTargets.find((x) => x.health === 'up');
  }, 60_000, 500);
  t.is(up!.scrapeUrl, `http://${target}/metrics`);

  const installed = await waitFor('joblet_agent_runtimes_installed in Prometheus', async () => {
    const res = await query('joblet_agent_runtimes_installed');
    return res.length ? res : null;
  }, 60_000, 500);
  t.is(installed![0].value[1], '1');
  t.is(installed![0].metric.job, 'joblet-agent');
  const info = await query('joblet_agent_info');
  t.is(info[0].metric.peer_id, status.peerId);
  const store = await query('joblet_agent_store_bytes');
  t.is(Number(store[0].value[1]), status.store.bytes);
  const buckets = await query('joblet_agent_install_duration_seconds_bucket');
  t.true(buckets.length > 1, 'the histogram came through');
  const far = await query('joblet_agent_downloaded_bytes_total{source="far"}');
  t.is(far[0].value[1], '0', 'the publisher downloaded nothing');
  const cpu = await query('process_cpu_user_seconds_total');
  t.is(cpu.length, 1, 'the default process metrics came through');
});
