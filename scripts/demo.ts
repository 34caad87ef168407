// npm run demo: start an agent in a temp dir, publish a real runtime built from this machine's own
// Node.js binary, and show what the agent reports. Everything it starts and writes is removed at the end,
// also on failure or Ctrl-C.
import '../src/agent/polyfill.js';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/agent/cli.js');
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

async function main(): Promise<void> {
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'joblet-agent-demo-'));
  const etc = path.join(workDir, 'etc');
  const socket = path.join(workDir, 'agent.sock');
  const runtimesDir = path.join(workDir, 'runtimes');

  step('make a fleet key, a publisher key pair and a config');
  await show(['init', '--dir', etc, '--data-dir', path.join(workDir, 'data'), '--runtimes-dir', runtimesDir,
    '--socket', socket, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns']);

  step('build a node-20 runtime package from this machine\'s Node.js');
  const pkg = await buildNodeRuntime(path.join(workDir, 'build'));
  console.log(`${pkg}: ${((await fs.stat(pkg)).size / 1e6).toFixed(1)} MB`);

  step('start the agent');
  const agent = spawn(process.execPath, [CLI, 'start', '--config', path.join(etc, 'config.yml')], { stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(agent);
  for (let i = 0; ; i++) {
    const ok = await execFileP(process.execPath, [CLI, 'status', '--socket', socket]).then(() => true, () => false);
    if (ok) break;
    if (i > 100 || agent.exitCode !== null) throw new Error('the agent did not start');
    await new Promise((r) => setTimeout(r, 100));
  }

  step('publish it');
  await show(['publish', pkg, '--socket', socket]);
  step('list what is installed');
  await show(['list', '--socket', socket]);
  step('status');
  await show(['status', '--socket', socket]);

  step('run the installed runtime');
  const installed = (await fs.readdir(path.join(runtimesDir, 'node-20')))[0];
  const bin = path.join(runtimesDir, 'node-20', installed, 'isolated/usr/bin/node');
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
