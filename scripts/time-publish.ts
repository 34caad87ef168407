/**
 * Times `joblet-agent publish PACKAGE` by a fresh agent (started as the benchmarks start it: the daemon's node
 * flags, MALLOC_ARENA_MAX=2), against `tar -xzf` of the same file in the same round, into the same temp dir's
 * filesystem (set TMPDIR to choose it: a tmpfs takes the disk's noise out of both).
 *
 *   node dist/scripts/time-publish.js PACKAGE.tar.gz [--rounds N] [--prof-dir DIR] [--memory] [--node-args="..."]
 *
 * --node-args adds node flags to the agent's (e.g. "--trace-gc", "--heapsnapshot-signal=SIGUSR2").
 * --prof-dir runs the agent under `node --cpu-prof` and leaves its main-thread profile there. --memory samples the
 * agent's process.memoryUsage() every 100 ms (through `status`, which costs it a scan of its store) and prints
 * each part's peak: V8 heap, ArrayBuffers, the rest of the RSS.
 */
import { parseArgs } from 'node:util';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Agent, agentCli, cpuSeconds, peakRssBytes, runBench, sampleMemory, threadCpu, timeShell } from './bench-util.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { rounds: { type: 'string', default: '1' }, 'prof-dir': { type: 'string' }, memory: { type: 'boolean', default: false }, 'node-args': { type: 'string' } },
});
const pkg = positionals[0];
const rounds = Number(values.rounds);
if (!pkg || !Number.isInteger(rounds) || rounds < 1) {
  console.error('usage: time-publish PACKAGE.tar.gz [--rounds N] [--prof-dir DIR] [--memory] [--node-args="..."]');
  process.exit(2);
}
const profDir = values['prof-dir'] ? path.resolve(values['prof-dir']) : null;

runBench('time-publish', async (cleanup) => {
  for (let round = 1; round <= rounds; round++) {
    const tarDir = await cleanup.tempDir('joblet-time-tar-');
    const tar = await timeShell('tar -xzf "$1" -C "$2"', [pkg, tarDir]);
    const a = await Agent.create(cleanup, `a${round}`, { nodeArgs: [...(profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []), ...(values['node-args']?.split(' ').filter(Boolean) ?? [])] });
    const cpu0 = await cpuSeconds(a.pid);
    const memory = values.memory ? sampleMemory(a) : null;
    const t0 = performance.now();
    await agentCli(['publish', pkg, '--socket', a.socket, '--json']);
    const wall = (performance.now() - t0) / 1000;
    const peaks = memory ? `; memory peaks (MB, each part's own): ${await memory.stop()}` : '';
    const cpu = (await cpuSeconds(a.pid)) - cpu0;
    const rssMB = (await peakRssBytes(a.pid)) / 1e6;
    const threads = (await threadCpu(a.pid)).filter(([, c]) => c >= 0.01).map(([n, c]) => `${n} ${c.toFixed(2)}`).join(', ');
    await a.stop();
    // Each round starts from the same filesystem: the trees and stores of earlier rounds are removed. Kept, they
    // made every later round's publish ~50 % slower in wall and CPU on this VM (JDK, tmpfs: 4.0 - 4.4 s against
    // 2.7 - 2.8 s with this removal, in the same script): writing pages the guest has not touched before is slow.
    await Promise.all([tarDir, a.dir].map((d) => fs.rm(d, { recursive: true, force: true })));
    console.log(`round ${round}: tar -xzf ${tar.seconds.toFixed(2)} s wall, ${tar.cpuSeconds.toFixed(2)} CPU s; ` +
      `publish ${wall.toFixed(2)} s wall (${(wall / tar.seconds).toFixed(2)} x), ${cpu.toFixed(2)} CPU s (${(cpu / tar.cpuSeconds).toFixed(2)} x), ` +
      `agent peak RSS ${rssMB.toFixed(0)} MB${peaks}\n  the agent's threads (CPU s over its life): ${threads}`);
  }
});
