/**
 * Benchmark: one runtime package of a few hundred MB moving between two agents of one fleet on 127.0.0.1,
 * against plain HTTP of the same .tar.gz on loopback, measured in the same run.
 *
 *   node dist/scripts/bench-transfer.js [--source DIR]... [--out FILE]
 *
 * Each round:
 *  - baseline: a node http server (this process) streams the .tar.gz; `curl` downloads it to disk, then
 *    separately `curl | tar -xzf -` downloads and extracts it;
 *  - swarm: two fresh agents, B bootstrapped to A. `publish` on A; from the moment the publish CLI exits (A has
 *    announced), time until B lists the runtime as installed. B's status is polled meanwhile to split its own
 *    download (transfer startedAt -> all chunks held) from its install (-> recentTransfers finishedAt).
 * B's peak RSS (VmHWM, reset when the window opens) and CPU seconds, and A's, come from /proc. Polling goes
 * straight to the control socket, so it costs the agents one small request, not a node start per sample.
 */
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

import {
  Agent, agentCli, buildRuntimePackage, checkTarget, type Cleanup, heading, hostInfo, loadAverage,
  mb, mbps, parseBenchArgs, resolveSources, printProcessWindow, ProcessMonitor, type ProcessWindow, round, runBench,
  type RuntimePackage, sleep, type TargetResult, timeShell, waitFor, writeResult,
} from './bench-util.js';

const ROUNDS = 2;
const TARGET_PEAK_RSS_MB = 150;
/** After B connects, let gossipsub form its mesh so the announcement is not sent into an empty mesh. */
const SETTLE_MS = 2000;
const STATUS_POLL_MS = 250;
const LIST_POLL_MS = 100;
const INSTALL_TIMEOUT_MS = 10 * 60_000;

interface HttpTimings {
  download: { wallSeconds: number; cpuSeconds: number; mbPerSecond: number; loadAverage: number[] };
  downloadExtract: { wallSeconds: number; cpuSeconds: number; mbPerSecond: number; loadAverage: number[] };
}

interface SwarmTimings {
  loadAverage: number[];
  publishSeconds: number;
  /** Publish CLI exit -> B lists the runtime: announcement + transfer + install, as an operator sees it. */
  transferInstallSeconds: number;
  /** Publish CLI call on A -> B lists the runtime. */
  endToEndSeconds: number;
  /** Publish CLI exit -> B's download started (negative: B started before the CLI had exited). */
  announceSeconds: number | null;
  /** B's download: its startedAt -> first poll that saw every chunk held (+- one poll interval). */
  downloadSeconds: number | null;
  /** All chunks held -> B's recentTransfers finishedAt (reassembly, extraction, rename). */
  installSeconds: number | null;
  fetchedBytes: number | null;
  sources: unknown;
  installedBytesA: number;
  installedBytesB: number;
  a: { publish: ProcessWindow; transfer: ProcessWindow };
  b: ProcessWindow;
}

interface RoundResult {
  round: number;
  http: HttpTimings;
  swarm: SwarmTimings & { mbPerSecond: number };
  ratios: { swarmOverHttpDownload: number; swarmOverHttpDownloadExtract: number };
  targets: TargetResult[];
}

async function serveFile(cleanup: Cleanup, file: string): Promise<string> {
  const size = (await fs.stat(file)).size;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': size });
    pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.defer(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/${path.basename(file)}`;
}

async function httpRound(work: string, url: string, pkg: RuntimePackage): Promise<HttpTimings> {
  const file = path.join(work, 'downloaded.tar.gz');
  const dlLoad = loadAverage();
  const dl = await timeShell('curl -sSf -o "$2" "$1"', [url, file]);
  const got = (await fs.stat(file)).size;
  await fs.rm(file, { force: true });
  if (got !== pkg.tgzBytes) throw new Error(`HTTP download got ${got} bytes, the package has ${pkg.tgzBytes}`);
  console.log(`  HTTP download to disk: ${round(dl.seconds, 2)} s, ${mbps(pkg.tgzBytes, dl.seconds)} MB/s, curl ${round(dl.cpuSeconds, 2)} CPU s`);

  const into = await fs.mkdtemp(path.join(work, 'http-extract-'));
  const dxLoad = loadAverage();
  const dx = await timeShell('curl -sSf "$1" | tar -xzf - -C "$2"', [url, into]);
  await fs.rm(into, { recursive: true, force: true });
  console.log(`  HTTP download | tar -xzf: ${round(dx.seconds, 2)} s, ${mbps(pkg.tgzBytes, dx.seconds)} MB/s, curl+tar ${round(dx.cpuSeconds, 2)} CPU s`);
  return {
    download: { wallSeconds: round(dl.seconds), cpuSeconds: round(dl.cpuSeconds, 2), mbPerSecond: mbps(pkg.tgzBytes, dl.seconds), loadAverage: dlLoad },
    downloadExtract: { wallSeconds: round(dx.seconds), cpuSeconds: round(dx.cpuSeconds, 2), mbPerSecond: mbps(pkg.tgzBytes, dx.seconds), loadAverage: dxLoad },
  };
}

/**
 * Polls B's status until stopped, noting when its download of `manifestId` first held every chunk, and marking
 * B's CPU and RSS at that moment (download vs install).
 */
function watchDownload(b: Agent, monitor: ProcessMonitor, manifestId: () => string | null) {
  let stopped = false;
  let allChunksAt: number | null = null;
  const done = (async () => {
    while (!stopped) {
      const id = manifestId();
      if (id && allChunksAt === null) {
        const st = await b.status().catch(() => null);
        const t = st?.swarm?.transfers?.find((x: { manifestId: string }) => x.manifestId === id);
        if (t && t.chunksHave === t.chunks) {
          allChunksAt = Date.now();
          await monitor.mark('allChunksHeld').catch(() => undefined);
        }
      }
      await sleep(STATUS_POLL_MS);
    }
  })();
  return {
    async stop(): Promise<number | null> {
      stopped = true;
      await done;
      return allChunksAt;
    },
  };
}

async function swarmRound(cleanup: Cleanup, r: number, pkg: RuntimePackage): Promise<SwarmTimings> {
  const a = await Agent.create(cleanup, `A-r${r}`);
  const b = await Agent.create(cleanup, `B-r${r}`, { joinFleetOf: a });
  const aId = (await a.status()).peerId as string;
  await waitFor('agent B to connect to agent A', async () =>
    ((await b.status()).swarm?.peers ?? []).some((p: { peerId: string }) => p.peerId === aId) ? true : undefined, 30_000);
  await sleep(SETTLE_MS);

  const loadAvg = loadAverage();
  const monB = await ProcessMonitor.start(b.pid);
  const monA = await ProcessMonitor.start(a.pid);
  let manifestId: string | null = null;
  const watcher = watchDownload(b, monB, () => manifestId);
  const published = await agentCli(['publish', pkg.tgz, '--json', '--socket', a.socket]);
  const publishedAt = Date.now();
  const aPublish = await monA.stop();
  const monA2 = await ProcessMonitor.start(a.pid);
  manifestId = (JSON.parse(published.stdout) as { manifestId: string }).manifestId;
  const id = manifestId;
  console.log(`  publish on A: ${round(published.seconds, 2)} s (CLI call to exit)`);

  const installedAt = await waitFor('agent B to install the runtime', async () =>
    (await b.list()).some((x) => x.manifestId === id) ? Date.now() : undefined, INSTALL_TIMEOUT_MS, LIST_POLL_MS)
    .catch(async (err) => { throw new Error(`${(err as Error).message}; B's log:\n${await b.logTail()}`); });
  const bWindow = await monB.stop();
  const aTransfer = await monA2.stop();
  const allChunksAt = await watcher.stop();

  const bStatus = await b.status();
  const recent = (bStatus.swarm?.recentTransfers ?? []).find((x: { manifestId: string }) => x.manifestId === id);
  const startedAt = recent?.startedAt ? Date.parse(recent.startedAt) : null;
  const finishedAt = recent?.finishedAt ? Date.parse(recent.finishedAt) : null;
  const sizeOn = async (agent: Agent) => (await agent.list()).find((x) => x.manifestId === id)?.sizeBytes ?? 0;
  const timings: SwarmTimings = {
    loadAverage: loadAvg,
    publishSeconds: round(published.seconds),
    transferInstallSeconds: round((installedAt - publishedAt) / 1000),
    endToEndSeconds: round(published.seconds + (installedAt - publishedAt) / 1000),
    announceSeconds: startedAt !== null ? round((startedAt - publishedAt) / 1000) : null,
    downloadSeconds: startedAt !== null && allChunksAt !== null ? round((allChunksAt - startedAt) / 1000) : null,
    installSeconds: allChunksAt !== null && finishedAt !== null ? round((finishedAt - allChunksAt) / 1000) : null,
    fetchedBytes: recent?.fetchedBytes ?? null,
    sources: recent?.sources ?? null,
    installedBytesA: await sizeOn(a),
    installedBytesB: await sizeOn(b),
    a: { publish: aPublish, transfer: aTransfer },
    b: bWindow,
  };
  await b.stop();
  await a.stop();
  return timings;
}

async function main(cleanup: Cleanup): Promise<void> {
  const args = parseBenchArgs('bench-transfer', 'node dist/scripts/bench-transfer.js [--source DIR]... [--out FILE]');
  const host = hostInfo();
  console.log(`bench-transfer on ${host.cpus} CPUs (${host.cpuModel}), node ${host.node}, load average ${host.loadAverageAtStart.join(' ')}`);
  const work = await cleanup.tempDir('joblet-agent-bench-transfer-');

  const sources = await resolveSources(args.sources);
  heading(`building the package from ${sources.join(', ')}`);
  const build = path.join(work, 'build');
  await fs.mkdir(build);
  const pkg = await buildRuntimePackage(sources, build, '1.0.0');
  console.log(`  ${path.basename(pkg.tgz)}: ${mb(pkg.tgzBytes)} MB .tar.gz, ${mb(pkg.treeBytes)} MB of files`);
  const url = await serveFile(cleanup, pkg.tgz);

  const rounds: RoundResult[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    heading(`round ${r}/${ROUNDS}: plain HTTP on loopback (baseline)`);
    const baseline = await httpRound(work, url, pkg);

    heading(`round ${r}/${ROUNDS}: swarm, A publishes, B installs`);
    const swarm = await swarmRound(cleanup, r, pkg);
    const t = swarm.transferInstallSeconds;
    console.log(`  B installed ${t} s after the publish CLI exited (${mbps(pkg.tgzBytes, t)} MB/s of .tar.gz): `
      + `announce ${swarm.announceSeconds ?? '?'} s, download ${swarm.downloadSeconds ?? '?'} s`
      + `${swarm.downloadSeconds && swarm.fetchedBytes ? ` (${mbps(swarm.fetchedBytes, swarm.downloadSeconds)} MB/s of ${mb(swarm.fetchedBytes)} MB fetched)` : ''}`
      + `, install ${swarm.installSeconds ?? '?'} s; ${swarm.endToEndSeconds} s from the publish CLI call`);
    if (swarm.installedBytesA !== swarm.installedBytesB) {
      console.log(`  WARNING: B installed ${swarm.installedBytesB} bytes, A ${swarm.installedBytesA}`);
    }
    printProcessWindow('agent B (publish + transfer + install)', swarm.b);
    const held = swarm.b.marks.allChunksHeld;
    if (held) {
      console.log(`  agent B split: ${held.cpuSeconds} CPU s until every chunk was held (RSS then ${mb(held.rssBytes)} MB), `
        + `${round(swarm.b.cpuSeconds - held.cpuSeconds, 2)} CPU s after (install)`);
    }
    printProcessWindow('agent A during its publish', swarm.a.publish);
    printProcessWindow('agent A while B downloads', swarm.a.transfer);
    const ratios = {
      swarmOverHttpDownload: round(t / baseline.download.wallSeconds),
      swarmOverHttpDownloadExtract: round(t / baseline.downloadExtract.wallSeconds),
    };
    console.log(`  swarm transfer+install / HTTP download: ${ratios.swarmOverHttpDownload}; / HTTP download+extract: ${ratios.swarmOverHttpDownloadExtract}`);
    const targets: TargetResult[] = [checkTarget('agent B peak RSS', mb(swarm.b.peakRssBytes), TARGET_PEAK_RSS_MB, ' MB')];
    rounds.push({ round: r, http: baseline, swarm: { ...swarm, mbPerSecond: mbps(pkg.tgzBytes, t) }, ratios, targets });
  }

  heading('summary (best of the rounds; the machine may be noisy)');
  const best = (f: (x: RoundResult) => number) => Math.min(...rounds.map(f));
  const summary = {
    swarmTransferInstallSeconds: rounds.map((x) => x.swarm.transferInstallSeconds),
    httpDownloadSeconds: rounds.map((x) => x.http.download.wallSeconds),
    httpDownloadExtractSeconds: rounds.map((x) => x.http.downloadExtract.wallSeconds),
    swarmOverHttpDownload: best((x) => x.ratios.swarmOverHttpDownload),
    swarmOverHttpDownloadExtract: best((x) => x.ratios.swarmOverHttpDownloadExtract),
    peakRssB: checkTarget('agent B peak RSS', best((x) => mb(x.swarm.b.peakRssBytes)), TARGET_PEAK_RSS_MB, ' MB'),
  };
  console.log(`  swarm transfer+install ${summary.swarmTransferInstallSeconds.join(', ')} s; HTTP download ${summary.httpDownloadSeconds.join(', ')} s; `
    + `HTTP download+extract ${summary.httpDownloadExtractSeconds.join(', ')} s`);
  console.log(`  best ratios: swarm / HTTP download ${summary.swarmOverHttpDownload}, swarm / HTTP download+extract ${summary.swarmOverHttpDownloadExtract}`);

  await writeResult(args.out, {
    bench: 'transfer',
    finishedAt: new Date().toISOString(),
    host: { ...host, loadAverageAtEnd: loadAverage() },
    sources,
    package: { tgz: path.basename(pkg.tgz), tgzBytes: pkg.tgzBytes, treeBytes: pkg.treeBytes },
    rounds,
    summary,
  });
}

runBench('bench-transfer', main);
