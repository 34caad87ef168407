// The zstd tests (store-zstd.test.ts) need a Node with zstd, and the freeing of decoded chunks a Node with ArrayBuffer transfer. Development runs Node 20, which has none, so here
// they run under the Node the release artifact carries (scripts/release/node-binaries), fetched as a release
// build fetches it: otherwise this suite would never exercise the codec every shipped agent uses.
import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { fetchNode, type Arch } from '../scripts/release/node-binary.js';
import { DAEMON_NODE_FLAGS } from '../src/agent/node-flags.js';
import { ZSTD_AVAILABLE } from '../src/store/zstd.js';
import { CLI, comparable, execFileP, startAgent, tmpDir, waitFor, type AgentHandle } from './helpers/agent.js';
import { tarGzWithTopDir } from './helpers/fixtures.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const arch = os.arch();
// Where this Node has zstd, store-zstd.test.ts runs in this suite directly.
const needed = !ZSTD_AVAILABLE && os.platform() === 'linux' && (arch === 'x64' || arch === 'arm64');

/** Fetched once for every test here, into a cache of its own: the release test fetches into release/.cache at the same time. */
let fetching: ReturnType<typeof fetchNode> | undefined;
const shippedNode = () => (fetching ??= fetchNode(repoRoot, arch as Arch, path.join(repoRoot, 'release', '.cache-zstd-test')));

/** Runs one compiled test file under `node` with ava; its TAP output. */
async function avaUnder(node: string, file: string): Promise<string> {
  const ava = path.join(repoRoot, 'node_modules/ava/entrypoints/cli.mjs');
  const run = await execFileP(node, [ava, '--tap', file], { cwd: repoRoot, timeout: 180_000 })
    .catch((err: { stdout?: string; stderr?: string; code?: number }) => err);
  return `${run.stdout ?? ''}\n${run.stderr ?? ''}`;
}

(needed ? test : test.skip)('the zstd tests pass under the Node a release carries', async (t) => {
  const node = await shippedNode();
  const { stdout: version } = await execFileP(node.path, ['--version']);
  t.log(`running store-zstd.test.js under node ${version.trim()}`);
  const out = await avaUnder(node.path, 'dist/test/store-zstd.test.js');
  // Every test of the file must pass there, none skipped: as many passes as the file declares tests.
  const declared = (await fs.readFile(path.join(repoRoot, 'test/store-zstd.test.ts'), 'utf8')).match(/^(zstdTest|test)\(/gm)?.length ?? 0;
  t.true(declared >= 6);
  t.regex(out, new RegExp(`^# pass ${declared}$`, 'm'), out);
  t.notRegex(out, /^# (fail|skip) [1-9]/m, out);
  t.notRegex(out, /^not ok/m, out);
});

// There the install frees each decoded chunk once written (release-bytes.ts: ArrayBuffer transfer, which Node 20
// lacks): the any-order install tests check every tree byte for byte with that in effect.
(needed ? test : test.skip)('the any-order install tests pass under the Node a release carries, where decoded chunks are freed', async (t) => {
  const node = await shippedNode();
  const out = await avaUnder(node.path, 'dist/test/install-any-order.test.js');
  t.regex(out, /^# pass [1-9]\d*$/m, out);
  t.notRegex(out, /^# (fail|skip) [1-9]/m, out);
  t.notRegex(out, /^not ok/m, out);
});

/** Codec bytes (chunk-store.ts header byte 5) of every chunk file under an agent's data dir. */
async function codecBytes(agent: AgentHandle): Promise<Set<number>> {
  const codecs = new Set<number>();
  for (const entry of await fs.readdir(agent.dataDir, { recursive: true })) {
    if (!/(^|\/)[0-9a-f]{2}\/[0-9a-f]{62}$/.test(entry)) continue;
    const head = await fs.readFile(path.join(agent.dataDir, entry));
    codecs.add(head[5]!);
  }
  return codecs;
}

(needed ? test : test.skip)('a fleet of a Node 24 agent and a Node 20 agent moves runtimes both ways: zstd chunks reach the older node decoded', async (t) => {
  const node = await shippedNode();
  const root = await tmpDir(t, 'ja-zstd-mixed-');
  const a = await startAgent(t, path.join(root, 'a'), [], { program: { file: node.path, args: [...DAEMON_NODE_FLAGS, CLI], env: process.env } });
  const etc = path.join(a.dir, 'etc');
  // The same publisher key as the first agent, which trusts only its own.
  const b = await startAgent(t, path.join(root, 'b'), ['--publisher-key', path.join(etc, 'publisher.key')], {
    initArgs: ['--fleet-key', path.join(etc, 'fleet.key'), '--trust', path.join(etc, 'publisher.pub'), '--bootstrap', (await a.json(['status'])).addresses[0] as string],
  });
  t.is(await fs.readlink(`/proc/${a.proc.pid}/exe`), await fs.realpath(node.path), 'the first agent runs on the shipped Node');
  t.is(await fs.readlink(`/proc/${b.proc.pid}/exe`), await fs.realpath(process.execPath));

  // Compressible bytes: each agent stores them compressed, in the codec its Node has.
  const pkgOf = async (name: string) => {
    const src = path.join(root, 'pkg', `${name}-1.0.0`);
    await fs.mkdir(path.join(src, 'lib'), { recursive: true });
    await fs.writeFile(path.join(src, 'runtime.yml'), `name: ${name}\nversion: "1.0.0"\nlanguage: test\n`);
    await fs.writeFile(path.join(src, 'lib', 'text'), Buffer.from(`${name} ${Math.random()} a line of text\n`.repeat(120_000)));
    const pkg = path.join(root, `${name}.tgz`);
    await tarGzWithTopDir(src, pkg);
    return pkg;
  };
  const installedOn = async (x: AgentHandle, name: string) => (await x.json(['list'])).some((r: { name: string }) => r.name === name);

  await a.json(['publish', await pkgOf('fromnew')]);
  await waitFor('fromnew on the Node 20 agent', () => installedOn(b, 'fromnew'), 120_000);
  t.deepEqual(await comparable(path.join(b.runtimesDir, 'fromnew', '1.0.0')), await comparable(path.join(a.runtimesDir, 'fromnew', '1.0.0')));
  t.true((await codecBytes(a)).has(3), 'the Node 24 agent stores zstd');
  t.false((await codecBytes(b)).has(3), 'the Node 20 agent holds no zstd chunk');

  await b.json(['publish', await pkgOf('fromold')]);
  await waitFor('fromold on the Node 24 agent', () => installedOn(a, 'fromold'), 120_000);
  t.deepEqual(await comparable(path.join(a.runtimesDir, 'fromold', '1.0.0')), await comparable(path.join(b.runtimesDir, 'fromold', '1.0.0')));
  t.true((await codecBytes(b)).has(2), 'the Node 20 agent stores brotli, which the Node 24 agent reads');
});
