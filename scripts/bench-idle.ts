/**
 * Idle cost of an agent: 6 agents on 127.0.0.1 form one fleet, a small runtime is published and installed
 * everywhere, and then nothing happens. Over a 60 s window the CPU time (user + system, /proc/PID/stat) of
 * every agent is read; the figure is the share of one core each agent used while idle.
 *
 *   node dist/scripts/bench-idle.js [--label before|after] [--seconds 60] [--out FILE]
 *
 * Compare two builds by running it from each (the agents started are always the ones of the build the script
 * belongs to). Target (issue 10): an idle agent with >= 5 peers uses <= 0.5 % of a core.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { Agent, agentCli, cpuSeconds, hostInfo, loadAverage, round, runBench, sleep, waitFor, writeResult } from './bench-util.js';

const HOSTS = 6;
const TARGET_PERCENT = 0.5;

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { label: { type: 'string' }, seconds: { type: 'string' }, out: { type: 'string' }, settle: { type: 'string' } },
  strict: true,
});
const label = values.label ?? 'this build';
const windowS = Number(values.seconds ?? 60);
const settleS = Number(values.settle ?? 20);

runBench('bench-idle', async (cleanup) => {
  const first = await Agent.create(cleanup, 'a0');
  const agents = [first];
  // The daemon answers its socket before the swarm is listening.
  await waitFor('the first agent to listen', async () => ((await first.status()).addresses.length > 0 ? true : undefined), 30_000);
  for (let i = 1; i < HOSTS; i++) agents.push(await Agent.create(cleanup, `a${i}`, { joinFleetOf: first }));

  // Something in the catalogs, installed everywhere, as in a fleet at rest.
  const pkg = path.join(await cleanup.tempDir('joblet-agent-bench-idle-pkg-'), 'idle-rt');
  await fs.mkdir(path.join(pkg, 'isolated'), { recursive: true });
  await fs.writeFile(path.join(pkg, 'runtime.yml'), 'name: idle-rt\nversion: "1.0.0"\nmounts:\n  - source: isolated\n    target: /opt/idle\n');
  await fs.writeFile(path.join(pkg, 'isolated', 'data.bin'), Buffer.alloc(512 * 1024, 7));
  await agentCli(['publish', pkg, '--socket', first.socket]);
  await waitFor('the runtime on every agent', async () => {
    const lists = await Promise.all(agents.map((a) => a.list()));
    return lists.every((l) => l.some((r) => r.name === 'idle-rt')) ? true : undefined;
  }, 120_000, 500);
  await waitFor(`every agent connected to ${HOSTS - 1} peers`, async () => {
    const peers = await Promise.all(agents.map(async (a) => new Set((await a.status()).swarm.peers.map((p: any) => p.peerId)).size));
    return peers.every((n) => n >= HOSTS - 1) ? true : undefined;
  }, 120_000, 500);
  // Let the install announcements, first catalog rounds and backoffs play out: "idle" starts after them.
  await sleep(settleS * 1000);

  const pids = agents.map((a) => a.pid);
  const start = await Promise.all(pids.map(cpuSeconds));
  const t0 = performance.now();
  await sleep(windowS * 1000);
  const end = await Promise.all(pids.map(cpuSeconds));
  const elapsed = (performance.now() - t0) / 1000;
  const percent = end.map((e, i) => round((100 * (e - start[i]!)) / elapsed, 2));
  const peers = await Promise.all(agents.map(async (a) => (await a.status()).swarm.peers.length));
  const sorted = [...percent].sort((a, b) => a - b);
  const median = round((sorted[2]! + sorted[3]!) / 2, 2);

  console.log(`idle CPU, ${HOSTS} agents on 127.0.0.1, ${round(elapsed, 1)} s window (${label}), load ${loadAverage().join(' ')}`);
  agents.forEach((a, i) => console.log(`  ${a.name}${i === 0 ? ' (publisher)' : ''}: ${percent[i]} % of a core, ${peers[i]} peers`));
  console.log(`  median ${median} % (target <= ${TARGET_PERCENT} %): ${median <= TARGET_PERCENT ? 'met' : 'NOT met'}; max ${sorted[HOSTS - 1]} %`);
  if (values.out) await writeResult(path.resolve(values.out), { label, hosts: HOSTS, windowS: elapsed, percent, median, peers, host: hostInfo() });
});
