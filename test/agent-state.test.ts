// Daemon behaviour over time: replacing versions, dedup, restarts, corrupt chunks, removal, CLI contract.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startAgent, tmpDir, cli, comparable, listAll, execFileP } from './helpers/agent.js';
import { makeRuntimeTree, seededBytes } from './helpers/fixtures.js';
import { Store } from '../src/store/store.js';

test('same name@version with other content needs --force; the same content is a no-op', async (t) => {
  const dir = await tmpDir(t);
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  await makeRuntimeTree(a, { name: 'rt', version: '1.0.0', seed: 'a' });
  await makeRuntimeTree(b, { name: 'rt', version: '1.0.0', seed: 'b' });
  const agent = await startAgent(t, dir);
  const first = await agent.json(['publish', a]);
  const again = await agent.json(['publish', a]);
  t.true(again.unchanged);
  t.is(again.manifestId, first.manifestId);

  const refused = await agent.run(['publish', b]);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /rt@1\.0\.0 is already installed with different content.*--force/);
  const installed = path.join(agent.runtimesDir, 'rt', '1.0.0');
  t.deepEqual(await comparable(installed), await comparable(a), 'installed version untouched');

  const forced = await agent.json(['publish', b, '--force']);
  t.not(forced.manifestId, first.manifestId);
  t.deepEqual(await comparable(installed), await comparable(b));
  const list = await agent.json(['list']);
  t.is(list.length, 1);
  t.is(list[0].manifestId, forced.manifestId);
  t.deepEqual(await fs.readdir(path.join(agent.runtimesDir, '.joblet-agent', 'trash')).catch(() => []), []);
});

test('two versions differing in one small file share all but a few chunks', async (t) => {
  const dir = await tmpDir(t);
  const v1 = path.join(dir, 'v1');
  const v2 = path.join(dir, 'v2');
  await makeRuntimeTree(v1, { name: 'dedup', version: '1.0.0', bulkBytes: 6 * 1024 * 1024 });
  for (let i = 0; i < 6; i++) await fs.writeFile(path.join(v1, `isolated/lib/part${i}.bin`), seededBytes(1024 * 1024 + i * 4099, `part${i}`));
  // v2 is v1 as a build tool would leave it (cp -a keeps mtimes), with one small file changed.
  await execFileP('cp', ['-a', v1, v2]);
  await fs.writeFile(path.join(v2, 'runtime.yml'), (await fs.readFile(path.join(v1, 'runtime.yml'), 'utf8')).replace('1.0.0', '1.0.1'));
  await fs.writeFile(path.join(v2, 'isolated/lib/readonly.txt'), 'changed in v2\n');
  const agent = await startAgent(t, dir);
  const r1 = await agent.json(['publish', v1]);
  const r2 = await agent.json(['publish', v2]);
  t.log(`v1: ${r1.chunks} chunks; v2: ${r2.chunks} chunks, ${r2.newChunks} new, ${r2.storedNewBytes} bytes stored`);
  t.true(r1.chunks >= 6, 'the package spans several chunks');
  t.true(r2.newChunks >= 1, 'the change is stored');
  t.true(r2.newChunks <= 3, `only the chunks around the change are new (${r2.newChunks})`);
  t.true(r2.storedNewBytes < r1.storedNewBytes / 2);
});

test('state survives a restart, and a corrupt chunk file is detected', async (t) => {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await makeRuntimeTree(src, { name: 'keep', version: '3.1.4' });
  let agent = await startAgent(t, dir);
  const pub = await agent.json(['publish', src]);
  const before = await agent.json(['status']);
  t.is(await agent.stop(), 0, 'SIGTERM stops the daemon cleanly');
  agent = await startAgent(t, dir);
  const after = await agent.json(['status']);
  t.is(after.peerId, before.peerId, 'identity survives');
  t.deepEqual(after.runtimes, before.runtimes);
  t.is(after.store.chunks, before.store.chunks);
  t.is(after.runtimes[0].manifestId, pub.manifestId);

  const ok = await agent.json(['verify']);
  t.is(ok.corrupt.length, 0);
  t.is(ok.checked, before.store.chunks);

  // Flip one byte in the middle of the largest chunk file.
  const files = (await listAll(path.join(agent.dataDir, 'chunks'))).map((p) => path.join(agent.dataDir, 'chunks', p));
  const sized = await Promise.all(files.map(async (f) => ({ f, st: await fs.stat(f) })));
  const victim = sized.filter((x) => x.st.isFile()).sort((x, y) => y.st.size - x.st.size)[0].f;
  const bytes = await fs.readFile(victim);
  bytes[bytes.length >> 1] ^= 0xff;
  await fs.writeFile(victim, bytes);
  const bad = await agent.run(['verify', '--json']);
  t.is(bad.code, 1);
  const report = JSON.parse(bad.stdout);
  t.is(report.corrupt.length, 1);
  t.regex(report.corrupt[0].id, /^sha256:[0-9a-f]{64}$/);
  // The corrupt file was deleted (to be fetched again; this agent has no peer): now it is missing.
  t.false(await fs.stat(victim).then(() => true, () => false));
  const human = await agent.run(['verify']);
  t.is(human.code, 1);
  t.regex(human.stdout, /0 corrupt, 1 missing/);
});

test('remove uninstalls, frees chunks and keeps other runtimes', async (t) => {
  const dir = await tmpDir(t);
  for (const v of ['1.0.0', '2.0.0']) await makeRuntimeTree(path.join(dir, v), { name: 'gone', version: v, seed: v });
  await makeRuntimeTree(path.join(dir, 'other'), { name: 'stays', version: '1.0.0', seed: 'o' });
  const agent = await startAgent(t, dir);
  for (const p of ['1.0.0', '2.0.0', 'other']) await agent.json(['publish', path.join(dir, p)]);
  const before = await agent.json(['status']);
  const res = await agent.json(['remove', 'gone@1.0.0']);
  t.deepEqual(res.removed.map((r: any) => r.version), ['1.0.0']);
  t.true(res.freedBytes > 0);
  t.deepEqual((await agent.json(['list'])).map((r: any) => `${r.name}@${r.version}`), ['gone@2.0.0', 'stays@1.0.0']);
  await agent.json(['remove', 'gone']);
  t.deepEqual((await fs.readdir(agent.runtimesDir)).sort(), ['.joblet-agent', 'stays']);
  const after = await agent.json(['status']);
  t.true(after.store.chunks < before.store.chunks);
  const missing = await agent.run(['remove', 'gone']);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /gone is not installed/);
});

test('a removal stored before a kill, with its runtime still there, is finished at the next start', async (t) => {
  const dir = await tmpDir(t);
  await makeRuntimeTree(path.join(dir, 'gone'), { name: 'gone', version: '1.0.0', seed: 'g' });
  await makeRuntimeTree(path.join(dir, 'other'), { name: 'stays', version: '1.0.0', seed: 'o' });
  let agent = await startAgent(t, dir);
  for (const p of ['gone', 'other']) await agent.json(['publish', path.join(dir, p)]);
  t.is(await agent.stop(), 0);
  // What a kill right after the tombstone was stored leaves: the tombstone, and the manifest and tree it covers.
  const store = await Store.open(agent.dataDir);
  await store.index.putMeta('tombstones', [{ removal: { name: 'gone', version: '1.0.0', createdAt: new Date().toISOString(), publisher: 'local' }, signature: null }]);
  t.is((await store.index.listManifests()).length, 2);
  await store.close();
  agent = await startAgent(t, dir);
  t.deepEqual((await agent.json(['list'])).map((r: any) => `${r.name}@${r.version}`), ['stays@1.0.0']);
  t.deepEqual((await fs.readdir(agent.runtimesDir)).sort(), ['.joblet-agent', 'stays']);
  const st = await agent.json(['status']);
  t.deepEqual(st.swarm.fleet.map((m: any) => m.name), ['stays']);
  t.regex(agent.logs(), /removed.*gone@1\.0\.0/);
});

test('CLI contract: no daemon, usage errors, socket mode', async (t) => {
  const dir = await tmpDir(t);
  const down = await cli(['list', '--socket', path.join(dir, 'none.sock')]);
  t.is(down.code, 1);
  t.regex(down.stderr, /no joblet-agent daemon is listening on .*none\.sock.*joblet-agent start/);
  t.is(down.stderr.trim().split('\n').length, 1);

  t.is((await cli(['frobnicate'])).code, 2);
  t.is((await cli(['list', '--bogus'])).code, 2);
  t.is((await cli(['publish'])).code, 2);

  const agent = await startAgent(t, dir);
  t.is((await fs.stat(agent.socket)).mode & 0o777, 0o660);
  const second = await cli(['start', '--config', agent.config]);
  t.is(second.code, 1, 'a second daemon on the same socket is refused');
  t.regex(second.stderr, /already listening|in use/);
  const noKey = await cli(['init', '--dir', path.join(dir, 'etc')]);
  t.is(noKey.code, 1, 'init never overwrites keys');
  t.regex(noKey.stderr, /already exists/);
});
