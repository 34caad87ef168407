/**
 * Shared helpers for the benchmark scripts (bench-publish, bench-transfer): command timing, agent processes,
 * /proc sampling, building a real runtime package from this machine, cleanup on success, failure and Ctrl-C,
 * and the printing of figures against targets.
 *
 * Everything a benchmark creates is registered with a Cleanup: temp dirs are removed and agent processes are
 * stopped by pid (SIGTERM, then SIGKILL after a grace period), whatever way the run ends.
 */
import '../src/agent/polyfill.js';
import { DAEMON_NODE_FLAGS } from '../src/agent/node-flags.js';

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { callDaemon } from '../src/agent/control.js';

export const CLI_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/agent/cli/main.js');
/** The installed entry point (bin/joblet-agent): the daemon is measured as an operator runs it. */
export const BIN_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/joblet-agent');
const MB = 1e6;
/** Kernel clock ticks per second for /proc/PID/stat times; 100 on every Linux this runs on. */
const CLOCK_TICKS = 100;

// ---- arguments ----------------------------------------------------------------------------------------

export interface BenchArgs {
  sources: string[];
  out: string;
}

export function parseBenchArgs(name: string, usage: string): BenchArgs {
  let values: { source?: string[]; out?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: process.argv.slice(2),
      options: { source: { type: 'string', multiple: true }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\nusage: ${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(`usage: ${usage}`);
    process.exit(0);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return {
    sources: (values.source ?? []).map((s) => path.resolve(s)),
    out: path.resolve(values.out ?? path.join(os.tmpdir(), `joblet-agent-${name}-${stamp}.json`)),
  };
}

// ---- cleanup ------------------------------------------------------------------------------------------

export class Cleanup {
  private readonly dirs: string[] = [];
  private readonly procs: ChildProcess[] = [];
  private readonly hooks: (() => Promise<void>)[] = [];

  async tempDir(prefix: string): Promise<string> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
    this.dirs.push(dir);
    return dir;
  }

  process(child: ChildProcess): void {
    this.procs.push(child);
  }

  /** Something else to undo at the end (a server to close...); hooks run first, newest first. */
  defer(hook: () => Promise<void>): void {
    this.hooks.push(hook);
  }

  /** Stop a process this run started, by its pid: SIGTERM, then SIGKILL if it has not exited in time. */
  async stopProcess(child: ChildProcess, graceMs = 10_000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    process.kill(child.pid, 'SIGTERM');
    const inTime = await Promise.race([exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!inTime && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, 'SIGKILL');
      await exited;
    }
  }

  async run(): Promise<void> {
    for (const hook of this.hooks.splice(0).reverse()) await hook().catch(() => {});
    // Processes first (agents, and a cp/tar/curl that an interrupt caught midway): none may still be writing
    // into a dir while it is removed.
    const procs = [...this.procs.splice(0), ...runningCommands];
    await Promise.all(procs.map((p) => this.stopProcess(p).catch(() => {})));
    for (const dir of this.dirs.splice(0).reverse()) await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** Run a benchmark's main with cleanup on success, failure, Ctrl-C and SIGTERM. */
export function runBench(name: string, main: (cleanup: Cleanup) => Promise<void>): void {
  const cleanup = new Cleanup();
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    console.error(`\n${name}: ${signal}, cleaning up`);
    cleanup.run().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  main(cleanup).then(
    () => cleanup.run().then(() => { if (!stopping) process.exit(0); }),
    (err) => {
      if (stopping) return;
      stopping = true;
      console.error(`${name} failed: ${err instanceof Error ? err.message : String(err)}`);
      cleanup.run().finally(() => process.exit(1));
    },
  );
}

// ---- commands -----------------------------------------------------------------------------------------

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
}

/** Commands running now, so that cleanup after an interrupt can stop them by pid. */
const runningCommands = new Set<ChildProcess>();

/** Run a command to completion, timing it from spawn to exit. Throws on a non-zero exit. */
export async function runCommand(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  const started = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  runningCommands.add(child);
  child.once('exit', () => runningCommands.delete(child));
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  });
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return { code, stdout, stderr, seconds };
}

export interface ShellTiming {
  seconds: number;
  /** user+system CPU of everything the script ran, as bash's `times` reports for its children. */
  cpuSeconds: number;
}

/**
 * Time a bash script from spawn to exit, with the CPU time of its children. Positional args are $1.. so
 * no path is ever interpolated into the script text.
 */
export async function timeShell(script: string, args: string[]): Promise<ShellTiming> {
  const r = await runCommand('bash', ['-c', `set -o pipefail; ${script}\ntimes`, 'bench', ...args]);
  // `times` prints two lines: the shell's own user/sys times, then its children's, as e.g. "0m1.234s 0m0.567s".
  const lines = r.stdout.trim().split('\n');
  const children = lines[lines.length - 1].match(/(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s/);
  const cpuSeconds = children
    ? Number(children[1]) * 60 + Number(children[2]) + Number(children[3]) * 60 + Number(children[4])
    : NaN;
  return { seconds: r.seconds, cpuSeconds };
}

export function agentCli(args: string[]): Promise<CommandResult> {
  return runCommand(process.execPath, [CLI_PATH, ...args]);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `check` until it returns a value other than undefined; throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---- agents -------------------------------------------------------------------------------------------

export interface AgentOptions {
  /** Join the fleet of this agent: its fleet key, its publisher key as trusted, its address as bootstrap. */
  joinFleetOf?: Agent;
  /** Run the daemon as `node NODE_ARGS main.js start` instead of bin/joblet-agent (e.g. --cpu-prof). */
  nodeArgs?: string[];
}

/** One joblet-agent daemon in its own temp dir, started with `start` in the foreground. */
export class Agent {
  private child: ChildProcess | null = null;
  readonly socket: string;
  readonly etc: string;
  readonly runtimesDir: string;
  readonly logFile: string;

  private constructor(readonly name: string, readonly dir: string, private readonly cleanup: Cleanup) {
    this.socket = path.join(dir, 'agent.sock');
    this.etc = path.join(dir, 'etc');
    this.runtimesDir = path.join(dir, 'runtimes');
    this.logFile = path.join(dir, 'agent.log');
  }

  /** `init` an agent in a fresh temp dir (127.0.0.1, ephemeral port, no mDNS), then start it. */
  static async create(cleanup: Cleanup, name: string, opts: AgentOptions = {}): Promise<Agent> {
    const agent = new Agent(name, await cleanup.tempDir(`joblet-agent-bench-${name}-`), cleanup);
    const args = ['init', '--dir', agent.etc, '--data-dir', path.join(agent.dir, 'data'), '--runtimes-dir', agent.runtimesDir,
      '--socket', agent.socket, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--http', '127.0.0.1:0'];
    if (opts.joinFleetOf) {
      const first = opts.joinFleetOf;
      const address = (await first.status()).addresses.find((a: string) => a.includes('/p2p/'));
      if (!address) throw new Error(`agent ${first.name} reports no address to bootstrap from`);
      args.push('--fleet-key', path.join(first.etc, 'fleet.key'), '--trust', path.join(first.etc, 'publisher.pub'), '--bootstrap', address);
    }
    await agentCli(args);
    await agent.start(opts.nodeArgs);
    return agent;
  }

  get pid(): number {
    if (!this.child?.pid) throw new Error(`agent ${this.name} is not running`);
    return this.child.pid;
  }

  private async start(nodeArgs?: string[]): Promise<void> {
    const log = createWriteStream(this.logFile);
    await new Promise((resolve) => log.once('open', resolve));
    const startArgs = ['start', '--config', path.join(this.etc, 'config.yml')];
    // bin/joblet-agent sets MALLOC_ARENA_MAX=2; the same here, so both ways measure the same daemon.
    const child = nodeArgs
      ? spawn(process.execPath, [...DAEMON_NODE_FLAGS, ...nodeArgs, CLI_PATH, ...startArgs], { stdio: ['ignore', log, log], env: { MALLOC_ARENA_MAX: '2', ...process.env } })
      : spawn(BIN_PATH, startArgs, { stdio: ['ignore', log, log] });
    this.child = child;
    this.cleanup.process(child);
    child.once('exit', () => log.end());
    const answered = await waitFor(`agent ${this.name} to answer on ${this.socket}`, async () => {
      if (child.exitCode !== null || child.signalCode !== null) return false;
      return this.call('status').then(() => true, () => undefined);
    }, 30_000);
    if (!answered) throw new Error(`agent ${this.name} exited with ${child.exitCode ?? child.signalCode} before answering; log:\n${await this.logTail()}`);
  }

  async stop(): Promise<void> {
    if (this.child) await this.cleanup.stopProcess(this.child);
  }

  /** A control request straight over the socket: polling must not cost a node start per sample. */
  call(cmd: string, args?: Record<string, unknown>): Promise<any> {
    return callDaemon(this.socket, { cmd, args });
  }

  status(): Promise<any> {
    return this.call('status');
  }

  list(): Promise<{ name: string; version: string; manifestId: string; path: string; sizeBytes: number }[]> {
    return this.call('list') as Promise<any>;
  }

  async logTail(lines = 20): Promise<string> {
    const text = await fs.readFile(this.logFile, 'utf8').catch(() => '');
    return text.trim().split('\n').slice(-lines).join('\n');
  }
}

// ---- /proc sampling -----------------------------------------------------------------------------------

/** user+system CPU seconds of a whole process (all threads), from /proc/PID/stat. */
export async function cpuSeconds(pid: number): Promise<number> {
  return ticksOf(await fs.readFile(`/proc/${pid}/stat`, 'utf8')) / CLOCK_TICKS;
}

/** Minor page faults of the whole process so far: each is a fresh page the kernel zeroed (or mapped) for it. */
export async function minorFaults(pid: number): Promise<number> {
  return Number(fieldsAfterComm(await fs.readFile(`/proc/${pid}/stat`, 'utf8'))[7]); // minflt, field 10 of the full line
}

/** Bytes a process passed to write and read syscalls so far (/proc/PID/io wchar, rchar: page cache and sockets included). */
export async function ioBytes(pid: number): Promise<{ written: number; read: number }> {
  const io = await fs.readFile(`/proc/${pid}/io`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? NaN);
  return { written: field('wchar'), read: field('rchar') };
}

/** The fields of a /proc stat line after the command name (field 2), which may hold spaces: from field 3 on. */
function fieldsAfterComm(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function ticksOf(stat: string): number {
  const fields = fieldsAfterComm(stat);
  return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of the full line)
}

function commOf(stat: string): string {
  return stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
}

async function statusField(pid: number, field: string): Promise<number> {
  const text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
  return Number(m[1]) * 1024;
}

export const peakRssBytes = (pid: number) => statusField(pid, 'VmHWM');
export const rssBytes = (pid: number) => statusField(pid, 'VmRSS');

/** Reset the kernel's peak-RSS mark (VmHWM) so it measures one step only. False if the kernel refused. */
export async function resetPeakRss(pid: number): Promise<boolean> {
  return fs.writeFile(`/proc/${pid}/clear_refs`, '5').then(() => true, () => false);
}

/**
 * CPU ticks per thread of a process, keyed by tid. Node names all its threads "node", so the main thread (the
 * one running JavaScript, tid = pid) is told apart from the rest (libuv pool: zlib, fs, crypto; V8 GC/compiler).
 */
async function threadTicks(pid: number): Promise<Map<string, { comm: string; ticks: number }>> {
  const out = new Map<string, { comm: string; ticks: number }>();
  for (const tid of await fs.readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const stat = await fs.readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => null);
    if (!stat) continue;
    const comm = tid === String(pid) ? 'main thread' : `other ${commOf(stat)} threads`;
    out.set(tid, { comm, ticks: ticksOf(stat) });
  }
  return out;
}

/** Memory of a process at one moment, from /proc/PID/status: anonymous (heaps, malloc, Buffers) vs file pages. */
export interface RssSample {
  rssBytes: number;
  anonBytes: number;
  fileBytes: number;
}

async function rssSample(pid: number): Promise<RssSample> {
  const text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))?.[1] ?? NaN) * 1024;
  return { rssBytes: kb('VmRSS'), anonBytes: kb('RssAnon'), fileBytes: kb('RssFile') };
}

export interface ProcessMark {
  /** CPU seconds since the window opened. */
  cpuSeconds: number;
  rssBytes: number;
}

export interface ProcessWindow {
  cpuSeconds: number;
  /** Peak RSS in the window: VmHWM (reset at the start when the kernel allows) and the sampled maximum. */
  peakRssBytes: number;
  peakRssSource: 'VmHWM since reset' | 'VmHWM since process start' | 'sampled VmRSS';
  /** The highest 50 ms sample, split into anonymous and file-backed memory. */
  peakSample: RssSample;
  /** RSS when the window opened, to tell the step's growth from the idle daemon's footprint. */
  startRssBytes: number;
  /** CPU seconds by thread (the JavaScript main thread vs the others: libuv pool, V8 helpers). */
  threads: Record<string, number>;
  /** Snapshots taken inside the window with mark(), e.g. when a download held every chunk. */
  marks: Record<string, ProcessMark>;
}

/**
 * Measure one process over a window: CPU seconds, peak RSS and per-thread CPU. RSS is also sampled every
 * 50 ms: on this kernel VmHWM can read lower than an earlier VmRSS (the high-water mark is only folded in
 * on some unmap paths), so the peak reported is the larger of the two.
 */
export class ProcessMonitor {
  private cpuStart = 0;
  private threadsStart = new Map<string, { comm: string; ticks: number }>();
  private resetOk = false;
  private peak: RssSample = { rssBytes: 0, anonBytes: 0, fileBytes: 0 };
  private startRss = 0;
  private readonly marks: Record<string, ProcessMark> = {};
  private timer: NodeJS.Timeout | null = null;

  private constructor(readonly pid: number) {}

  static async start(pid: number): Promise<ProcessMonitor> {
    const m = new ProcessMonitor(pid);
    m.resetOk = await resetPeakRss(pid);
    m.cpuStart = await cpuSeconds(pid);
    m.threadsStart = await threadTicks(pid);
    m.peak = await rssSample(pid);
    m.startRss = m.peak.rssBytes;
    m.timer = setInterval(() => {
      rssSample(pid).then((x) => { if (x.rssBytes > m.peak.rssBytes) m.peak = x; }, () => {});
    }, 50);
    return m;
  }

  async mark(label: string): Promise<ProcessMark> {
    const mark = { cpuSeconds: round((await cpuSeconds(this.pid)) - this.cpuStart, 2), rssBytes: await rssBytes(this.pid) };
    this.marks[label] = mark;
    return mark;
  }

  async stop(): Promise<ProcessWindow> {
    if (this.timer) clearInterval(this.timer);
    const cpuEnd = await cpuSeconds(this.pid);
    const hwm = await peakRssBytes(this.pid);
    const threadsEnd = await threadTicks(this.pid);
    const threads: Record<string, number> = {};
    for (const [tid, t] of threadsEnd) {
      const delta = (t.ticks - (this.threadsStart.get(tid)?.ticks ?? 0)) / CLOCK_TICKS;
      if (delta > 0) threads[t.comm] = round((threads[t.comm] ?? 0) + delta, 2);
    }
    const peak = Math.max(hwm, this.peak.rssBytes);
    return {
      cpuSeconds: round(cpuEnd - this.cpuStart, 2),
      peakRssBytes: peak,
      peakRssSource: peak === hwm ? (this.resetOk ? 'VmHWM since reset' : 'VmHWM since process start') : 'sampled VmRSS',
      peakSample: this.peak,
      startRssBytes: this.startRss,
      threads,
      marks: this.marks,
    };
  }
}

export function printProcessWindow(label: string, w: ProcessWindow): void {
  const threads = Object.entries(w.threads).sort((a, b) => b[1] - a[1]).map(([n, s]) => `${n} ${s}s`).join(', ');
  console.log(`  ${label}: peak RSS ${mb(w.peakRssBytes)} MB (${w.peakRssSource}; ${mb(w.startRssBytes)} MB before; `
    + `highest sample ${mb(w.peakSample.anonBytes)} MB anon + ${mb(w.peakSample.fileBytes)} MB file), CPU ${w.cpuSeconds} s [${threads || 'idle'}]`);
}

// ---- the runtime package ------------------------------------------------------------------------------

/** The --source dirs as given (each must be a directory), or the default sources of this machine. */
export async function resolveSources(given: string[]): Promise<string[]> {
  for (const dir of given) {
    const st = await fs.stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new Error(`--source ${dir} is not a directory`);
  }
  return given.length ? given : defaultSources();
}

/** A JDK from /usr/lib/jvm (the largest real one), else the Python standard library trees. */
export async function defaultSources(): Promise<string[]> {
  const jvm = '/usr/lib/jvm';
  const candidates: { dir: string; bytes: number }[] = [];
  for (const name of await fs.readdir(jvm).catch(() => [] as string[])) {
    const dir = path.join(jvm, name);
    const st = await fs.lstat(dir);
    if (!st.isDirectory()) continue; // symlinked aliases would count the same JDK twice
    if (!(await fs.stat(path.join(dir, 'bin/java')).then(() => true, () => false))) continue;
    candidates.push({ dir, bytes: await treeBytes(dir) });
  }
  if (candidates.length) return [candidates.sort((a, b) => b.bytes - a.bytes)[0].dir];
  const python = (await fs.readdir('/usr/lib').catch(() => [] as string[]))
    .filter((n) => /^python3(\.\d+)?$/.test(n)).map((n) => path.join('/usr/lib', n));
  if (python.length) return python;
  throw new Error('no JDK under /usr/lib/jvm and no /usr/lib/python3*; pass --source DIR');
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await treeBytes(p);
    else if (entry.isFile()) total += (await fs.stat(p)).size;
  }
  return total;
}

export interface RuntimePackage {
  name: string;
  version: string;
  /** The tree, with runtime.yml at its top. */
  dir: string;
  tgz: string;
  tgzBytes: number;
  treeBytes: number;
}

export const BENCH_RUNTIME = 'bench-runtime';

function runtimeYml(version: string, sources: string[]): string {
  return [
    `name: ${BENCH_RUNTIME}`,
    `version: "${version}"`,
    'language: benchmark',
    `description: built by a joblet-agent benchmark from ${sources.join(', ')}`,
    '',
  ].join('\n');
}

/**
 * Copy the sources into `<workDir>/<name>-<version>/` (one source: its content at the top; several: each under
 * its own name), add runtime.yml, and pack it with `tar czf` so runtime.yml sits under one top-level dir.
 * Entries are sorted so two versions of the tree give the same entry order.
 */
export async function buildRuntimePackage(sources: string[], workDir: string, version: string): Promise<RuntimePackage> {
  const top = `${BENCH_RUNTIME}-${version}`;
  const dir = path.join(workDir, top);
  if (sources.length === 1) {
    await runCommand('cp', ['-a', '--', sources[0], dir]);
  } else {
    await fs.mkdir(dir);
    for (const s of sources) await runCommand('cp', ['-a', '--', s, path.join(dir, path.basename(s))]);
  }
  await fs.chmod(dir, 0o755);
  await fs.writeFile(path.join(dir, 'runtime.yml'), runtimeYml(version, sources));
  return pack(workDir, top, version);
}

async function pack(workDir: string, top: string, version: string): Promise<RuntimePackage> {
  const tgz = path.join(workDir, `${top}.tar.gz`);
  await runCommand('tar', ['czf', tgz, '--sort=name', '-C', workDir, top]);
  return {
    name: BENCH_RUNTIME, version, dir: path.join(workDir, top), tgz,
    tgzBytes: (await fs.stat(tgz)).size, treeBytes: await treeBytes(path.join(workDir, top)),
  };
}

/**
 * The next version of a package: the same tree (cp -a keeps mtimes), one small file in the middle of the tree
 * changed, and the version in runtime.yml bumped. Returns the package and the file that changed.
 */
export async function bumpRuntimePackage(prev: RuntimePackage, workDir: string, version: string): Promise<{ pkg: RuntimePackage; changed: string }> {
  const top = `${BENCH_RUNTIME}-${version}`;
  const dir = path.join(workDir, top);
  await runCommand('cp', ['-a', '--', prev.dir, dir]);
  const files = (await regularFiles(dir)).filter((f) => f.size > 1024 && f.size < 64 * 1024 && !f.path.endsWith('runtime.yml'));
  if (files.length === 0) throw new Error(`no small file (1-64 KiB) to change in ${dir}`);
  files.sort((a, b) => (a.path < b.path ? -1 : 1));
  const changed = files[Math.floor(files.length / 2)].path;
  const st = await fs.stat(changed);
  await fs.appendFile(changed, `\n# changed by the benchmark for version ${version}\n`);
  await fs.utimes(changed, st.atime, st.mtime); // keep the mtime: only the content differs
  await fs.writeFile(path.join(dir, 'runtime.yml'), (await fs.readFile(path.join(prev.dir, 'runtime.yml'), 'utf8'))
    .replace(/^version: .*$/m, `version: "${version}"`));
  return { pkg: await pack(workDir, top, version), changed: path.relative(dir, changed) };
}

async function regularFiles(dir: string): Promise<{ path: string; size: number }[]> {
  const out: { path: string; size: number }[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...await regularFiles(p));
    else if (entry.isFile()) out.push({ path: p, size: (await fs.stat(p)).size });
  }
  return out;
}

// ---- reporting ----------------------------------------------------------------------------------------

export function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export const mb = (bytes: number) => round(bytes / MB, 1);
export const mbps = (bytes: number, seconds: number) => round(bytes / MB / seconds, 1);

export function loadAverage(): [number, number, number] {
  return os.loadavg().map((n) => round(n, 2)) as [number, number, number];
}

export function heading(text: string): void {
  console.log(`\n== ${text}  (load average ${loadAverage().join(' ')})`);
}

export interface TargetResult {
  what: string;
  value: number;
  limit: number;
  unit: string;
  met: boolean;
}

/** A target is a ceiling: met when the value is at most the limit. Printed, never enforced. */
export function checkTarget(what: string, value: number, limit: number, unit = ''): TargetResult {
  const met = value <= limit;
  console.log(`  target ${what}: ${round(value, 2)}${unit} (<= ${limit}${unit}) ${met ? 'MET' : 'NOT MET'}`);
  return { what, value: round(value, 3), limit, unit, met };
}

export function hostInfo() {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    node: process.version,
    kernel: os.release(),
    loadAverageAtStart: loadAverage(),
  };
}

export async function writeResult(out: string, result: unknown): Promise<void> {
  await fs.mkdir(path.dirname(out), { recursive: true });
  await fs.writeFile(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nresult written to ${out}`);
}

/** Sample an agent's memoryUsage() until stop(); returns each figure's peak in MB. */
export function sampleMemory(agent: Agent): { stop(): Promise<string> } {
  const peak = { rssBytes: 0, heapUsedBytes: 0, externalBytes: 0, arrayBufferBytes: 0 };
  let running = true;
  const loop = (async () => {
    while (running) {
      const m = (await agent.status().catch(() => null))?.memory as Partial<typeof peak> | undefined;
      for (const k of Object.keys(peak) as (keyof typeof peak)[]) peak[k] = Math.max(peak[k], m?.[k] ?? 0);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return Object.entries(peak).map(([k, v]) => `${k.replace(/Bytes$/, '')} ${(v / 1e6).toFixed(0)}`).join(', ');
    },
  };
}

/** CPU seconds per thread name of a process over its life, user and system apart, from /proc/PID/task/TID/stat. */
export async function threadCpu(pid: number): Promise<[string, number][]> {
  const byName = new Map<string, number>();
  const add = (name: string, cpu: number) => byName.set(name, (byName.get(name) ?? 0) + cpu);
  for (const tid of await fs.readdir(`/proc/${pid}/task`)) {
    const stat = await fs.readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => null);
    if (!stat) continue;
    const fields = fieldsAfterComm(stat);
    const comm = commOf(stat);
    const name = Number(tid) === pid ? 'main' : comm === 'node' ? 'pool/other' : comm;
    add(`${name} user`, Number(fields[11]) / CLOCK_TICKS); // utime, field 14 of the full line
    add(`${name} sys`, Number(fields[12]) / CLOCK_TICKS); // stime, field 15
  }
  // Threads that ended (the small-file worker's) are in the process's total but have no entry of their own.
  const listed = [...byName.values()].reduce((a, b) => a + b, 0);
  add('ended threads', Math.max(0, (await cpuSeconds(pid)) - listed));
  return [...byName].sort((x, y) => y[1] - x[1]);
}
