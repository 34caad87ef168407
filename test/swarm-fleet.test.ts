// Several real agent processes on 127.0.0.1 forming one fleet.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, startFleet, startAgent, joinFleet, waitFor, comparable, type AgentHandle } from './helpers/agent.js';
import { makeRuntimeTree, tarGzWithTopDir, seededBytes } from './helpers/fixtures.js';

async function installed(a: AgentHandle, name: string, version: string): Promise<boolean> {
  const list = await a.json(['list']);
  return list.some((r: any) => r.name === name && r.version === version);
}

test('five agents: a runtime published on one is installed on all, identical trees', async (t) => {
  const root = await tmpDir(t);
  const fleet = await startFleet(t, root, 5);
  const src = path.join(root, 'pkg', 'fleetrt-1.0.0');
  await makeRuntimeTree(src, { name: 'fleetrt', version: '1.0.0', bulkBytes: 12 * 1024 * 1024 });
  const pkg = path.join(root, 'fleetrt.tgz');
  await tarGzWithTopDir(src, pkg);
  const pub = await fleet[0].json(['publish', pkg]);
  await Promise.all(fleet.map((a) => waitFor(`fleetrt on ${a.dir}`, () => installed(a, 'fleetrt', '1.0.0'), 90_000)));
  const reference = await comparable(path.join(fleet[0].runtimesDir, 'fleetrt', '1.0.0'));
  for (const a of fleet.slice(1)) {
    t.deepEqual(await comparable(path.join(a.runtimesDir, 'fleetrt', '1.0.0')), reference);
    const list = await a.json(['list']);
    t.is(list[0].manifestId, pub.manifestId);
  }
  // The fleet view converges: the publisher sees every host announce the runtime installed.
  const st = await waitFor('fleet view', async () => {
    const s = await fleet[0].json(['status']);
    const entry = s.swarm.fleet.find((f: any) => f.manifestId === pub.manifestId);
    return entry?.hosts.length === 5 ? s : null;
  }, 60_000);
  t.true(st.swarm.peers.length >= 1);
  t.true(st.swarm.peers.some((p: any) => typeof p.rttMs === 'number'));
  // Chunks came from more than the publisher alone across the fleet.
  const served = await Promise.all(fleet.slice(1).map(async (a) => (await a.json(['status'])).swarm.uploads.chunksServed));
  t.log(`chunks served by non-publishers: ${served.join(', ')}`);
});

test('a stranger with another fleet key never connects; an untrusted publisher is never installed', async (t) => {
  const root = await tmpDir(t);
  const [a, b] = await startFleet(t, root, 2);
  const addr = (await a.json(['status'])).addresses[0];
  // A stranger: its own fleet key, bootstrapped straight at the fleet.
  const stranger = await startAgent(t, path.join(root, 'stranger'), ['--bootstrap', addr]);
  // A member with the right fleet key whose own publisher key nobody trusts.
  const rogue = await joinFleet(t, a, path.join(root, 'rogue'), addr);
  const src = path.join(root, 'rogue-pkg');
  await makeRuntimeTree(src, { name: 'rogue', version: '6.6.6', bulkBytes: 1024 * 1024 });
  const sv = path.join(root, 'stranger-pkg');
  await makeRuntimeTree(sv, { name: 'strange', version: '1.0.0', bulkBytes: 1024 * 1024 });
  await rogue.json(['publish', src]);
  await stranger.json(['publish', sv]);
  // Give gossip and anti-entropy several rounds.
  await waitFor('rogue connected', async () => (await rogue.json(['status'])).swarm.peers.length >= 1);
  await new Promise((r) => setTimeout(r, 8000));
  const strangerId = (await stranger.json(['status'])).peerId;
  for (const x of [a, b]) {
    const s = await x.json(['status']);
    t.false(s.swarm.peers.some((p: any) => p.peerId === strangerId));
    t.deepEqual((await x.json(['list'])).map((r: any) => r.name), []);
  }
  const ss = await stranger.json(['status']);
  t.deepEqual(ss.swarm.peers, [], 'the stranger has no connection');
  // a learns of the rogue's manifest by anti-entropy, one peer per round in turn (its gossip announcement is
  // dropped by the validator): under load that can take more rounds than the 8 s above.
  t.true(await waitFor('a to refuse the rogue manifest', async () => /rogue|not a trusted publisher/.test(a.logs()) || undefined, 60_000), a.logs());
  t.deepEqual((await a.json(['list'])).map((r: any) => r.name), []);
});

test('a peer serving corrupt chunks does not stop others from installing correct bytes, and is avoided', async (t) => {
  const root = await tmpDir(t);
  const [a, bad] = await startFleet(t, root, 2, { env: (i) => (i === 1 ? { JOBLET_AGENT_TEST_FAULT: 'corrupt' } : undefined) });
  const src = path.join(root, 'pkg');
  await makeRuntimeTree(src, { name: 'clean', version: '1.0.0', bulkBytes: 8 * 1024 * 1024 });
  await a.json(['publish', src]);
  await waitFor('the bad peer installs from the publisher', () => installed(bad, 'clean', '1.0.0'));
  // A newcomer that meets the bad peer first.
  const badAddr = (await bad.json(['status'])).addresses[0];
  const c = await joinFleet(t, a, path.join(root, 'c'), badAddr);
  await waitFor('the newcomer installs', () => installed(c, 'clean', '1.0.0'), 90_000);
  t.deepEqual(await comparable(path.join(c.runtimesDir, 'clean', '1.0.0')), await comparable(src));
  const s = await c.json(['status']);
  t.true(s.swarm.corruptChunksReceived >= 1, 'it did ask the bad peer');
  t.regex(c.logs(), /sent a corrupt chunk/);
  const badId = (await bad.json(['status'])).peerId;
  const fromBad = s.swarm.recentTransfers[0].sources.find((x: any) => x.peer === badId);
  t.falsy(fromBad, 'no chunk from the bad peer was kept');
});

test('an agent killed mid-transfer resumes from the chunks it holds', async (t) => {
  const root = await tmpDir(t);
  // b's download is capped at 4 MiB/s, so the 40 MiB take about 10 s and a status poll (a CLI process,
  // slow on a loaded machine) cannot miss the partial state; the restarted b has no cap.
  const [a, b] = await startFleet(t, root, 2, { extra: (i) => (i === 1 ? ['--max-download-rate', '4MiB'] : []) });
  const src = path.join(root, 'pkg');
  await makeRuntimeTree(src, { name: 'resume', version: '1.0.0', bulkBytes: 1024 });
  for (let i = 0; i < 40; i++) await fs.writeFile(path.join(src, `isolated/lib/blob${i}.bin`), seededBytes(1024 * 1024, `blob${i}`));
  await a.json(['publish', src]);
  const mid = await waitFor('a partial download', async () => {
    const s = await b.json(['status']);
    const tr = s.swarm.transfers[0];
    return tr && tr.chunksHave >= 8 ? tr : null;
  }, 60_000, 50);
  b.proc.kill('SIGKILL');
  await b.stop();
  const b2 = await startAgent(t, b.dir);
  await waitFor('install after restart', () => installed(b2, 'resume', '1.0.0'), 120_000);
  const s = await b2.json(['status']);
  const tr = s.swarm.recentTransfers[0];
  t.log(`before kill: ${mid.chunksHave}/${mid.chunks}; after restart: resumed ${tr.resumedChunks}, fetched ${tr.fetchedChunks}`);
  t.true(tr.resumedChunks >= mid.chunksHave, 'chunks held before the kill are kept');
  t.is(tr.resumedChunks + tr.fetchedChunks, tr.chunks, 'nothing fetched twice after the restart');
  t.true(tr.fetchedChunks < tr.chunks);
  t.deepEqual(await comparable(path.join(b2.runtimesDir, 'resume', '1.0.0')), await comparable(src));
});

test('a late joiner installs what was published before it started; a removal reaches every agent', async (t) => {
  const root = await tmpDir(t);
  const [a, b] = await startFleet(t, root, 2);
  for (const v of ['1.0.0', '2.0.0']) {
    const src = path.join(root, `late-${v}`);
    await makeRuntimeTree(src, { name: 'late', version: v, seed: v, bulkBytes: 2 * 1024 * 1024 });
    await a.json(['publish', src]);
  }
  await waitFor('b installs both', async () => (await b.json(['list'])).length === 2);
  const addr = (await a.json(['status'])).addresses[0];
  const c = await joinFleet(t, a, path.join(root, 'late-c'), addr);
  await waitFor('the late joiner installs both', async () => (await c.json(['list'])).length === 2, 60_000);

  const res = await a.json(['remove', 'late@1.0.0']);
  t.true(res.signed);
  for (const x of [a, b, c]) {
    await waitFor(`removal on ${x.dir}`, async () => {
      const names = (await x.json(['list'])).map((r: any) => `${r.name}@${r.version}`);
      return names.length === 1 && names[0] === 'late@2.0.0';
    }, 30_000);
    t.false(await fs.stat(path.join(x.runtimesDir, 'late', '1.0.0')).then(() => true, () => false));
  }
  // An agent that was offline during the removal applies it when it comes back.
  await b.stop();
  await a.json(['remove', 'late']);
  const b2 = await startAgent(t, b.dir);
  await waitFor('offline agent applies the removal', async () => (await b2.json(['list'])).length === 0, 30_000);
});

test('a runtime for another architecture is stored and announced but installed nowhere, and status says why', async (t) => {
  const root = await tmpDir(t);
  const [a, b] = await startFleet(t, root, 2);
  const src = path.join(root, 'foreign');
  await makeRuntimeTree(src, { name: 'foreign', version: '1.0.0', bulkBytes: 1024 * 1024 });
  const other = process.arch === 'arm64' ? 'amd64' : 'arm64';
  await fs.appendFile(path.join(src, 'runtime.yml'), `requirements:\n  architectures: [${other}]\n`);
  const pub = await a.json(['publish', src]);
  t.is(pub.path, null, 'the publisher does not install it either');
  t.deepEqual(await a.json(['list']), []);
  const entry = await waitFor('b learns the manifest', async () => {
    const s = await b.json(['status']);
    return s.swarm.fleet.find((f: any) => f.manifestId === pub.manifestId && f.skippedHere);
  });
  t.regex(entry.skippedHere, new RegExp(`requires ${other}`));
  t.false(entry.installedHere);
  t.deepEqual(await b.json(['list']), []);
  t.deepEqual(await fs.readdir(b.runtimesDir).then((d) => d.filter((x) => !x.startsWith('.'))), []);
  t.regex(b.logs(), /skipped name=foreign version=1\.0\.0 .*reason="requires/);
});
