// What the fleet soak found. 1) A manifest replaced by `publish --force` came back. A host that was down during
// the forced publish still offered the old manifest when it returned; the others learned it again and kept
// it (with its chunks) for ever, next to the newer one installed, and offered it on in their catalogs.
// Now a host never learns a manifest older than the one it has installed of that name@version, drops such
// manifests in its maintenance rounds, and collects the chunks that nothing references any more.
// 2) A removal arriving while a host downloads the runtime was logged as a failed install (ERROR, "retried
// automatically", announced to the fleet as a failure); now it is a cancelled download and no failure.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, startFleet, startAgent, waitFor, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree, tarGzWithTopDir, seededBytes } from './helpers/fixtures.js';

interface Known { name: string; version: string; manifestId: string; installedHere: boolean }
const known = async (a: AgentHandle) => ((await a.json(['status'])).swarm.fleet as Known[]).map((m) => m.manifestId).sort();
const installedId = async (a: AgentHandle) => ((await a.json(['list'])) as { manifestId: string }[]).map((r) => r.manifestId);

/** Chunk files in the agent's store (temp files of interrupted writes aside). */
async function chunkFiles(a: AgentHandle): Promise<number> {
  let n = 0;
  const dir = path.join(a.dataDir, 'chunks');
  for (const sub of await fs.readdir(dir)) {
    const inner = await fs.readdir(path.join(dir, sub)).catch(() => [] as string[]);
    n += inner.filter((f) => !f.includes('.tmp')).length;
  }
  return n;
}

// One fleet for both findings: agent start-ups are what costs time on a loaded machine.
test('a superseded manifest does not come back from a host that was away and its chunks go; a removal mid-download is no failure', async (t) => {
  t.timeout(300_000);
  const root = await tmpDir(t);
  const [a, b, c] = await startFleet(t, root, 3);
  const pkg = async (seed: string) => {
    const src = path.join(root, `src-${seed}`, 'again-1.0.0');
    await makeRuntimeTree(src, { name: 'again', version: '1.0.0', seed, bulkBytes: 2 * 1024 * 1024 });
    const file = path.join(root, `again-${seed}.tar.gz`);
    await tarGzWithTopDir(src, file);
    return file;
  };
  const v1 = (await a.json(['publish', await pkg('one')])).manifestId as string;
  for (const x of [b, c]) await waitFor('build one installed everywhere', async () => (await installedId(x)).includes(v1), 120_000);

  // c goes away holding build one; build two replaces it on a and b.
  await c.stop();
  const v2 = (await a.json(['publish', '--force', await pkg('two')])).manifestId as string;
  t.not(v2, v1);
  await waitFor('b installs build two', async () => (await installedId(b)).includes(v2), 120_000);

  // c comes back offering build one in its catalog; a and b sync with it at once.
  // (c comes back with its download capped at 2 MiB/s, for the second part.)
  const c2 = await startAgent(t, c.dir, ['--max-download-rate', '2MiB']);
  await waitFor('c installs build two', async () => (await installedId(c2)).includes(v2), 120_000);
  for (const x of [a, b, c2]) {
    await waitFor('only build two is kept', async () => JSON.stringify(await known(x)) === JSON.stringify([v2]), 120_000);
  }
  // Build one's own chunks are collected: what is left is what build two references.
  const chunksOfV2 = (await a.json(['info', 'again@1.0.0'])).chunks as number;
  for (const x of [a, b, c2]) await waitFor('no chunk beyond build two', async () => (await chunkFiles(x)) === chunksOfV2, 120_000);
  // A round later, still nobody holds build one (it did not come back through a catalog).
  await new Promise((r) => setTimeout(r, 8_000));
  for (const x of [a, b, c2]) t.deepEqual(await known(x), [v2]);

  // 2) 24 MiB at 2 MiB/s take c2 about 12 s: the removal lands mid-transfer.
  const src = path.join(root, 'pkg-gone');
  await makeRuntimeTree(src, { name: 'gone', version: '1.0.0', bulkBytes: 1024 });
  for (let i = 0; i < 24; i++) await fs.writeFile(path.join(src, `isolated/lib/blob${i}.bin`), seededBytes(1024 * 1024, `gone${i}`));
  await a.json(['publish', src]);
  await waitFor('a partial download on c', async () => {
    const tr = ((await c2.json(['status'])).swarm.transfers as { name: string; chunksHave: number; chunks: number }[]).find((x) => x.name === 'gone');
    return tr && tr.chunksHave >= 2 && tr.chunksHave < tr.chunks;
  }, 120_000, 50);
  t.true((await a.json(['remove', 'gone'])).signed);
  await waitFor('c cancels the download', async () => /download_cancelled name=gone/.test(c2.logs()), 120_000);
  const s = await c2.json(['status']);
  t.deepEqual(s.swarm.transfers, []);
  t.deepEqual((s.swarm.fleet as Known[]).map((m) => m.manifestId), [v2]);
  t.deepEqual(await installedId(c2), [v2]);
  t.notRegex(c2.logs(), /install_failed/);
  t.false(await fs.stat(path.join(c2.runtimesDir, 'gone')).then(() => true, () => false));
});

