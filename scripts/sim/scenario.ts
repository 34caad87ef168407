// One simulated deployment: build the network, run a fleet of agents, publish from host 0, time every
// install, check the trees, then run the baselines over the same links. Everything is removed at the end.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Resources, cleanupOnSignals, type CleanupReport } from './cleanup.js';
import { buildTopology, takenNames, uplinkBytes, type Host, type TopologySpec } from './topology.js';
import { startAgent, snapshotAgent, dialAddress, call, installed, procUsage, readClockTicks, stopAgent, commOf, tail, type Agent, type AgentStatus } from './agents.js';
import { generatePackage, packageIdentity } from './package-gen.js';
import { hashTree } from './tree-hash.js';
import { startHttpServer, centralServer, sequentialCopy, type BaselineName } from './baselines.js';
import { bitTorrent } from './bittorrent.js';
import { fluidBoundS, summarize, round, type MethodSummary } from './report.js';
import { run, sleep } from './sh.js';
import { LinkSampler, linkFigures, type LinkFigures, type Sample } from './link-sampler.js';

export interface ScenarioOptions extends TopologySpec {
  zones: boolean;
  /** Extra `init` flags for every agent (the bandwidth caps). */
  agentArgs?: string[];
  /** An existing .tar.gz, or undefined to generate one of generateBytes. */
  packagePath?: string;
  generateBytes: number;
  /** Copy the generated package here, to reuse it in later runs. */
  savePackage?: string;
  /** Which baselines to run after the agents, in this order; [] for none. */
  baselines: BaselineName[];
  /** Copy every agent's log (and the BitTorrent logs) into this directory before the work dir goes. */
  keepLogs?: string;
  /** Upper bound on each phase's wait, in seconds. */
  timeoutS: number;
  log: (line: string) => void;
}

export interface HostFigures {
  host: number;
  rack: string;
  installedS: number | null;
  treeDigest: string | null;
  peakRssMB: number;
  cpuS: number;
  cpuDuringTransferS: number;
  /** What the agent itself counted for this transfer (status recentTransfers): payload fetched vs the package's stored size. */
  fetchedBytes: number | null;
  bytesTotal: number | null;
  /** fetchedBytes over the transfer's own duration (startedAt to finishedAt), to compare with a bandwidth cap. */
  transferRateBps: number | null;
  /** The transfer's CPU split into user (JS, crypto, zlib) and system (kernel: sockets, files) time. */
  userDuringTransferS: number;
  systemDuringTransferS: number;
  /** Chunk uploads this agent answered from the chunks it wrote last (kept in memory) and from chunk files (status uploads). */
  uploadsFromMemory: number | null;
  uploadsFromDisk: number | null;
}

export interface ScenarioResult {
  date: string;
  machine: { cores: number; loadAvgStart: number[]; loadAvgEnd: number[]; busyDuringTransfer: number | null };
  params: { hosts: number; hostMbit: number; racks: number; uplinkMbit: number; zones: boolean; packageBytes: number; packageName: string; agentArgs?: string[] };
  fluidBoundS: number | null;
  publishS: number;
  methods: Record<string, MethodSummary>;
  agents: HostFigures[];
  treesIdentical: boolean;
  baselineTreesIdentical: boolean | null;
  crossRackBytes: number | null;
  crossRackPerPackage: number | null;
  /** From the switch port counters during the agents' transfer (seconds from the publish's end). */
  links: LinkFigures;
  linkSamples: Sample[];
  /**
   * The BitTorrent baseline, when it ran: its info hash (what the tracker's whitelist holds), and the same link
   * counters as linkSamples (which cover the agents' transfer) while BitTorrent ran.
   */
  bitTorrent: { infoHash: string; torrentBytes: number; linkSamples: Sample[] } | null;
  /** With --zones: over all agents, how many of their peers they knew the zone of when the publish began. */
  zonesKnown: { known: number; peers: number } | null;
  /** The git commit of the tree and the src files that differed from it (other people edit src meanwhile). */
  agentVersion: { commit: string; modifiedSrc: string[] };
  cleanup: CleanupReport;
}

export const loadAvg = () => os.loadavg().map((x) => round(x, 2));

/** Link samples as the JSON keeps them: times to 10 ms. */
const roundedSamples = (samples: Sample[]): Sample[] => samples.map((x) => ({ ...x, t: round(x.t, 2) }));

export async function runScenario(opts: ScenarioOptions): Promise<ScenarioResult> {
  const { result, cleanup } = await withSimResources(opts.keepLogs, (res) => runInside(opts, res));
  return { ...result, cleanup };
}

/**
 * Run `inside` with the namespaces, processes and temp dirs it creates registered in one Resources, refusing
 * to start over an earlier run's names, and removing everything afterwards, also on failure or a signal.
 */
export async function withSimResources<T>(keepLogsDir: string | undefined, inside: (res: Resources) => Promise<T>): Promise<{ result: T; cleanup: CleanupReport }> {
  const taken = await takenNames();
  if (taken.length) throw new Error(`refusing to start: ${taken.join(', ')} already exist (an earlier run still up, or someone else's); remove them first`);
  const res = new Resources();
  const offSignals = cleanupOnSignals(res);
  try {
    const result = await inside(res);
    if (keepLogsDir) await keepLogs(res.dirs, keepLogsDir);
    return { result, cleanup: await res.cleanupAll() };
  } finally {
    if (keepLogsDir) await keepLogs(res.dirs, keepLogsDir).catch(() => {});
    await res.cleanupAll();
    offSignals();
  }
}

async function runInside(opts: ScenarioOptions, res: Resources): Promise<Omit<ScenarioResult, 'cleanup'>> {
  const log = opts.log;
  const loadAvgStart = loadAvg();
  await readClockTicks();
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'jsim-'));
  res.dirs.push(workDir);

  let pkgPath = opts.packagePath;
  if (!pkgPath) {
    log(`generating a package of about ${(opts.generateBytes / 1e6).toFixed(1)} MB`);
    pkgPath = (await generatePackage(workDir, opts.generateBytes)).path;
    if (opts.savePackage) await fs.copyFile(pkgPath, opts.savePackage);
  }
  pkgPath = path.resolve(pkgPath);
  const packageBytes = (await fs.stat(pkgPath)).size;
  const ident = await packageIdentity(pkgPath);
  const reference = await referenceTree(pkgPath, path.join(workDir, 'ref'));
  const bound = fluidBoundS(packageBytes, opts.hostMbit);
  log(`package ${ident.name}@${ident.version}: ${(packageBytes / 1e6).toFixed(1)} MB, ${reference.files} files; S/B = ${bound?.toFixed(2) ?? 'n/a (unshaped)'} s`);

  log(`building ${opts.hosts} hosts, ${opts.racks} rack(s), B = ${opts.hostMbit || 'unshaped'} Mbit/s${opts.racks === 2 ? `, uplink ${opts.uplinkMbit || 'unshaped'} Mbit/s` : ''}`);
  const hosts = await buildTopology(opts, res.namespaces);
  const cli = await snapshotAgent(workDir);
  const agentVersion = await describeAgentVersion();

  const agents = await startFleet(hosts, opts, workDir, res, cli);
  await waitForMesh(agents, opts.timeoutS * 1000, log);
  const zonesKnown = opts.zones ? await countKnownZones(agents) : null;
  if (zonesKnown) log(`peers whose zone the agents know: ${zonesKnown.known} of ${zonesKnown.peers}`);

  const cpuBefore = await Promise.all(agents.map((a) => procUsage(a.pid)));
  const uplinkBefore = opts.racks === 2 ? await uplinkBytes() : 0;
  log(`publishing from host 0`);
  const publishStart = Date.now();
  await call(agents[0].socket, 'publish', { path: pkgPath }, opts.timeoutS * 1000);
  const t0 = Date.now();
  const sampler = new LinkSampler(hosts.length);
  await sampler.start();
  const cpuStart = await machineCpu();
  const installedMs = await waitForInstalls(agents, ident, t0, opts.timeoutS * 1000, log);
  const cpuEnd = await machineCpu();
  const samples = await sampler.stop();
  const uplinkAfter = opts.racks === 2 ? await uplinkBytes() : 0;
  const usage = await Promise.all(agents.map((a) => procUsage(a.pid)));

  log('hashing every installed tree');
  const agentFigures: HostFigures[] = [];
  for (const [i, a] of agents.entries()) {
    const rec = await installed(a, ident.name, ident.version);
    const xfer = await transferCounters(a, rec?.manifestId);
    const uploads = await uploadCounters(a);
    const digest = rec?.path ? (await hashTree(rec.path)).digest : null;
    agentFigures.push({
      host: i, rack: a.host.rack, installedS: installedMs[i] === null ? null : round(installedMs[i]! / 1000, 3), treeDigest: digest,
      fetchedBytes: xfer?.fetchedBytes ?? null, bytesTotal: xfer?.bytesTotal ?? null, transferRateBps: rateOf(xfer),
      peakRssMB: round(usage[i].peakRssBytes / 1e6, 1), cpuS: round(usage[i].cpuSeconds, 2),
      cpuDuringTransferS: round(usage[i].cpuSeconds - cpuBefore[i].cpuSeconds, 2),
      userDuringTransferS: round(usage[i].userSeconds - cpuBefore[i].userSeconds, 2),
      systemDuringTransferS: round(usage[i].systemSeconds - cpuBefore[i].systemSeconds, 2),
      uploadsFromMemory: uploads?.fromMemory ?? null, uploadsFromDisk: uploads?.fromDisk ?? null,
    });
  }
  const treesIdentical = agentFigures.every((f) => f.treeDigest === reference.digest);
  // Stop the agents now so that they do not compete for the CPU with the baselines.
  await Promise.all(agents.map(async (a) => { if (await stopAgent(a.pid)) res.pids.delete(a.pid); }));

  const methods: Record<string, MethodSummary> = {};
  const receiving = agentFigures.slice(1);
  if (receiving.some((f) => f.installedS === null)) {
    const missing = receiving.filter((f) => f.installedS === null).map((f) => f.host);
    throw new Error(`hosts ${missing.join(', ')} did not install within ${opts.timeoutS} s; last log lines of host ${missing[0]}:\n${await tail(agents[missing[0]].logFile)}`);
  }
  methods['joblet-agent'] = summarize(receiving.map((f) => f.installedS!), bound);
  const links = linkFigures(samples, opts.hostMbit, bound, methods['joblet-agent'].lastS);

  let baselineTreesIdentical: boolean | null = null;
  let bt: ScenarioResult['bitTorrent'] = null;
  const server = hosts[0];
  const clients = hosts.slice(1);
  for (const name of opts.baselines) {
    let ok: boolean;
    if (name === 'bittorrent') {
      log(`BitTorrent: opentracker and a seeding aria2c on host 0, aria2c on ${clients.length} hosts, tar -xzf on completion`);
      const btSampler = new LinkSampler(hosts.length);
      await btSampler.start();
      const run = await bitTorrent(server, clients, pkgPath, workDir, res, opts.timeoutS * 1000, log).finally(() => btSampler.stop());
      bt = { infoHash: run.infoHash, torrentBytes: run.torrentBytes, linkSamples: roundedSamples(btSampler.samples) };
      methods['BitTorrent (aria2c)'] = summarize(run.finishedMs.map((ms) => ms / 1000), bound);
      ok = await baselineTreesMatch(run.dirs, reference.digest);
      if (opts.keepLogs) await keepLogs([workDir], opts.keepLogs);
      await fs.rm(path.join(workDir, 'bt'), { recursive: true, force: true });
    } else {
      const serverPid = await startHttpServer(server, pkgPath, res);
      if (name === 'central') {
        log(`central server: ${clients.length} hosts download from host 0 at once`);
        const central = await centralServer(server, clients, workDir, res, opts.timeoutS * 1000);
        methods['central HTTP server'] = summarize(central.finishedMs.map((ms) => ms / 1000), bound);
        ok = await baselineTreesMatch(central.dirs, reference.digest);
      } else {
        log(`sequential copy loop: host after host`);
        const seq = await sequentialCopy(server, clients, workDir, res, opts.timeoutS * 1000);
        methods['sequential copy loop'] = summarize(seq.finishedMs.map((ms) => ms / 1000), bound);
        ok = await baselineTreesMatch(seq.dirs, reference.digest);
      }
      if (await stopAgent(serverPid)) res.pids.delete(serverPid);
    }
    baselineTreesIdentical = (baselineTreesIdentical ?? true) && ok;
  }

  return {
    date: new Date().toISOString(),
    machine: {
      cores: os.cpus().length, loadAvgStart, loadAvgEnd: loadAvg(),
      busyDuringTransfer: cpuStart && cpuEnd ? round(1 - (cpuEnd.idle - cpuStart.idle) / Math.max(1, cpuEnd.total - cpuStart.total), 3) : null,
    },
    params: { hosts: opts.hosts, hostMbit: opts.hostMbit, racks: opts.racks, uplinkMbit: opts.uplinkMbit, zones: opts.zones, packageBytes, packageName: `${ident.name}@${ident.version}`, agentArgs: opts.agentArgs ?? [] },
    fluidBoundS: bound === null ? null : round(bound, 3),
    publishS: round((t0 - publishStart) / 1000, 3),
    methods,
    agents: agentFigures,
    treesIdentical,
    baselineTreesIdentical,
    crossRackBytes: opts.racks === 2 ? uplinkAfter - uplinkBefore : null,
    crossRackPerPackage: opts.racks === 2 ? round((uplinkAfter - uplinkBefore) / packageBytes, 3) : null,
    links: {
      publisherUploadShare: links.publisherUploadShare === null ? null : round(links.publisherUploadShare, 3),
      totalUploadShare: links.totalUploadShare === null ? null : round(links.totalUploadShare, 3),
      downloadStartS: links.downloadStartS.map((x) => round(x, 2)),
      downloadEndS: links.downloadEndS.map((x) => round(x, 2)),
      downloadedBytes: links.downloadedBytes,
    },
    zonesKnown,
    bitTorrent: bt,
    agentVersion,
    linkSamples: roundedSamples(samples),
  };
}

/** Copy h<i>/agent.log and the BitTorrent logs of the run's work dir to `dest`, named by host. */
export async function keepLogs(dirs: string[], dest: string): Promise<void> {
  await fs.mkdir(dest, { recursive: true });
  for (const work of dirs) {
    for (const name of await fs.readdir(work).catch(() => [] as string[])) {
      if (/^h\d+$/.test(name)) await fs.copyFile(path.join(work, name, 'agent.log'), path.join(dest, `${name}-agent.log`)).catch(() => {});
    }
    for (const name of await fs.readdir(path.join(work, 'bt')).catch(() => [] as string[])) {
      const from = /^h\d+$/.test(name) ? path.join(work, 'bt', name, 'aria2c.log') : path.join(work, 'bt', name);
      if (from.endsWith('.log')) await fs.copyFile(from, path.join(dest, `bt-${name.replace(/\.log$/, '')}.log`)).catch(() => {});
    }
  }
}

export async function describeAgentVersion(): Promise<{ commit: string; modifiedSrc: string[] }> {
  const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
  const commit = (await run('git', ['-C', repo, 'rev-parse', '--short', 'HEAD']).catch(() => ({ stdout: 'unknown' }))).stdout.trim();
  const status = (await run('git', ['-C', repo, 'status', '--porcelain', '--', 'src']).catch(() => ({ stdout: '' }))).stdout;
  return { commit, modifiedSrc: status.split('\n').map((l) => l.slice(3)).filter(Boolean) };
}

/** Jiffies of the whole machine from /proc/stat: idle (idle + iowait) and total, to tell if the CPU was the limit. */
async function machineCpu(): Promise<{ idle: number; total: number } | null> {
  const line = (await fs.readFile('/proc/stat', 'utf8').catch(() => '')).split('\n')[0];
  if (!line.startsWith('cpu ')) return null;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  return { idle: v[3] + (v[4] ?? 0), total: v.slice(0, 8).reduce((a, b) => a + b, 0) };
}

/** Unpack the package as joblet would see it (one top-level dir stripped) and hash it. */
async function referenceTree(pkg: string, dir: string): Promise<{ digest: string; files: number }> {
  await fs.mkdir(dir, { recursive: true });
  await run('tar', ['-xzf', pkg, '-C', dir], { timeoutMs: 600_000 });
  const root = await runtimeRoot(dir);
  const t = await hashTree(root);
  await fs.rm(dir, { recursive: true, force: true });
  return t;
}

async function runtimeRoot(dir: string): Promise<string> {
  const names = await fs.readdir(dir);
  if (names.includes('runtime.yml')) return dir;
  if (names.length === 1) return path.join(dir, names[0]);
  throw new Error(`${dir}: no runtime.yml at the root or under a single top-level directory`);
}

async function baselineTreesMatch(dirs: string[], digest: string): Promise<boolean> {
  let ok = true;
  for (const d of dirs) {
    if ((await hashTree(await runtimeRoot(d))).digest !== digest) ok = false;
    await fs.rm(d, { recursive: true, force: true });
  }
  return ok;
}

/**
 * Host 0 first (it holds the publisher key; the others share its fleet key and trust it). Then one seed
 * per rack, then everyone else, each bootstrapped to host 0 and to its rack's seed.
 */
export async function startFleet(hosts: Host[], opts: Pick<ScenarioOptions, 'zones' | 'agentArgs'>, workDir: string, res: Resources, cli: string): Promise<Agent[]> {
  const track = (pid: number) => res.pids.add(pid);
  const zone = (h: Host) => (opts.zones ? h.rack : undefined);
  const first = await startAgent(hosts[0], workDir, { cli, zone: zone(hosts[0]), bootstrap: [], extraInit: opts.agentArgs }, track);
  await assertNode(first);
  const etc0 = path.join(first.dir, 'etc');
  const firstAddr = await dialAddress(first);
  const joined = (bootstrap: string[], h: Host) => startAgent(h, workDir,
    { cli, zone: zone(h), bootstrap, fleetKey: path.join(etc0, 'fleet.key'), trust: path.join(etc0, 'publisher.pub'), extraInit: opts.agentArgs }, track);
  const seedIdx = new Set<number>();
  if (hosts.length > 1) seedIdx.add(1);
  const rackB = hosts.find((h) => h.rack === 'rackB');
  if (rackB) seedIdx.add(rackB.index);
  const agents: Agent[] = [first];
  const seeds = await Promise.all([...seedIdx].map((i) => joined([firstAddr], hosts[i])));
  for (const s of seeds) agents[s.host.index] = s;
  const seedAddr = new Map<string, string>();
  for (const s of seeds) if (!seedAddr.has(s.host.rack)) seedAddr.set(s.host.rack, await dialAddress(s));
  const rest = hosts.filter((h) => h.index !== 0 && !seedIdx.has(h.index));
  // Two at a time: node's start-up is CPU-heavy and this machine may have two cores only.
  for (let i = 0; i < rest.length; i += 2) {
    const batch = await Promise.all(rest.slice(i, i + 2).map((h) => joined([firstAddr, seedAddr.get(h.rack) ?? firstAddr], h)));
    for (const a of batch) agents[a.host.index] = a;
  }
  return agents;
}

async function assertNode(a: Agent): Promise<void> {
  const comm = await commOf(a.pid);
  // Node 24 names its main thread, and with it the process, "MainThread"; Node 20 leaves "node".
  if (comm !== 'node' && comm !== 'MainThread') throw new Error(`pid ${a.pid} of ${a.host.ns} runs "${comm}", not node: cannot measure the agent`);
}

/** Wait until every agent has at least one peer (two when the fleet is bigger), then let gossip settle. */
export async function waitForMesh(agents: Agent[], timeoutMs: number, log: (s: string) => void): Promise<void> {
  const want = Math.min(2, agents.length - 1);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = await Promise.all(agents.map((a) => call<AgentStatus>(a.socket, 'status').then((s) => s.swarm?.peers.length ?? 0, () => 0)));
    if (counts.every((c) => c >= want)) { log(`every agent has at least ${want} peer(s): ${counts.join(' ')}`); break; }
    if (Date.now() > deadline) throw new Error(`the fleet did not connect within ${timeoutMs / 1000} s: peer counts ${counts.join(' ')}`);
    await sleep(500);
  }
  // gossipsub builds its mesh on heartbeats (one second apart); give it a few.
  await sleep(3000);
}

interface TransferView { manifestId: string; fetchedBytes?: number; bytesTotal?: number; startedAt?: string; finishedAt?: string }

function rateOf(x: TransferView | undefined): number | null {
  if (!x?.fetchedBytes || !x.startedAt || !x.finishedAt) return null;
  const s = (Date.parse(x.finishedAt) - Date.parse(x.startedAt)) / 1000;
  return s > 0 ? Math.round(x.fetchedBytes / s) : null;
}

async function transferCounters(a: Agent, manifestId: string | undefined): Promise<TransferView | undefined> {
  if (!manifestId) return undefined;
  const s = await call<{ swarm?: { transfers?: TransferView[]; recentTransfers?: TransferView[] } }>(a.socket, 'status').catch(() => undefined);
  return [...(s?.swarm?.recentTransfers ?? []), ...(s?.swarm?.transfers ?? [])].find((x) => x.manifestId === manifestId);
}

async function uploadCounters(a: Agent): Promise<{ fromMemory: number; fromDisk: number } | undefined> {
  const s = await call<{ swarm?: { uploads?: { fromMemory: number; fromDisk: number } } }>(a.socket, 'status').catch(() => undefined);
  return s?.swarm?.uploads;
}

async function countKnownZones(agents: Agent[]): Promise<{ known: number; peers: number }> {
  let known = 0;
  let peers = 0;
  for (const a of agents) {
    const s = await call<AgentStatus>(a.socket, 'status');
    for (const p of s.swarm?.peers ?? []) { peers++; if (p.zone) known++; }
  }
  return { known, peers };
}

/** Poll each agent's install list; returns, per host, ms from t0 to its own installedAt (null if never). */
async function waitForInstalls(agents: Agent[], ident: { name: string; version: string }, t0: number, timeoutMs: number, log: (s: string) => void): Promise<(number | null)[]> {
  const out: (number | null)[] = agents.map(() => null);
  const deadline = Date.now() + timeoutMs;
  let reported = 0;
  while (out.some((x) => x === null) && Date.now() < deadline) {
    await Promise.all(agents.map(async (a, i) => {
      if (out[i] !== null) return;
      const rec = await installed(a, ident.name, ident.version).catch(() => undefined);
      if (rec) out[i] = Date.parse(rec.installedAt) - t0;
    }));
    const done = out.filter((x) => x !== null).length;
    if (done !== reported) { reported = done; log(`${done}/${agents.length} installed after ${((Date.now() - t0) / 1000).toFixed(1)} s`); }
    await sleep(250);
  }
  return out;
}
