// One joblet-agent per simulated host: init (in the root namespace, it only writes files), start inside the
// host's namespace, talk to each over its Unix control socket (reachable from the root namespace), and
// read its resource use from /proc.
import { DAEMON_NODE_FLAGS } from '../../src/agent/node-flags.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { callDaemon } from '../../src/agent/control.js';
import { run, sleep, pidAlive, stopGroup } from './sh.js';
import type { Host } from './topology.js';

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/agent/cli/main.js');
const DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Copy the built agent (dist/src) into the run's work dir and return its CLI path, so that a rebuild of
 * the tree during a long run cannot hand different hosts different agent code (or a half-written build).
 * node_modules is linked, package.json copied for its "type": "module".
 */
export async function snapshotAgent(workDir: string): Promise<string> {
  const root = path.join(workDir, 'agent');
  await fs.mkdir(path.join(root, 'dist'), { recursive: true });
  await fs.cp(path.join(DIST, 'src'), path.join(root, 'dist', 'src'), { recursive: true });
  await fs.copyFile(path.join(DIST, '..', 'package.json'), path.join(root, 'package.json'));
  await fs.symlink(path.join(DIST, '..', 'node_modules'), path.join(root, 'node_modules'));
  return path.join(root, 'dist', 'src', 'agent', 'cli', 'main.js');
}
export const AGENT_PORT = 7946;

export interface Agent {
  host: Host;
  dir: string;
  socket: string;
  runtimesDir: string;
  logFile: string;
  pid: number;
}

/** Call the control API with a bounded wait, so a wedged daemon cannot hang the simulator. */
export async function call<T>(socket: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${cmd} on ${socket} did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try { return (await Promise.race([callDaemon(socket, { cmd, args }), timeout])) as T; } finally { clearTimeout(timer); }
}

export interface AgentOptions { cli: string; zone?: string; bootstrap: string[]; fleetKey?: string; trust?: string; extraInit?: string[] }

/** Write the agent's config with `init`, start it in its namespace, wait until its socket answers. */
export async function startAgent(host: Host, workDir: string, opts: AgentOptions, onSpawn: (pid: number) => void): Promise<Agent> {
  const dir = path.join(workDir, `h${host.index}`);
  const etc = path.join(dir, 'etc');
  const socket = path.join(dir, 'agent.sock');
  const runtimesDir = path.join(dir, 'runtimes');
  const init = ['init', '--dir', etc, '--data-dir', path.join(dir, 'data'), '--runtimes-dir', runtimesDir, '--socket', socket,
    '--listen', `/ip4/${host.addr}/tcp/${AGENT_PORT}`, '--no-mdns'];
  if (opts.zone) init.push('--zone', opts.zone);
  if (opts.fleetKey) init.push('--fleet-key', opts.fleetKey);
  if (opts.trust) init.push('--trust', opts.trust);
  for (const b of opts.bootstrap) init.push('--bootstrap', b);
  init.push(...(opts.extraInit ?? []));
  await run(process.execPath, [opts.cli, ...init]);
  return launchAgent(host, dir, opts.cli, onSpawn);
}

/**
 * Start the agent of `host` from the config an earlier `init` wrote in `dir` (a restart after a kill keeps
 * its keys, store and runtimes); wait until its socket answers.
 */
export async function launchAgent(host: Host, dir: string, cli: string, onSpawn: (pid: number) => void): Promise<Agent> {
  const etc = path.join(dir, 'etc');
  const socket = path.join(dir, 'agent.sock');
  const runtimesDir = path.join(dir, 'runtimes');
  const logFile = path.join(dir, 'agent.log');
  const log = await fs.open(logFile, 'a');
  // `ip netns exec` execs node in place, so the pid we get is the agent's; detached makes it a group leader.
  // JSIM_AGENT_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=DIR") lets one profile the agents of a run.
  const nodeArgs = [...DAEMON_NODE_FLAGS, ...(process.env.JSIM_AGENT_NODE_ARGS ?? '').split(' ').filter(Boolean)];
  const child = spawn('ip', ['netns', 'exec', host.ns, process.execPath, ...nodeArgs, cli, 'start', '--config', path.join(etc, 'config.yml')],
    // bin/joblet-agent and the systemd unit set MALLOC_ARENA_MAX=2: the same here, so the fleet measured is the one shipped.
    { detached: true, stdio: ['ignore', log.fd, log.fd], env: { MALLOC_ARENA_MAX: '2', ...process.env } });
  await log.close();
  if (child.pid === undefined) throw new Error(`could not start the agent of ${host.ns}`);
  child.unref();
  onSpawn(child.pid);
  const agent: Agent = { host, dir, socket, runtimesDir, logFile, pid: child.pid };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (await call(socket, 'status', {}, 5000).then(() => true, () => false)) return agent;
    if (!(await pidAlive(child.pid))) throw new Error(`the agent of ${host.ns} exited at start; see ${logFile}:\n${await tail(logFile)}`);
    if (Date.now() > deadline) throw new Error(`the agent of ${host.ns} did not answer on ${socket} within 60 s`);
    await sleep(200);
  }
}

export async function tail(file: string, lines = 20): Promise<string> {
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines).join('\n');
}

export interface AgentStatus {
  addresses: string[];
  swarm?: { peers: { peerId: string; zone?: string }[] };
}

/** The agent's own address on its host's interface, with /p2p/ID, for others to bootstrap to. */
export async function dialAddress(agent: Agent): Promise<string> {
  // The control socket may answer a moment before libp2p reports its listen addresses.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = await call<AgentStatus>(agent.socket, 'status');
    const a = s.addresses.find((x) => x.includes(`/ip4/${agent.host.addr}/`));
    if (a) return a;
    if (Date.now() > deadline) {
      throw new Error(`the agent of ${agent.host.ns} reports no address on ${agent.host.addr} (it has: ${s.addresses.join(', ') || 'none'}); see ${agent.logFile}:\n${await tail(agent.logFile)}`);
    }
    await sleep(200);
  }
}

export interface InstallRecord { name: string; version: string; manifestId: string; path: string; installedAt: string }

export async function installed(agent: Agent, name: string, version: string): Promise<InstallRecord | undefined> {
  const list = await call<InstallRecord[]>(agent.socket, 'list');
  return list.find((r) => r.name === name && r.version === version);
}

export interface ProcUsage { peakRssBytes: number; cpuSeconds: number; userSeconds: number; systemSeconds: number }

/** VmHWM and utime+stime of a live process, from /proc. */
export async function procUsage(pid: number): Promise<ProcUsage> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const user = Number(fields[11]) / clockTicks;
  const system = Number(fields[12]) / clockTicks;
  return { peakRssBytes: hwm ? Number(hwm[1]) * 1024 : 0, cpuSeconds: user + system, userSeconds: user, systemSeconds: system };
}

let clockTicks = 100;
export async function readClockTicks(): Promise<void> {
  const out = await run('getconf', ['CLK_TCK']).catch(() => null);
  if (out) clockTicks = Number(out.stdout.trim()) || 100;
}

/** Stop an agent by its pid (process group) and confirm it is gone. */
export async function stopAgent(pid: number): Promise<boolean> {
  return stopGroup(pid, 10_000);
}

/** The process's command name, to confirm that the pid we hold is the node agent. */
export async function commOf(pid: number): Promise<string> {
  return (await fs.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
}
