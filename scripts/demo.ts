// npm run demo: start a small fleet of agents on 127.0.0.1, publish a real runtime built from this
// machine's own Node.js binary on one of them, and show it propagate to all. Everything it starts and writes is removed at the end,
// also on failure or Ctrl-C.
import '../src/agent/polyfill.js';
import { DAEMON_NODE_FLAGS } from '../src/agent/node-flags.js';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/agent/cli/main.js');
const children: ChildProcess[] = [];
let workDir = '';

function step(text: string): void {
  console.log(`\n\x1b[1m== ${text}\x1b[0m`);
}

/** Run a CLI command with its output shown, as an operator would see it. */
async function show(args: string[]): Promise<void> {
  console.log(`$ joblet-agent ${args.join(' ')}`);
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: 'inherit' });
    p.on('exit', resolve);
  });
  if (code !== 0) throw new Error(`joblet-agent ${args[0]} exited with ${code}`);
}

/** A node-20 runtime in joblet's layout: runtime.yml at the top, the binary under isolated/. */
async function buildNodeRuntime(root: string): Promise<string> {
  const version = process.versions.node;
  const dir = path.join(root, `node-20-${version}`);
  await fs.mkdir(path.join(dir, 'isolated/usr/bin'), { recursive: true });
  await fs.copyFile(process.execPath, path.join(dir, 'isolated/usr/bin/node'));
  await fs.chmod(path.join(dir, 'isolated/usr/bin/node'), 0o755);
  await fs.symlink('node', path.join(dir, 'isolated/usr/bin/nodejs'));
  await fs.writeFile(path.join(dir, 'runtime.yml'), [
    'name: node-20',
    `version: "${version}"`,
    'language: javascript',
    `description: Node.js ${version} taken from the machine that ran the demo`,
    'mounts:',
    '  - source: isolated/usr/bin',
    '    target: /usr/local/bin',
    'environment:',
    '  PATH: /usr/local/bin:/usr/bin:/bin',
    'requirements:',
    `  architectures: [${process.arch === 'x64' ? 'amd64' : process.arch}]`,
    '',
  ].join('\n'));
  const pkg = path.join(root, `node-20-${version}.tar.gz`);
  await execFileP('tar', ['czf', pkg, '-C', root, path.basename(dir)]);
  return pkg;
}

const FLEET_SIZE = 4;

interface DemoAgent { name: string; socket: string; runtimesDir: string; config: string }

async function startAgent(a: DemoAgent, extra: string[] = []): Promise<void> {
  const p = spawn(process.execPath, [...DAEMON_NODE_FLAGS, CLI, 'start', '--config', a.config, ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  p.stderr!.on('data', (d: Buffer) => {
    for (const line of d.toString().trimEnd().split('\n')) console.log(`  [${a.name}] ${line}`);
  });
  children.push(p);
  for (let i = 0; ; i++) {
    const ok = await execFileP(process.execPath, [CLI, 'status', '--socket', a.socket]).then(() => true, () => false);
    if (ok) return;
    if (i > 150 || p.exitCode !== null) throw new Error(`agent ${a.name} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function json(a: DemoAgent, args: string[]): Promise<any> {
  const { stdout } = await execFileP(process.execPath, [CLI, ...args, '--json', '--socket', a.socket], { maxBuffer: 64 << 20 });
  return JSON.parse(stdout);
}

async function main(): Promise<void> {
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'joblet-agent-demo-'));
  const agents: DemoAgent[] = Array.from({ length: FLEET_SIZE }, (_, i) => ({
    name: `host${i}`,
    socket: path.join(workDir, `host${i}`, 'agent.sock'),
    runtimesDir: path.join(workDir, `host${i}`, 'runtimes'),
    config: path.join(workDir, `host${i}`, 'etc', 'config.yml'),
  }));
  const init = (a: DemoAgent, extra: string[]) => execFileP(process.execPath, [CLI, 'init', '--dir', path.dirname(a.config),
    '--data-dir', path.join(workDir, a.name, 'data'), '--runtimes-dir', a.runtimesDir, '--socket', a.socket,
    '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--http', '127.0.0.1:0', ...extra]);

  step(`make a fleet of ${FLEET_SIZE} agents on 127.0.0.1`);
  await show(['init', '--dir', path.dirname(agents[0].config), '--data-dir', path.join(workDir, 'host0', 'data'),
    '--runtimes-dir', agents[0].runtimesDir, '--socket', agents[0].socket, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--http', '127.0.0.1:0']);
  await startAgent(agents[0]);
  const bootstrap = (await json(agents[0], ['status'])).addresses[0] as string;
  const etc0 = path.dirname(agents[0].config);
  console.log(`the other hosts share host0's fleet key, trust its publisher key and bootstrap to ${bootstrap}`);
  for (const a of agents.slice(1)) {
    await init(a, ['--fleet-key', path.join(etc0, 'fleet.key'), '--trust', path.join(etc0, 'publisher.pub'), '--bootstrap', bootstrap]);
    await startAgent(a);
  }

  step('build a node-20 runtime package from this machine\'s Node.js');
  const pkg = await buildNodeRuntime(path.join(workDir, 'build'));
  console.log(`${pkg}: ${((await fs.stat(pkg)).size / 1e6).toFixed(1)} MB`);

  step('publish it on host0');
  const started = Date.now();
  await show(['publish', pkg, '--socket', agents[0].socket]);

  step('watch it propagate');
  const done = new Set<string>();
  while (done.size < agents.length) {
    for (const a of agents) {
      if (done.has(a.name)) continue;
      const list = await json(a, ['list']);
      if (list.some((r: any) => r.name === 'node-20')) {
        done.add(a.name);
        console.log(`${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s  ${a.name} has node-20 installed at ${list[0].path}`);
      }
    }
    if (Date.now() - started > 120_000) throw new Error('the runtime did not reach every host within two minutes');
    await new Promise((r) => setTimeout(r, 200));
  }

  step('the fleet as host3 sees it');
  await show(['status', '--socket', agents[FLEET_SIZE - 1].socket]);

  step('run the runtime installed on host3');
  const installed = (await fs.readdir(path.join(agents[FLEET_SIZE - 1].runtimesDir, 'node-20')))[0];
  const bin = path.join(agents[FLEET_SIZE - 1].runtimesDir, 'node-20', installed, 'isolated/usr/bin/node');
  const { stdout } = await execFileP(bin, ['-e', 'console.log("hello from " + process.version)']);
  console.log(`$ ${bin} -e ...\n${stdout.trim()}`);
}

async function cleanup(): Promise<void> {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await new Promise((r) => { c.once('exit', r); setTimeout(r, 5000); });
    }
  }
  if (workDir) await fs.rm(workDir, { recursive: true, force: true });
}

process.once('SIGINT', () => { cleanup().finally(() => process.exit(130)); });
main().then(
  () => cleanup().then(() => console.log('\ndemo done; everything it made is removed')),
  (err) => cleanup().then(() => { console.error(`demo failed: ${err.message}`); process.exit(1); }),
);
