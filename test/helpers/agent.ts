// Helpers for tests that drive the real CLI and daemon as child processes.
import { DAEMON_NODE_FLAGS } from '../../src/agent/node-flags.js';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';

export const execFileP = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
export const CLI = path.resolve(here, '../../src/agent/cli/main.js');

export async function tmpDir(t: ExecutionContext, prefix = 'ja-test-'): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface CliResult { code: number; stdout: string; stderr: string }

/** What runs the CLI: this Node with the built CLI, unless a test passes a release executable and its own env. */
export interface Program { file: string; args: string[]; env: NodeJS.ProcessEnv }
/** With the daemon's V8 flags (src/agent/node-flags.ts), as bin/joblet-agent and the release executable run it. */
export const devProgram = (): Program => ({ file: process.execPath, args: [...DAEMON_NODE_FLAGS, CLI], env: process.env });

/** Run the CLI to completion; never throws on a non-zero exit. */
export async function cli(args: string[], env: Record<string, string> = {}, program = devProgram()): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(program.file, [...program.args, ...args], { env: { ...program.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export interface AgentHandle {
  dir: string;
  socket: string;
  dataDir: string;
  runtimesDir: string;
  config: string;
  proc: ChildProcess;
  logs: () => string;
  /** Run a client command against this agent. */
  run: (args: string[]) => Promise<CliResult>;
  json: <T = any>(args: string[]) => Promise<T>;
  stop: () => Promise<number | null>;
}

/** `init` a config in dir (once), then start the daemon and wait until its socket answers. */
/**
 * `init` an agent in `dir` (127.0.0.1, ephemeral ports for libp2p and HTTP, no mDNS) without starting it, for
 * tests of the config file: returns the config's path and the text init wrote, to which a test appends its own
 * keys. (Without --http, two such tests at once would both want the default port 7947.)
 */
export async function initConfig(dir: string): Promise<{ config: string; original: string }> {
  const etc = path.join(dir, 'etc');
  const init = await cli(['init', '--dir', etc, '--data-dir', path.join(dir, 'data'), '--runtimes-dir', path.join(dir, 'runtimes'),
    '--socket', path.join(dir, 'agent.sock'), '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--http', '127.0.0.1:0']);
  if (init.code !== 0) throw new Error(`init failed (${init.code}): ${init.stderr}`);
  const config = path.join(etc, 'config.yml');
  return { config, original: await fs.readFile(config, 'utf8') };
}

/** Agents still running: if the test worker dies before its teardowns run (an ava timeout), they die with it. */
const liveAgents = new Set<import('node:child_process').ChildProcess>();
process.on('exit', () => {
  for (const p of liveAgents) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

export async function startAgent(
  t: ExecutionContext,
  dir: string,
  extra: string[] = [],
  opts: { initArgs?: string[]; env?: Record<string, string>; program?: Program } = {},
): Promise<AgentHandle> {
  const program = opts.program ?? devProgram();
  const config = path.join(dir, 'etc', 'config.yml');
  const dataDir = path.join(dir, 'data');
  const runtimesDir = path.join(dir, 'runtimes');
  const socket = path.join(dir, 'agent.sock');
  if (!(await exists(config))) {
    const r = await cli(['init', '--dir', path.join(dir, 'etc'), '--data-dir', dataDir, '--runtimes-dir', runtimesDir,
      '--socket', socket, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--http', '127.0.0.1:0', ...(opts.initArgs ?? [])], {}, program);
    if (r.code !== 0) throw new Error(`init failed: ${r.stderr}`);
  }
  const proc = spawn(program.file, [...program.args, 'start', '--config', config, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...program.env, ...(opts.env ?? {}) },
  });
  let logs = '';
  proc.stdout!.on('data', (d) => (logs += d));
  proc.stderr!.on('data', (d) => (logs += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  liveAgents.add(proc);
  void exited.then(() => liveAgents.delete(proc));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  t.teardown(async () => {
    await stop();
    // A failed test shows what its agents said; a passing one stays quiet.
    if (!t.passed) console.error(`---- agent ${dir} log ----\n${logs}---- end ----`);
  });
  const run = (args: string[]) => cli([...args, '--socket', socket], {}, program);
  const handle: AgentHandle = {
    dir, socket, dataDir, runtimesDir, config, proc, logs: () => logs, run, stop,
    json: async (args) => {
      const r = await run([...args, '--json']);
      if (r.code !== 0) throw new Error(`${args.join(' ')} failed (${r.code}): ${r.stderr}`);
      return JSON.parse(r.stdout);
    },
  };
  // Generous: on a shared, loaded machine (load averages of 50 on 2 cores were seen) a start can take a minute.
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`agent exited with ${proc.exitCode ?? proc.signalCode}: ${logs}`);
    const r = await run(['status', '--json']);
    if (r.code === 0) return handle;
    if (Date.now() > deadline) throw new Error(`agent did not answer on ${socket}: ${logs}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

export async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(() => true, () => false);
}

export interface TreeEntry { type: 'file' | 'dir' | 'symlink'; mode: number; sha256?: string; target?: string; ino?: number }

/**
 * A comparable picture of a tree: type, permission bits (setuid/setgid masked, as the agent drops them),
 * file content hash, symlink target. Inode numbers are kept to check hardlinks separately.
 */
export async function snapshot(root: string): Promise<Map<string, TreeEntry>> {
  const out = new Map<string, TreeEntry>();
  async function walk(rel: string): Promise<void> {
    const abs = path.join(root, rel);
    const st = await fs.lstat(abs);
    const mode = st.mode & 0o1777;
    if (st.isSymbolicLink()) {
      out.set(rel, { type: 'symlink', mode: 0, target: await fs.readlink(abs) });
    } else if (st.isDirectory()) {
      if (rel) out.set(rel, { type: 'dir', mode });
      for (const name of (await fs.readdir(abs)).sort()) await walk(rel ? `${rel}/${name}` : name);
    } else if (st.isFile()) {
      const sha256 = crypto.createHash('sha256').update(await fs.readFile(abs)).digest('hex');
      out.set(rel, { type: 'file', mode, sha256, ino: st.ino });
    } else {
      throw new Error(`unexpected file type at ${abs}`);
    }
  }
  await walk('');
  return out;
}

/** Snapshot without inode numbers, for deepEqual between trees. */
export async function comparable(root: string): Promise<Record<string, Omit<TreeEntry, 'ino'>>> {
  const snap = await snapshot(root);
  return Object.fromEntries([...snap].map(([k, { ino: _ino, ...v }]) => [k, v]));
}

/** Every path under root, for "nothing else was written" checks. */
export async function listAll(root: string): Promise<string[]> {
  if (!(await exists(root))) return [];
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    for (const d of await fs.readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      out.push(r);
      if (d.isDirectory()) await walk(r);
    }
  }
  await walk('');
  return out.sort();
}

/** Poll `check` until it returns a truthy value or the deadline passes; the last value is returned. */
export async function waitFor<T>(what: string, check: () => Promise<T>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T;
  for (;;) {
    last = await check().catch(() => undefined as T);
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Start `n` agents in one fleet: the first one inits a fleet key and a publisher key; the others share
 * its fleet key, trust its publisher key and bootstrap to it.
 */
export async function startFleet(
  t: ExecutionContext,
  root: string,
  n: number,
  opts: { env?: (i: number) => Record<string, string> | undefined; extra?: (i: number) => string[] } = {},
): Promise<AgentHandle[]> {
  const first = await startAgent(t, path.join(root, 'a0'), opts.extra?.(0) ?? [], { env: opts.env?.(0) });
  const addr = (await first.json(['status'])).addresses[0] as string;
  const rest = await Promise.all(Array.from({ length: n - 1 }, (_, k) => joinFleet(t, first, path.join(root, `a${k + 1}`), addr,
    opts.extra?.(k + 1) ?? [], opts.env?.(k + 1))));
  return [first, ...rest];
}

/** Start one more agent in `first`'s fleet, bootstrapped to `addr`. */
export function joinFleet(t: ExecutionContext, first: AgentHandle, dir: string, addr: string, extra: string[] = [], env?: Record<string, string>) {
  const etc = path.join(first.dir, 'etc');
  // The bootstrap address goes into the config, so that a restarted agent finds the fleet again.
  return startAgent(t, dir, extra, {
    initArgs: ['--fleet-key', path.join(etc, 'fleet.key'), '--trust', path.join(etc, 'publisher.pub'), '--bootstrap', addr],
    env,
  });
}
