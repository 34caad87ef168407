/**
 * Benchmark: `joblet-agent publish` of a real runtime package of a few hundred MB, against `tar -xzf` of the same
 * .tar.gz measured in the same run, then the dedup of a next version that changes one small file.
 *
 *   node dist/scripts/bench-publish.js [--source DIR]... [--out FILE]
 *
 * The package is built from this machine (default: the largest JDK under /usr/lib/jvm, else /usr/lib/python3*)
 * with a runtime.yml added under one top-level dir, packed with `tar czf`. Each round uses a fresh agent, so
 * both rounds publish into an empty store: round r times `tar -xzf` (baseline), then `publish` of v1 from the
 * CLI call to its exit, then `publish` of v2 (dedup). The agent daemon's peak RSS (VmHWM, reset before each step)
 * and CPU seconds (utime+stime, all threads) are read from /proc. Targets are printed, never enforced.
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import {
  Agent, agentCli, buildRuntimePackage, bumpRuntimePackage, checkTarget, type Cleanup, heading,
  hostInfo, loadAverage, mb, mbps, parseBenchArgs, resolveSources, printProcessWindow, ProcessMonitor, type ProcessWindow, round, runBench,
  type RuntimePackage, type TargetResult, timeShell, writeResult,
} from './bench-util.js';

const ROUNDS = 2;
const TARGET_PUBLISH_OVER_TAR = 1.5;
const TARGET_PEAK_RSS_MB = 150;
const TARGET_STORED_OVER_TGZ = 1.1;

interface PublishJson {
  name: string; version: string; manifestId: string; unchanged: boolean;
  chunks: number; newChunks: number; treeBytes: number; storedNewBytes: number;
}

interface PublishStep {
  wallSeconds: number;
  loadAverage: number[];
  daemon: ProcessWindow;
  result: PublishJson;
  storeBytesBefore: number;
  storeBytesAfter: number;
  storeChunksAfter: number;
}

interface RoundResult {
  round: number;
  tarExtract: { wallSeconds: number; cpuSeconds: number; loadAverage: number[] };
  cliOverheadSeconds: number;
  publish: PublishStep & { storedBytes: number; ratioPublishOverTar: number; ratioStoredOverTgz: number };
  dedup: PublishStep & { storedBytesDelta: number };
  targets: TargetResult[];
}

async function timedPublish(agent: Agent, pkg: RuntimePackage): Promise<PublishStep> {
  const before = await agent.status();
  const monitor = await ProcessMonitor.start(agent.pid);
  const loadAvg = loadAverage();
  const run = await agentCli(['publish', pkg.tgz, '--json', '--socket', agent.socket]);
  const daemon = await monitor.stop();
  const after = await agent.status();
  return {
    wallSeconds: round(run.seconds),
    loadAverage: loadAvg,
    daemon,
    result: JSON.parse(run.stdout) as PublishJson,
    storeBytesBefore: before.store.bytes,
    storeBytesAfter: after.store.bytes,
    storeChunksAfter: after.store.chunks,
  };
}

async function main(cleanup: Cleanup): Promise<void> {
  const args = parseBenchArgs('bench-publish', 'node dist/scripts/bench-publish.js [--source DIR]... [--out FILE]');
  const host = hostInfo();
  console.log(`bench-publish on ${host.cpus} CPUs (${host.cpuModel}), node ${host.node}, load average ${host.loadAverageAtStart.join(' ')}`);
  const work = await cleanup.tempDir('joblet-agent-bench-publish-');

  const sources = await resolveSources(args.sources);
  heading(`building the package from ${sources.join(', ')}`);
  const build = path.join(work, 'build');
  await fs.mkdir(build);
  const v1 = await buildRuntimePackage(sources, build, '1.0.0');
  const { pkg: v2, changed } = await bumpRuntimePackage(v1, build, '1.0.1');
  console.log(`  v1 ${path.basename(v1.tgz)}: ${mb(v1.tgzBytes)} MB .tar.gz, ${mb(v1.treeBytes)} MB of files`);
  console.log(`  v2 ${path.basename(v2.tgz)}: ${mb(v2.tgzBytes)} MB .tar.gz; changed ${changed} and the version`);

  const rounds: RoundResult[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    heading(`round ${r}/${ROUNDS}: tar -xzf (baseline)`);
    const into = await fs.mkdtemp(path.join(work, 'extract-'));
    const tarLoad = loadAverage();
    const tar = await timeShell('tar -xzf "$1" -C "$2"', [v1.tgz, into]);
    await fs.rm(into, { recursive: true, force: true });
    console.log(`  tar -xzf: ${round(tar.seconds, 2)} s wall, ${round(tar.cpuSeconds, 2)} CPU s, ${mbps(v1.tgzBytes, tar.seconds)} MB/s of .tar.gz`);

    heading(`round ${r}/${ROUNDS}: publish v1 into a fresh agent`);
    const agent = await Agent.create(cleanup, `publish-r${r}`);
    // The fixed cost in every publish wall time: a node start and one control round trip.
    const cliOverhead = (await agentCli(['list', '--socket', agent.socket])).seconds;
    console.log(`  CLI overhead (\`list\` round trip, node start included): ${round(cliOverhead, 2)} s`);
    const pub = await timedPublish(agent, v1);
    const stored = pub.storeBytesAfter - pub.storeBytesBefore;
    console.log(`  publish: ${round(pub.wallSeconds, 2)} s wall, ${mbps(v1.tgzBytes, pub.wallSeconds)} MB/s of .tar.gz; `
      + `${pub.result.chunks} chunks, tree ${mb(pub.result.treeBytes)} MB, stored ${mb(stored)} MB`);
    printProcessWindow('agent daemon', pub.daemon);
    console.log(`  daemon CPU / tar -xzf CPU: ${round(pub.daemon.cpuSeconds / tar.cpuSeconds, 2)}`);
    const targets: TargetResult[] = [
      checkTarget('publish wall / tar -xzf wall', pub.wallSeconds / tar.seconds, TARGET_PUBLISH_OVER_TAR),
      checkTarget('daemon peak RSS', mb(pub.daemon.peakRssBytes), TARGET_PEAK_RSS_MB, ' MB'),
      checkTarget('stored bytes / .tar.gz bytes', stored / v1.tgzBytes, TARGET_STORED_OVER_TGZ),
    ];

    heading(`round ${r}/${ROUNDS}: publish v2 (one small file changed) into the same agent`);
    const dedup = await timedPublish(agent, v2);
    const dedupStored = dedup.storeBytesAfter - dedup.storeBytesBefore;
    console.log(`  publish v2: ${round(dedup.wallSeconds, 2)} s wall; ${dedup.result.newChunks} new of ${dedup.result.chunks} chunks; `
      + `new bytes stored ${round(dedupStored / 1024, 1)} KiB by store.bytes, ${round(dedup.result.storedNewBytes / 1024, 1)} KiB by publish --json `
      + `(${round((100 * dedupStored) / stored, 2)}% of v1)`);
    printProcessWindow('agent daemon', dedup.daemon);
    await agent.stop();

    rounds.push({
      round: r,
      tarExtract: { wallSeconds: round(tar.seconds), cpuSeconds: round(tar.cpuSeconds, 2), loadAverage: tarLoad },
      cliOverheadSeconds: round(cliOverhead),
      publish: { ...pub, storedBytes: stored, ratioPublishOverTar: round(pub.wallSeconds / tar.seconds), ratioStoredOverTgz: round(stored / v1.tgzBytes) },
      dedup: { ...dedup, storedBytesDelta: dedupStored },
      targets,
    });
  }

  heading('summary (best of the rounds; the machine may be noisy)');
  const best = (f: (x: RoundResult) => number) => Math.min(...rounds.map(f));
  const summary = {
    publishOverTar: checkTarget('publish wall / tar -xzf wall', best((x) => x.publish.ratioPublishOverTar), TARGET_PUBLISH_OVER_TAR),
    peakRssMB: checkTarget('daemon peak RSS', best((x) => mb(x.publish.daemon.peakRssBytes)), TARGET_PEAK_RSS_MB, ' MB'),
    storedOverTgz: checkTarget('stored bytes / .tar.gz bytes', best((x) => x.publish.ratioStoredOverTgz), TARGET_STORED_OVER_TGZ),
    dedupNewChunks: rounds.map((x) => x.dedup.result.newChunks),
    dedupNewBytes: rounds.map((x) => x.dedup.storedBytesDelta),
  };
  console.log(`  dedup: new chunks ${summary.dedupNewChunks.join(', ')}; new bytes ${summary.dedupNewBytes.map((b) => `${round(b / 1024, 1)} KiB`).join(', ')}`);

  await writeResult(args.out, {
    bench: 'publish',
    finishedAt: new Date().toISOString(),
    host: { ...host, loadAverageAtEnd: loadAverage() },
    sources,
    package: { v1: { tgz: path.basename(v1.tgz), tgzBytes: v1.tgzBytes, treeBytes: v1.treeBytes },
      v2: { tgz: path.basename(v2.tgz), tgzBytes: v2.tgzBytes, changedFile: changed } },
    rounds,
    summary,
  });
}

runBench('bench-publish', main);
