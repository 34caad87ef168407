// The release artifacts (npm run release), built once for this machine's architecture. Agents run from them
// with PATH=/nonexistent and an environment of nothing else: no node and no npm can be reached.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { cli, comparable, execFileP, startAgent, tmpDir, waitFor, type AgentHandle, type Program } from './helpers/agent.js';
import { makeRuntimeTree, tarGzWithTopDir } from './helpers/fixtures.js';
import { AGENT_VERSION } from '../src/agent/version.js';
import { DAEMON_NODE_FLAGS } from '../src/agent/node-flags.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arch = os.arch();
const debArch = arch === 'x64' ? 'amd64' : arch;
const top = `joblet-agent-${AGENT_VERSION}-linux-${arch}`;
const supported = os.platform() === 'linux' && (arch === 'x64' || arch === 'arm64');
const VERSION_LINE = new RegExp(`^joblet-agent ${AGENT_VERSION.replace(/\./g, '\\.')} \\(node v2[24]\\.\\d+\\.\\d+\\)\\n$`);

let out = '';

test.before(async () => {
  if (!supported) return;
  out = await fs.mkdtemp(path.join(os.tmpdir(), 'ja-release-'));
  await execFileP(process.execPath, [path.join(repoRoot, 'dist/scripts/release/build.js'), '--arch', arch, '--out', out, '--gzip-level', '1'],
    { timeout: 280_000, maxBuffer: 16 * 1024 * 1024 });
});

test.after.always(async () => {
  if (out) await fs.rm(out, { recursive: true, force: true });
});

/** The release executable with nothing on PATH and no other environment. */
const bare = (file: string): Program => ({ file, args: [], env: { PATH: '/nonexistent' } });

/** The process is the release executable itself (not a node it started), with the addon beside it mapped. */
async function assertRunsFromArtifact(t: ExecutionContext, agent: AgentHandle, exe: string, addon: string): Promise<void> {
  const pid = agent.proc.pid!;
  t.is(await fs.readlink(`/proc/${pid}/exe`), await fs.realpath(exe));
  t.true((await fs.readFile(`/proc/${pid}/maps`, 'utf8')).includes(await fs.realpath(addon)), 'the LevelDB addon beside the executable is loaded');
  const children = await Promise.all((await fs.readdir(`/proc/${pid}/task`)).map((tid) =>
    fs.readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '')));
  t.is(children.join('').trim(), '', 'the agent started no other process');
  // The V8 flags come from the executable's SEA config: nothing on the command line gives them.
  for (const flag of DAEMON_NODE_FLAGS) t.true(agent.logs().includes(flag), `the daemon runs with ${flag}`);
  t.false(agent.logs().includes('node_flags_missing'));
}

async function installed(a: AgentHandle, name: string, version: string): Promise<boolean> {
  return (await a.json(['list'])).some((r: any) => r.name === name && r.version === version);
}

(supported ? test : test.skip)('the tarball: two agents from it, with no node or npm reachable, publish and propagate a runtime', async (t) => {
  const root = await tmpDir(t, 'ja-release-run-');
  const unpacked = path.join(root, 'opt');
  await fs.mkdir(unpacked);
  await execFileP('tar', ['-xzf', path.join(out, `${top}.tar.gz`), '-C', unpacked]);
  t.deepEqual(await fs.readdir(unpacked), [top], 'one top directory');
  t.deepEqual((await fs.readdir(path.join(unpacked, top))).sort(), ['classic-level.node', 'joblet-agent']);
  const exe = path.join(unpacked, top, 'joblet-agent');
  const program = bare(exe);

  const version = await cli(['--version'], {}, program);
  t.is(version.code, 0, version.stderr);
  t.regex(version.stdout, VERSION_LINE);

  const a = await startAgent(t, path.join(root, 'a'), [], { program });
  const addr = (await a.json(['status'])).addresses[0] as string;
  const etc = path.join(a.dir, 'etc');
  const b = await startAgent(t, path.join(root, 'b'), [], {
    program,
    initArgs: ['--fleet-key', path.join(etc, 'fleet.key'), '--trust', path.join(etc, 'publisher.pub'), '--bootstrap', addr],
  });
  for (const agent of [a, b]) await assertRunsFromArtifact(t, agent, exe, path.join(unpacked, top, 'classic-level.node'));

  const src = path.join(root, 'pkg', 'relrt-1.0.0');
  await makeRuntimeTree(src, { name: 'relrt', version: '1.0.0', bulkBytes: 3 * 1024 * 1024 });
  const pkg = path.join(root, 'relrt.tgz');
  await tarGzWithTopDir(src, pkg);
  const pub = await a.json(['publish', pkg]);
  t.is(pub.name, 'relrt');
  await waitFor('relrt on the second agent', () => installed(b, 'relrt', '1.0.0'), 120_000);

  t.deepEqual(await comparable(path.join(b.runtimesDir, 'relrt', '1.0.0')), await comparable(path.join(a.runtimesDir, 'relrt', '1.0.0')));
  for (const agent of [a, b]) {
    const list = await agent.json(['list']);
    t.deepEqual(list.map((r: any) => [r.name, r.version, r.manifestId]), [['relrt', '1.0.0', pub.manifestId]]);
  }
  const status = await b.json(['status']);
  t.is(status.version, AGENT_VERSION);
  const aId = (await a.json(['status'])).peerId;
  t.true(status.swarm.peers.some((p: any) => p.peerId === aId), 'the first agent is a peer of the second');
  const text = await b.run(['status']);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /relrt/);
  const verify = await b.json(['verify']);
  t.true(verify.checked > 0);
  t.deepEqual([verify.corrupt, verify.missing], [[], []]);
});

(supported ? test : test.skip)('the .deb: executable, addon, systemd unit and a default config that init fills in, nothing else', async (t) => {
  const deb = path.join(out, `joblet-agent_${AGENT_VERSION}_${debArch}.deb`);
  const { stdout: listing } = await execFileP('dpkg-deb', ['-c', deb]);
  const entries = listing.trim().split('\n').map((line) => {
    const cols = line.trim().split(/\s+/);
    return { mode: cols[0], owner: cols[1], path: cols[5].replace(/^\.\//, '/'), target: cols[7] };
  });
  t.deepEqual(entries.filter((e) => !e.mode.startsWith('d')).map((e) => e.path).sort(), [
    '/etc/joblet-agent/config.yml',
    '/usr/bin/joblet-agent',
    '/usr/lib/joblet-agent/classic-level.node',
    '/usr/lib/joblet-agent/joblet-agent',
    '/usr/lib/systemd/system/joblet-agent.service',
  ]);
  t.true(entries.every((e) => e.owner === 'root/root'));
  t.like(entries.find((e) => e.path === '/usr/bin/joblet-agent'), { mode: 'lrwxrwxrwx', target: '../lib/joblet-agent/joblet-agent' });
  t.like(entries.find((e) => e.path === '/usr/lib/joblet-agent/joblet-agent'), { mode: '-rwxr-xr-x' });

  const field = async (name: string) => (await execFileP('dpkg-deb', ['-f', deb, name])).stdout.trim();
  t.is(await field('Package'), 'joblet-agent');
  t.is(await field('Version'), AGENT_VERSION);
  t.is(await field('Architecture'), debArch);
  t.regex(await field('Depends'), /libc6 \(>= 2\.28\)/);
  t.is((await execFileP('dpkg-deb', ['-I', deb, 'conffiles'])).stdout, '/etc/joblet-agent/config.yml\n');

  const root = await tmpDir(t, 'ja-release-deb-');
  const tree = path.join(root, 'tree');
  await execFileP('dpkg-deb', ['-x', deb, tree]);
  const unit = await fs.readFile(path.join(tree, 'usr/lib/systemd/system/joblet-agent.service'), 'utf8');
  for (const line of ['ExecStart=/usr/bin/joblet-agent start --config /etc/joblet-agent/config.yml', 'Restart=on-failure',
    'StateDirectory=joblet-agent', 'RuntimeDirectory=joblet-agent', 'Environment=MALLOC_ARENA_MAX=2', 'KillSignal=SIGTERM',
    'WantedBy=multi-user.target']) {
    t.true(unit.split('\n').includes(line), `unit has ${line}`);
  }
  // Where systemd's own checker is installed: no unknown or invalid setting (it only minds, here, that
  // /usr/bin/joblet-agent is not installed on this machine).
  const analyze = await execFileP('systemd-analyze', ['verify', path.join(tree, 'usr/lib/systemd/system/joblet-agent.service')])
    .catch((err: any) => (err.code === 'ENOENT' ? null : { stdout: err.stdout as string, stderr: err.stderr as string }));
  if (analyze) t.notRegex(analyze.stdout + analyze.stderr, /unknown|invalid|failed to parse|ignoring/i);

  // The shipped config is all comments: the agent's defaults hold until init fills it in.
  const shipped = await fs.readFile(path.join(tree, 'etc/joblet-agent/config.yml'), 'utf8');
  t.is(YAML.parse(shipped), null);
  const etc = path.join(root, 'host', 'etc');
  await fs.mkdir(path.dirname(etc));
  await fs.cp(path.join(tree, 'etc/joblet-agent'), etc, { recursive: true });
  const program = bare(path.join(tree, 'usr/bin/joblet-agent'));
  const dir = path.join(root, 'host');
  const init = await cli(['init', '--dir', etc, '--data-dir', path.join(dir, 'data'), '--runtimes-dir', path.join(dir, 'runtimes'),
    '--socket', path.join(dir, 'agent.sock'), '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', '--json'], {}, program);
  t.is(init.code, 0, init.stderr);
  const written = YAML.parse(await fs.readFile(path.join(etc, 'config.yml'), 'utf8'));
  t.is(written.fleetKey, 'fleet.key');
  t.deepEqual(written.trust, [JSON.parse(init.stdout).publisher]);
  const again = await cli(['init', '--dir', etc], {}, program);
  t.is(again.code, 1);
  t.regex(again.stderr, /already exists; init never overwrites/);

  // The executable runs through the /usr/bin symlink and finds its addon beside its real path.
  const agent = await startAgent(t, dir, [], { program });
  await assertRunsFromArtifact(t, agent, path.join(tree, 'usr/lib/joblet-agent/joblet-agent'), path.join(tree, 'usr/lib/joblet-agent/classic-level.node'));
  t.is((await agent.json(['status'])).version, AGENT_VERSION);
  t.is(await agent.stop(), 0, 'SIGTERM stops it cleanly');
});
