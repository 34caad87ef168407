// verify of installed trees, repair, repair: auto, and corrupt chunk files dropped and fetched again, with
// real agents, real trees and real chunk files.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, startAgent, startFleet, joinFleet, comparable, snapshot, waitFor, exists, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree, LONG_FILE } from './helpers/fixtures.js';

/** The chunk file of `id` in an agent's store. */
function chunkFile(agent: AgentHandle, id: string): string {
  const hex = id.slice('sha256:'.length);
  return path.join(agent.dataDir, 'chunks', hex.slice(0, 2), hex.slice(2));
}

async function flipByte(file: string): Promise<void> {
  const bytes = await fs.readFile(file);
  bytes[bytes.length >> 1] ^= 0xff;
  await fs.writeFile(file, bytes); // in place: same inode, new ctime
}

/** Ids of the chunk files in an agent's store, largest first (content chunks before the small entry list). */
async function chunkIds(agent: AgentHandle): Promise<string[]> {
  const root = path.join(agent.dataDir, 'chunks');
  const out: { id: string; size: number }[] = [];
  for (const sub of await fs.readdir(root)) {
    for (const f of await fs.readdir(path.join(root, sub))) out.push({ id: `sha256:${sub}${f}`, size: (await fs.stat(path.join(root, sub, f))).size });
  }
  return out.sort((a, b) => b.size - a.size).map((c) => c.id);
}

test('verify reports exactly the drift of an installed tree; repair restores it identical to the package', async (t) => {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await makeRuntimeTree(src, { name: 'drift', version: '1.0.0' });
  await makeRuntimeTree(path.join(dir, 'other'), { name: 'elsewhere', version: '2.0.0', seed: 'other' });
  const agent = await startAgent(t, dir);

  const none = await agent.run(['repair']);
  t.is(none.code, 0);
  t.regex(none.stdout, /no runtimes are installed here: nothing to repair/);

  const pub = await agent.json(['publish', src]);
  const ownChunks = await chunkIds(agent);
  await agent.json(['publish', path.join(dir, 'other'), '--no-install']);
  const root = pub.path as string;
  const clean = await agent.json(['verify']);
  t.deepEqual(clean.runtimes.map((r: any) => [r.name, r.state]), [['drift', 'ok']]);
  t.true(clean.runtimes[0].entries > 10);

  // An operator's hands: edit a file, chmod one, point a symlink elsewhere, add a file, delete one.
  await fs.writeFile(path.join(root, LONG_FILE), 'edited by hand\n');
  await fs.chmod(path.join(root, 'isolated/lib/libbulk.so'), 0o600);
  await fs.rm(path.join(root, 'isolated/usr/bin/tool-link'));
  await fs.symlink('elsewhere', path.join(root, 'isolated/usr/bin/tool-link'));
  await fs.writeFile(path.join(root, 'isolated/extra.txt'), 'not in the package\n');
  await fs.rm(path.join(root, 'isolated/lib/readonly.txt'));

  const bad = await agent.run(['verify', '--json']);
  t.is(bad.code, 1);
  const r = JSON.parse(bad.stdout).runtimes[0];
  t.is(r.state, 'drifted');
  t.deepEqual(r.changed, [
    { path: 'isolated/lib/libbulk.so', what: ['mode'] },
    { path: 'isolated/usr/bin/tool-link', what: ['target', 'mtime'] },
    { path: LONG_FILE, what: ['content', 'mtime'] },
  ].sort((a, b) => (a.path < b.path ? -1 : 1)));
  t.deepEqual(r.added, ['isolated/extra.txt']);
  t.deepEqual(r.missing, ['isolated/lib/readonly.txt']);
  const human = await agent.run(['verify']);
  t.regex(human.stdout, /drift@1\.0\.0 {2}drifted/);
  t.regex(human.stdout, /added {4}isolated\/extra\.txt/);

  const fixed = await agent.json(['repair', 'drift@1.0.0']);
  t.deepEqual(fixed.outcomes.map((o: any) => o.result), ['repaired']);
  t.deepEqual(fixed.outcomes[0].drift.added, ['isolated/extra.txt']);
  t.deepEqual(await comparable(root), await comparable(src));
  const snap = await snapshot(root);
  t.is(snap.get('isolated/usr/bin/tool')!.ino, snap.get('isolated/usr/bin/tool-hardlink')!.ino, 'the hardlink is a hardlink again');
  t.is((await agent.json(['verify'])).runtimes[0].state, 'ok', 'mtimes too');
  const again = await agent.run(['repair', 'drift']);
  t.is(again.code, 0);
  t.regex(again.stdout, /drift@1\.0\.0 matches its manifest: nothing to repair/);

  // A runtime dir deleted behind the agent's back (rnx runtime remove, rm -rf).
  await fs.rm(root, { recursive: true, force: true });
  const gone = await agent.run(['verify', '--json']);
  t.is(gone.code, 1);
  t.is(JSON.parse(gone.stdout).runtimes[0].state, 'deleted');
  t.regex((await agent.run(['verify'])).stdout, /deleted {2}.*the runtime dir is gone/);
  t.is((await agent.run(['repair'])).code, 0);
  t.deepEqual(await comparable(root), await comparable(src));

  // Clear sentences.
  const unknown = await agent.run(['repair', 'nosuch']);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /unknown runtime nosuch: this agent knows no manifest of it/);
  const notHere = await agent.run(['repair', 'elsewhere@2.0.0']);
  t.is(notHere.code, 1);
  t.regex(notHere.stderr, /elsewhere@2\.0\.0 is not installed here, so there is nothing to repair/);

  // With no peer to fetch it from, a chunk the store lost cannot come back: the repair says so and leaves the tree.
  const lost = ownChunks[0]!;
  await fs.rm(chunkFile(agent, lost));
  await fs.writeFile(path.join(root, 'isolated/extra.txt'), 'again\n');
  const stuck = await agent.run(['repair', 'drift']);
  t.is(stuck.code, 1);
  t.regex(stuck.stdout, /drift@1\.0\.0 could not be repaired: 1 of the \d+ chunks of drift@1\.0\.0 are not in the store and no reachable peer sent them/);
  t.true(await exists(path.join(root, 'isolated/extra.txt')), 'the tree is left as it was');
  const status = await agent.json(['status']);
  t.is(status.repair.mode, 'off');
  t.deepEqual(status.repair.recent.map((o: any) => o.result), ['failed', 'repaired', 'repaired']);
  const metrics = await (await fetch(`${status.http}metrics`)).text();
  t.regex(metrics, /joblet_agent_repairs_total\{result="repaired"\} 2\n/);
  t.regex(metrics, /joblet_agent_repairs_total\{result="failed"\} 1\n/);
  t.regex(metrics, /joblet_agent_drift_found_total [1-9]/);
});

test('in a fleet: a corrupt chunk is deleted and fetched again, repair fetches what the store lacks, repair: auto restores a deleted file', async (t) => {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await makeRuntimeTree(src, { name: 'fleetrt', version: '1.0.0', bulkBytes: 3 * 1024 * 1024 });
  const [a0, a1] = await startFleet(t, dir, 2, { extra: (i) => (i === 1 ? ['--repair', 'auto', '--repair-interval', '2s'] : []) });
  const pub = await a0.json(['publish', src]);
  await waitFor('a1 installs', async () => (await a1.json(['list'])).length === 1, 120_000);
  const root1 = path.join(a1.runtimesDir, 'fleetrt', '1.0.0');
  const root0 = pub.path as string;
  const chunks = await chunkIds(a1);
  t.true(chunks.length >= 4, 'three content chunks, and the small entry list last');

  // A chunk file on a1 goes bad: verify finds it, deletes it, and a1 fetches it again from a0.
  const victim = chunks[1]!;
  await flipByte(chunkFile(a1, victim));
  const found = await a1.run(['verify', '--json']);
  t.is(found.code, 1);
  t.deepEqual(JSON.parse(found.stdout).corrupt.map((c: any) => c.id), [victim]);
  await waitFor('a1 fetches the chunk again', async () => /refetched/.test(a1.logs()) && exists(chunkFile(a1, victim)), 120_000);
  const healthy = await a1.json(['verify']);
  t.deepEqual([healthy.corrupt, healthy.missing], [[], []]);
  t.regex(a1.logs(), /chunk_dropped/);

  // repair: auto on a1 restores a deleted file by itself.
  await fs.rm(path.join(root1, 'isolated/usr/bin/tool'));
  await waitFor('a1 repairs by itself', async () => exists(path.join(root1, 'isolated/usr/bin/tool')), 120_000);
  t.deepEqual(await comparable(root1), await comparable(src));
  const st1 = await a1.json(['status']);
  t.is(st1.repair.mode, 'auto');
  t.is(st1.repair.recent[0].result, 'repaired');
  t.deepEqual(st1.repair.recent[0].drift.missing, ['isolated/usr/bin/tool']);
  t.truthy(st1.repair.lastCheck.at);
  t.regex((await a1.run(['status'])).stdout, /repair {5}auto, every 2 s; last check .*; recent: fleetrt@1\.0\.0 repaired/);

  // a0 lost a chunk and its tree was edited: repair fetches the chunk from a1 and restores the tree.
  const lost = chunks[0]!;
  await fs.rm(chunkFile(a0, lost));
  await fs.appendFile(path.join(root0, 'runtime.yml'), '# edited\n');
  const rep = await a0.json(['repair', 'fleetrt@1.0.0']);
  t.deepEqual(rep.outcomes.map((o: any) => o.result), ['repaired']);
  t.true(await exists(chunkFile(a0, lost)));
  t.deepEqual(await comparable(root0), await comparable(src));

  // A host never serves a chunk it has not verified since it was written: with one chunk damaged in place on
  // both holders, a newcomer receives no corrupt byte; the holders find it on serving and drop it.
  const bad = chunks[2]!;
  await flipByte(chunkFile(a0, bad));
  await flipByte(chunkFile(a1, bad));
  t.false([a0, a1].some((a) => a.logs().includes(victimLine(bad))), 'not found before anybody asks for it');
  const addr = (await a0.json(['status'])).addresses[0] as string;
  const a2 = await joinFleet(t, a0, path.join(dir, 'a2'), addr);
  await waitFor('a holder drops the damaged chunk on serving it', async () =>
    [a0, a1].some((a) => a.logs().includes(victimLine(bad))) || undefined, 120_000);
  const st2 = await a2.json(['status']);
  t.is(st2.swarm.corruptChunksReceived, 0, 'no corrupt chunk was sent');
  t.notRegex(a2.logs(), /corrupt_chunk/);
});

function victimLine(id: string): string {
  return `chunk=${id}`;
}
