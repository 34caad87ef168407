// The soak: a fleet of agents in network namespaces lives through a seeded timeline of publishes and
// removals from host 0, SIGKILLs of agents (by pid, some while they download) and their restarts, and a
// partition (links down) and its heal. Afterwards every live host must hold exactly what the history says
// (soak-plan.ts, History), each tree byte-identical to its package, with nothing half-done left behind and
// a bounded memory footprint. Everything created is removed at the end, also on failure.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Resources, cleanupOnSignals, type CleanupReport } from './cleanup.js';
import { buildTopology, takenNames, SWITCH_NS } from './topology.js';
import { snapshotAgent, launchAgent, call, procUsage, readClockTicks, stopAgent, tail, type Agent } from './agents.js';
import { startFleet, waitForMesh, describeAgentVersion, loadAvg, withSimResources } from './scenario.js';
import { makePlan, expectedAfter, describeEvent, rackBHosts, type SoakStep, type SoakPlanSpec } from './soak-plan.js';
import { makeSoakPackage, DEFAULT_SIZES, type SoakPackage, type SoakPackageSizes } from './soak-packages.js';
import { hashTree } from './tree-hash.js';
import { round } from './report.js';
import { run, sleep, pidAlive } from './sh.js';
import { Store } from '../../src/store/store.js';
import { manifestChunks } from '../../src/store/manifest.js';

/**
 * How long every host must stay converged before the final checks: longer than one maintenance round at its
 * fastest (src/agent/swarm/swarm.ts, 5 s), the round that drops a manifest the host should not keep.
 */
const CONVERGED_HOLD_MS = 6_000;

export interface SoakOptions extends SoakPlanSpec {
  /** Per-host rate in Mbit/s (both directions; the uplink too with two racks); 0 = unshaped. */
  hostMbit: number;
  /** Bound on the wait for convergence after the last event, in seconds. */
  convergeTimeoutS: number;
  /** An agent whose peak RSS goes above this fails the soak. */
  maxRssMB: number;
  sizes?: SoakPackageSizes;
  keepLogs?: string;
  log: (line: string) => void;
}

export interface TimelineEntry { atS: number; step: number | null; what: string }

export interface SoakHost {
  host: number;
  rack: string;
  /** Agent processes this host had (1 + restarts). */
  incarnations: number;
  /** VmHWM of each incarnation, MB (the killed ones read just before the kill). */
  peakRssMB: number[];
  /** VmRSS of the last incarnation at the end. */
  finalRssMB: number | null;
  /** Seconds after the last event at which this host first held the expected set; null = never. */
  convergedS: number | null;
  installed: string[];
  missing: string[];
  unexpected: string[];
  /** name@version whose installed tree differs from its package. */
  treeMismatches: string[];
  /** Staging or trash dirs, stray dirs in the runtimes dir, temp files in the store. */
  leftovers: string[];
  /** Manifests in the host's index beyond the ones installed (superseded or removed ones kept): a failure. */
  extraManifests: string[];
  /** Chunk files no manifest in the index references, after the agent stopped. */
  unreferencedChunks: number;
  unreferencedBytes: number;
  /** ERROR lines of its log (all incarnations), by event name: reported, not a failure (a partition can cause some). */
  errorsLogged: Record<string, number>;
}

export interface SoakResult {
  date: string;
  params: { hosts: number; racks: number; hostMbit: number; seed: number; changes: number; kills: number; partition: boolean; runtimes: number };
  machine: { cores: number; loadAvgStart: number[]; loadAvgEnd: number[] };
  plan: SoakStep[];
  timeline: TimelineEntry[];
  /** name@version -> manifest id, what every host must hold. */
  expected: Record<string, string>;
  /** Seconds from the start of the timeline to its last event (restarts included). */
  lastEventS: number;
  /** Seconds from the last event until every live host held the expected set; null = not within the bound. */
  convergedS: number | null;
  killsMidTransfer: { planned: number; caught: number };
  hosts: SoakHost[];
  failures: string[];
  agentVersion: { commit: string; modifiedSrc: string[] };
  cleanup: CleanupReport;
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const { result, cleanup } = await withSimResources(opts.keepLogs, (res) => soakInside(opts, res));
  return { ...result, cleanup, failures: [...result.failures, ...cleanup.problems] };
}

interface PublishResult { manifestId: string; unchanged: boolean; newChunks: number; chunks: number }
interface ListEntry { name: string; version: string; manifestId: string; path: string }
interface StatusView {
  swarm?: {
    transfers?: { manifestId: string; chunks: number; chunksHave: number; fetchedChunks: number }[];
    fleet?: { name: string; version: string; manifestId: string; installedHere: boolean }[];
  };
}

async function soakInside(opts: SoakOptions, res: Resources): Promise<Omit<SoakResult, 'cleanup'>> {
  const log = opts.log;
  const loadAvgStart = loadAvg();
  await readClockTicks();
  const plan = makePlan(opts);
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'jsim-'));
  res.dirs.push(workDir);
  const failures: string[] = [];

  log(`plan (seed ${opts.seed}): ${plan.length} steps`);
  plan.forEach((s, i) => log(`  ${String(i).padStart(2)}  +${s.gapS.toFixed(1)} s  ${describeEvent(s.event)}`));

  // Every package of the plan, made before the clock starts.
  const packages = new Map<number, SoakPackage>();
  const pkgDir = path.join(workDir, 'packages');
  await fs.mkdir(pkgDir);
  for (const [i, s] of plan.entries()) {
    if (s.event.kind === 'publish') packages.set(i, await makeSoakPackage(pkgDir, opts.seed, s.event.name, s.event.version, s.event.revision, opts.sizes ?? DEFAULT_SIZES));
  }
  const sizes = [...packages.values()].map((p) => p.bytes);
  log(`${packages.size} packages, ${(Math.min(...sizes) / 1e6).toFixed(1)}..${(Math.max(...sizes) / 1e6).toFixed(1)} MB`);

  log(`building ${opts.hosts} hosts, ${opts.racks} rack(s), B = ${opts.hostMbit || 'unshaped'} Mbit/s`);
  const hosts = await buildTopology({ hosts: opts.hosts, hostMbit: opts.hostMbit, racks: opts.racks, uplinkMbit: opts.hostMbit }, res.namespaces);
  const cli = await snapshotAgent(workDir);
  const agentVersion = await describeAgentVersion();
  const track = (pid: number) => res.pids.add(pid);
  const agents = await startFleet(hosts, { zones: false, agentArgs: [] }, workDir, res, cli);
  await waitForMesh(agents, 120_000, log);

  const peaks: number[][] = agents.map(() => []);
  const restarting: (Promise<void> | null)[] = agents.map(() => null);
  const dead = new Set<number>();
  const manifestOf = new Map<number, string>();
  const timeline: TimelineEntry[] = [];
  const t0 = Date.now();
  const note = (step: number | null, what: string) => {
    const atS = round((Date.now() - t0) / 1000, 1);
    timeline.push({ atS, step, what });
    log(`[+${atS.toFixed(1).padStart(5)} s] ${what}`);
  };
  const hostUp = async (i: number) => { await restarting[i]; };
  let lastPublished: string | null = null;
  const midTransfer = { planned: 0, caught: 0 };

  try {
    for (const [i, step] of plan.entries()) {
      await sleep(step.gapS * 1000);
      const ev = step.event;
      if (ev.kind === 'publish') {
        await hostUp(0);
        const pkg = packages.get(i)!;
        const r = await call<PublishResult>(agents[0].socket, 'publish', { path: pkg.path, force: ev.force }, 180_000);
        manifestOf.set(i, r.manifestId);
        lastPublished = r.manifestId;
        note(i, `${describeEvent(ev)}: ${r.manifestId.slice(0, 19)}, ${(pkg.bytes / 1e6).toFixed(1)} MB, ${r.newChunks} of ${r.chunks} chunks new`);
      } else if (ev.kind === 'remove') {
        await hostUp(0);
        const r = await call<{ removed: { name: string; version: string }[]; signed: boolean }>(agents[0].socket, 'remove',
          ev.version === null ? { name: ev.name } : { name: ev.name, version: ev.version }, 60_000);
        note(i, `${describeEvent(ev)}: removed ${r.removed.map((x) => `${x.name}@${x.version}`).join(', ') || 'nothing'} on host 0, signed ${r.signed}`);
      } else if (ev.kind === 'kill') {
        const h = ev.host;
        await hostUp(h);
        if (dead.has(h)) { note(i, `host ${h} is not running (its restart failed): kill skipped`); continue; }
        const a = agents[h];
        let how = '';
        if (ev.midTransfer) {
          midTransfer.planned++;
          how = await waitForTransfer(a, lastPublished);
          if (how.startsWith('at ')) midTransfer.caught++;
        }
        peaks[h].push(await peakRssMB(a.pid));
        try { process.kill(a.pid, 'SIGKILL'); } catch { /* gone already: noticed below */ }
        const gone = await waitGone(a.pid, 10_000);
        if (gone) res.pids.delete(a.pid);
        else failures.push(`host ${h}: pid ${a.pid} survived SIGKILL for 10 s`);
        note(i, `SIGKILL host ${h} (pid ${a.pid})${ev.midTransfer ? ` mid-transfer: ${how}` : ''}`);
        restarting[h] = (async () => {
          await sleep(ev.downS * 1000);
          if (res.cleaning) return; // interrupted (a signal): start nothing that would outlive the cleanup
          try {
            agents[h] = await launchAgent(a.host, a.dir, cli, track);
            note(null, `restarted host ${h} (pid ${agents[h].pid}) after ${ev.downS} s`);
          } catch (err) {
            dead.add(h);
            failures.push(`host ${h} did not restart: ${(err as Error).message}`);
            note(null, `restart of host ${h} FAILED`);
          }
        })();
      } else if (ev.kind === 'partition' || ev.kind === 'heal') {
        const target = ev.kind === 'partition' ? ev.target : partitionTarget(plan, i);
        const links = target === 'rackB' ? ['upA', 'upB'] : target.map((h) => `h${h}`);
        const state = ev.kind === 'partition' ? 'down' : 'up';
        for (const l of links) await run('ip', ['-n', SWITCH_NS, 'link', 'set', 'dev', l, state]);
        const who = target === 'rackB' ? `rack B (hosts ${rackBHosts(opts.hosts, opts.racks).join(', ')})` : `host(s) ${target.join(', ')}`;
        note(i, `${ev.kind === 'partition' ? 'partition' : 'heal'} ${who}: ${links.join(', ')} ${state}`);
      }
    }
  } finally {
    // A failed step must not leave a restart pending: it would start an agent after the cleanup.
    await Promise.allSettled(restarting);
  }
  const lastEventAt = Date.now();
  const lastEventS = round((lastEventAt - t0) / 1000, 1);

  const expectedSteps = expectedAfter(plan);
  const expected = new Map([...expectedSteps].map(([k, step]) => [k, manifestOf.get(step)!]));
  log(`expected on every host: ${[...expected.keys()].sort().join(', ') || 'nothing'}`);

  // Converged = every live host holds exactly the expected name@version -> manifest map, and its index keeps
  // no other manifest (a superseded or removed one would hold its chunks and come back through the catalog).
  const live = agents.map((_, i) => i).filter((i) => !dead.has(i));
  const convergedAt: (number | null)[] = agents.map(() => null);
  const lists: ListEntry[][] = agents.map(() => []);
  const deadline = lastEventAt + opts.convergeTimeoutS * 1000;
  let allAt: number | null = null;
  for (;;) {
    await Promise.all(live.map(async (i) => {
      lists[i] = await call<ListEntry[]>(agents[i].socket, 'list').catch(() => lists[i]);
      const known = await call<StatusView>(agents[i].socket, 'status').then((st) => st.swarm?.fleet ?? null, () => null);
      const ok = sameSet(lists[i], expected) && known !== null && known.length === expected.size;
      if (ok && convergedAt[i] === null) convergedAt[i] = Date.now();
      if (!ok) convergedAt[i] = null;
    }));
    // Held for a while, not seen once: in one clean-clone CI run (2026-12-03) every host was converged at one
    // poll and host 2 held a removed manifest again at the check below, a moment later. Whether that was a
    // transient (dropped by its next maintenance round) or kept for good was not seen; a hold longer than a round
    // tells them apart: a transient converges, a kept one still fails.
    if (live.every((i) => convergedAt[i] !== null && Date.now() - convergedAt[i]! >= CONVERGED_HOLD_MS)) { allAt = Date.now(); break; }
    if (Date.now() > deadline) break;
    await sleep(500);
  }
  const convergedS = allAt === null ? null : round((Math.max(...live.map((i) => convergedAt[i]!)) - lastEventAt) / 1000, 1);
  log(allAt === null ? `NOT converged within ${opts.convergeTimeoutS} s of the last event` : `converged ${convergedS} s after the last event`);

  const figures: SoakHost[] = [];
  for (const [i, a] of agents.entries()) {
    const f: SoakHost = {
      host: i, rack: a.host.rack, incarnations: peaks[i].length + (dead.has(i) ? 0 : 1), peakRssMB: [...peaks[i]], finalRssMB: null,
      convergedS: convergedAt[i] === null ? null : round(Math.max(0, convergedAt[i]! - lastEventAt) / 1000, 1),
      installed: lists[i].map((r) => `${r.name}@${r.version}`).sort(), missing: [], unexpected: [], treeMismatches: [], leftovers: [],
      extraManifests: [], unreferencedChunks: 0, unreferencedBytes: 0, errorsLogged: await errorEvents(a.logFile),
    };
    figures.push(f);
    if (dead.has(i)) continue;
    if (!(await pidAlive(a.pid))) {
      failures.push(`host ${i}: the agent (pid ${a.pid}) exited by itself; last log lines:\n${await tail(a.logFile)}`);
      dead.add(i);
      continue;
    }
    f.peakRssMB.push(await peakRssMB(a.pid));
    f.finalRssMB = await currentRssMB(a.pid);
    const have = new Map(lists[i].map((r) => [`${r.name}@${r.version}`, r]));
    f.missing = [...expected].filter(([k, id]) => have.get(k)?.manifestId !== id).map(([k]) => k).sort();
    f.unexpected = [...have.keys()].filter((k) => !expected.has(k)).sort();
    for (const [k, rec] of have) {
      const step = expectedSteps.get(k);
      if (step === undefined || rec.manifestId !== expected.get(k)) continue;
      const want = packages.get(step)!.digest;
      const got = await hashTree(rec.path).then((t) => t.digest, () => 'unreadable');
      if (got !== want || rec.path !== path.join(a.runtimesDir, ...k.split('@'))) f.treeMismatches.push(k);
    }
    f.leftovers = await runtimesLeftovers(a.runtimesDir, expected);
    f.leftovers.push(...(await storeTempFiles(path.join(a.dir, 'data', 'chunks'))));
    const st = await call<StatusView>(a.socket, 'status').catch(() => null);
    f.extraManifests = (st?.swarm?.fleet ?? []).filter((m) => !m.installedHere).map((m) => `${m.name}@${m.version} ${m.manifestId.slice(0, 19)}`);
  }

  // The store's own view needs the index, which the agent holds open: stop the agents first.
  await Promise.all(agents.map(async (a, i) => { if (!dead.has(i) && (await stopAgent(a.pid))) res.pids.delete(a.pid); }));
  for (const [i, a] of agents.entries()) {
    if (dead.has(i)) continue;
    const u = await unreferencedChunks(path.join(a.dir, 'data')).catch((e: Error) => ({ chunks: -1, bytes: -1, temps: [`store unreadable: ${e.message}`] }));
    figures[i].unreferencedChunks = u.chunks;
    figures[i].unreferencedBytes = u.bytes;
    for (const t of u.temps) if (!figures[i].leftovers.includes(t)) figures[i].leftovers.push(t);
  }

  for (const f of figures) {
    if (dead.has(f.host)) continue;
    if (f.missing.length || f.unexpected.length) failures.push(`host ${f.host} did not converge: missing or different ${f.missing.join(', ') || 'none'}; unexpected ${f.unexpected.join(', ') || 'none'}`);
    if (f.treeMismatches.length) failures.push(`host ${f.host}: installed trees differ from their packages: ${f.treeMismatches.join(', ')}`);
    if (f.leftovers.length) failures.push(`host ${f.host} left behind: ${f.leftovers.join(', ')}`);
    if (f.extraManifests.length) failures.push(`host ${f.host} keeps manifests it will never install: ${f.extraManifests.join(', ')}`);
    const peak = Math.max(...f.peakRssMB);
    if (peak > opts.maxRssMB) failures.push(`host ${f.host}: peak RSS ${peak} MB is above the bound of ${opts.maxRssMB} MB`);
  }

  return {
    date: new Date().toISOString(),
    params: { hosts: opts.hosts, racks: opts.racks, hostMbit: opts.hostMbit, seed: opts.seed, changes: opts.changes, kills: opts.kills, partition: opts.partition, runtimes: opts.runtimes },
    machine: { cores: os.cpus().length, loadAvgStart, loadAvgEnd: loadAvg() },
    plan, timeline, expected: Object.fromEntries([...expected].sort()), lastEventS, convergedS, killsMidTransfer: midTransfer,
    hosts: figures, failures, agentVersion,
  };
}

/** Count the ERROR lines of an agent log by event name (text format: `ERROR event key=value ...`). */
async function errorEvents(file: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await fs.readFile(file, 'utf8').catch(() => '')).split('\n')) {
    const m = /^ERROR (\S+)/.exec(line);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + 1;
  }
  return out;
}

/** The target of the partition that the heal at step `at` ends. */
function partitionTarget(plan: SoakStep[], at: number): 'rackB' | number[] {
  for (let i = at; i >= 0; i--) {
    const ev = plan[i].event;
    if (ev.kind === 'partition') return ev.target;
  }
  throw new Error(`step ${at} heals a partition that never started`);
}

function sameSet(list: ListEntry[], expected: Map<string, string>): boolean {
  return list.length === expected.size && list.every((r) => expected.get(`${r.name}@${r.version}`) === r.manifestId);
}

/**
 * Wait (up to 30 s) until `a` is downloading: some chunks fetched, not all held. Returns what it saw, for
 * the timeline; "at N%" when the kill will hit a transfer.
 */
async function waitForTransfer(a: Agent, manifestId: string | null): Promise<string> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const st = await call<StatusView>(a.socket, 'status', {}, 5000).catch(() => null);
    const t = st?.swarm?.transfers?.find((x) => manifestId === null || x.manifestId === manifestId);
    if (t && t.fetchedChunks > 0 && t.chunksHave < t.chunks) return `at ${Math.round((100 * t.chunksHave) / t.chunks)}% (${t.chunksHave}/${t.chunks} chunks)`;
    const done = manifestId !== null && (await call<ListEntry[]>(a.socket, 'list', {}, 5000).catch(() => [])).some((r) => r.manifestId === manifestId);
    if (done) return 'the transfer had finished before the kill could catch it';
    await sleep(50);
  }
  return 'no transfer seen within 30 s';
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await pidAlive(pid))) return true;
    await sleep(20);
  }
  return false;
}

async function peakRssMB(pid: number): Promise<number> {
  return round((await procUsage(pid).then((u) => u.peakRssBytes, () => 0)) / 1e6, 1);
}

async function currentRssMB(pid: number): Promise<number | null> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return m ? round((Number(m[1]) * 1024) / 1e6, 1) : null;
}

/** What does not belong in a converged runtimes dir: staging or trash entries, names or versions not expected. */
async function runtimesLeftovers(root: string, expected: Map<string, string>): Promise<string[]> {
  const out: string[] = [];
  const names = new Set([...expected.keys()].map((k) => k.split('@')[0]));
  for (const entry of await fs.readdir(root).catch(() => [] as string[])) {
    if (entry === '.joblet-agent') {
      for (const area of await fs.readdir(path.join(root, entry)).catch(() => [] as string[])) {
        const inside = await fs.readdir(path.join(root, entry, area)).catch(() => [] as string[]);
        for (const x of inside) out.push(`${entry}/${area}/${x}`);
        if (area !== 'staging' && area !== 'trash') out.push(`${entry}/${area}`);
      }
      continue;
    }
    if (!names.has(entry)) { out.push(entry); continue; }
    for (const v of await fs.readdir(path.join(root, entry)).catch(() => [] as string[])) {
      if (!expected.has(`${entry}@${v}`)) out.push(`${entry}/${v}`);
    }
  }
  return out.map((x) => `runtimes/${x}`);
}

/** Temp files of interrupted chunk writes (`<id>.tmp-<pid>-<n>`), anywhere under the chunks dir. */
async function storeTempFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of await fs.readdir(dir).catch(() => [] as string[])) {
    const inner = await fs.readdir(path.join(dir, sub)).catch(() => null);
    if (inner === null) { if (sub.includes('.tmp')) out.push(`chunks/${sub}`); continue; }
    for (const f of inner) if (f.includes('.tmp')) out.push(`chunks/${sub}/${f}`);
  }
  return out;
}

/** Open the stopped agent's store: chunk files no indexed manifest references, and temp files. */
async function unreferencedChunks(dataDir: string): Promise<{ chunks: number; bytes: number; temps: string[] }> {
  const store = await Store.open(dataDir);
  try {
    const referenced = new Set<string>();
    for (const sm of await store.index.listManifests()) for (const c of manifestChunks(sm.manifest)) referenced.add(c.id);
    let chunks = 0;
    let bytes = 0;
    const temps: string[] = [];
    for await (const e of store.chunks.scan()) {
      if (e.kind === 'temp') temps.push(`chunks/${path.relative(path.join(dataDir, 'chunks'), e.path)}`);
      else if (!referenced.has(e.id!)) { chunks++; bytes += e.bytes; }
    }
    return { chunks, bytes, temps };
  } finally {
    await store.close();
  }
}
