import test from 'ava';
import { access, mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StoreIndex, compareVersions } from '../src/store/index-db.js';
import { ingestTar } from '../src/store/ingest.js';
import { buildManifest, generatePublisherKeys, loadPrivateKey, signManifest } from '../src/store/manifest.js';
import { Store } from '../src/store/store.js';
import type { InstallRecord } from '../src/store/types.js';
import { seededBytes, tempDir, textBytes } from './store-helpers.js';

const keys = generatePublisherKeys();

function install(name: string, version: string): InstallRecord {
  return { name, version, manifestId: 'sha256:' + '1'.repeat(64), path: `/opt/joblet/runtimes/${name}/${version}`, sizeBytes: 42, installedAt: '2025-01-01T00:00:00.000Z' };
}

test('manifests, installs and meta survive close and reopen', async (t) => {
  const dir = join(await tempDir(t, 'index'), 'index');
  let index = await StoreIndex.open(dir);
  const m = buildManifest({ name: 'demo', version: '1.0.0' }, {
    entries: { count: 1, size: 5, sha256: 'e'.repeat(64), chunks: [{ id: 'sha256:' + 'f'.repeat(64), size: 5, storedSize: 5, codec: 'raw' }] },
    content: { size: 0, chunks: [] },
  }, keys.publicKey);
  const sm = signManifest(m, loadPrivateKey(keys.privatePem));
  await index.putManifest(sm);
  for (const [n, v] of [['python', '3.10.0'], ['java', '21'], ['python', '3.9.1'], ['python', '3.12.0']] as const) {
    await index.putInstall(install(n, v));
  }
  await index.putMeta('progress/x', { have: [1, 2, 3] });
  await index.close();

  index = await StoreIndex.open(dir);
  t.teardown(() => index.close());
  t.deepEqual(await index.getManifest(sm.id), sm);
  t.is(await index.getManifest('sha256:' + '0'.repeat(64)), undefined);
  t.deepEqual(await index.listManifests(), [sm]);
  t.deepEqual((await index.listInstalls()).map((r) => `${r.name}@${r.version}`), ['java@21', 'python@3.9.1', 'python@3.10.0', 'python@3.12.0']);
  t.deepEqual(await index.getInstall('java', '21'), install('java', '21'));
  t.deepEqual(await index.getMeta('progress/x'), { have: [1, 2, 3] });
  t.is(await index.getMeta('absent'), undefined);

  await index.deleteInstall('java', '21');
  await index.deleteManifest(sm.id);
  await index.deleteMeta('progress/x');
  t.is(await index.getInstall('java', '21'), undefined);
  t.deepEqual(await index.listManifests(), []);
  t.is(await index.getMeta('progress/x'), undefined);
});

test('compareVersions orders numeric parts numerically', (t) => {
  t.true(compareVersions('1.10.0', '1.9.0') > 0);
  t.true(compareVersions('1.0', '1.0.1') < 0);
  t.is(compareVersions('2.0.0', '2.0.0'), 0);
});

test('a second open of the same index fails with a sentence naming the dir', async (t) => {
  const dir = join(await tempDir(t, 'lock'), 'index');
  const index = await StoreIndex.open(dir);
  t.teardown(() => index.close());
  await t.throwsAsync(StoreIndex.open(dir), { message: new RegExp(`cannot open the store index at ${dir}`) });
});

test('gc removes only unreferenced chunks and stale temp files, and leaves foreign files alone', async (t) => {
  const dataDir = await tempDir(t, 'gc');
  const store = await Store.open(dataDir);
  t.teardown(() => store.close());

  const kept = await ingestTar([textBytes(3_000_000), seededBytes('gc-kept', 3_000_000)], store.chunks);
  const dropped = await ingestTar([seededBytes('gc-dropped', 5_000_000)], store.chunks);
  const sm = signManifest(
    buildManifest({ name: 'kept', version: '1' }, {
      entries: { count: 1, size: kept.chunks[0]!.size, sha256: 'e'.repeat(64), chunks: kept.chunks.slice(0, 1) },
      content: { size: kept.size - kept.chunks[0]!.size, chunks: kept.chunks.slice(1) },
    }, keys.publicKey),
    loadPrivateKey(keys.privatePem),
  );
  await store.index.putManifest(sm);

  const hexDir = join(store.chunks.dir, 'ab');
  const staleTemp = join(hexDir, 'c'.repeat(62) + '.tmp-1-0');
  const youngTemp = join(hexDir, 'c'.repeat(62) + '.tmp-1-1');
  const foreign = join(hexDir, 'README');
  await mkdir(hexDir, { recursive: true });
  for (const f of [staleTemp, youngTemp, foreign]) await writeFile(f, 'x');
  const old = new Date(Date.now() - 5 * 60_000);
  await utimes(staleTemp, old, old);
  await utimes(foreign, old, old);

  // Within the grace period nothing unreferenced but the stale temp file goes.
  const early = await store.gc();
  t.is(early.removed, 1);

  const usageBefore = await store.chunks.usage();
  const result = await store.gc({ graceMs: 0 });
  const droppedIds = new Set(dropped.chunks.map((c) => c.id));
  t.is(result.removed, droppedIds.size + 1); // + the young temp file, no longer young with graceMs 0
  const usageAfter = await store.chunks.usage();
  t.is(usageBefore.bytes - usageAfter.bytes, result.bytes - 1);
  for (const c of kept.chunks) t.true(await store.chunks.has(c.id));
  for (const id of droppedIds) t.false(await store.chunks.has(id));
  await t.notThrowsAsync(access(foreign));
});
