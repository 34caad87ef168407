// Eviction under a budget (src/store/gc.ts) on a real store: real chunk files, a real level index.
import test from 'ava';
import { access, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { evict, ownUsage, supersededManifests } from '../src/store/gc.js';
import { buildManifest, generatePublisherKeys, loadPrivateKey, signManifest } from '../src/store/manifest.js';
import { Store } from '../src/store/store.js';
import type { ChunkRef, SignedManifest } from '../src/store/types.js';
import { seededBytes, tempDir } from './store-helpers.js';

const keys = generatePublisherKeys();
const KiB = 1024;

function manifestOf(name: string, version: string, createdAt: string, chunks: ChunkRef[]): SignedManifest {
  // Real chunk refs in the content part; the entry list is not read by GC.
  const m = buildManifest({ name, version }, {
    entries: { count: 1, size: chunks[0]!.size, sha256: 'e'.repeat(64), chunks: [chunks[0]!] },
    content: { size: chunks.slice(1).reduce((n, c) => n + c.size, 0), chunks: chunks.slice(1) },
  }, keys.publicKey, new Date(createdAt));
  return signManifest(m, loadPrivateKey(keys.privatePem));
}

const exists = (p: string) => access(p).then(() => true, () => false);

test('GC removes garbage first, then superseded manifests oldest first, never a protected or shared chunk', async (t) => {
  const store = await Store.open(await tempDir(t, 'gc'));
  t.teardown(() => store.close());
  const put = async (seed: string) => (await store.chunks.put(seededBytes(seed, 300 * KiB))).ref;
  const [shared, old1, old2, mid1, cur1, bar1, barOld1, garbage] = await Promise.all(
    ['shared', 'old1', 'old2', 'mid1', 'cur1', 'bar1', 'barOld1', 'garbage'].map(put));

  // foo@1.0 published three times; bar@1.0 twice, its older manifest being downloaded (protected).
  const fooOld = manifestOf('foo', '1.0', '2026-01-01T00:00:00Z', [shared, old1, old2]);
  const fooMid = manifestOf('foo', '1.0', '2026-02-01T00:00:00Z', [shared, mid1]);
  const fooCur = manifestOf('foo', '1.0', '2026-03-01T00:00:00Z', [shared, cur1]);
  const barOld = manifestOf('bar', '1.0', '2026-01-01T00:00:00Z', [barOld1, bar1]);
  const bar = manifestOf('bar', '1.0', '2026-02-01T00:00:00Z', [bar1]);
  for (const sm of [fooOld, fooMid, fooCur, barOld, bar]) await store.index.putManifest(sm);
  t.deepEqual(supersededManifests(await store.index.listManifests()).map((s) => s.id).sort(), [fooOld.id, fooMid.id, barOld.id].sort());
  t.is(supersededManifests(await store.index.listManifests())[2]!.id, fooMid.id, 'oldest first');

  // A foreign file in the chunks dir, a stale temp file and a fresh one.
  await writeFile(join(store.chunks.dir, 'notes.txt'), 'not ours');
  const staleTemp = `${store.chunks.pathOf(cur1.id)}.tmp-1-1`;
  const freshTemp = `${store.chunks.pathOf(cur1.id)}.tmp-1-2`;
  await writeFile(staleTemp, Buffer.alloc(10 * KiB));
  await writeFile(freshTemp, Buffer.alloc(10 * KiB));
  const hourAgo = new Date(Date.now() - 3_600_000);
  await utimes(staleTemp, hourAgo, hourAgo);

  const before = await ownUsage(store);
  t.is(before.chunks, 8);
  t.is(before.tempBytes, 20 * KiB);
  const chunkFile = (id: string) => store.chunks.pathOf(id);

  // No pressure: only garbage goes.
  const protect = new Set([fooCur.id, barOld.id]);
  const r1 = await evict(store, { protect, targetBytes: Infinity });
  t.deepEqual(r1.manifests, []);
  t.is(r1.files, 2, 'the unreferenced chunk and the stale temp file');
  t.false(await exists(chunkFile(garbage.id)));
  t.false(await exists(staleTemp));
  t.true(await exists(freshTemp));
  t.true(await exists(join(store.chunks.dir, 'notes.txt')), 'foreign files are never touched');
  t.is(r1.after.bytes, (await ownUsage(store)).bytes);

  // Pressure of one byte: the oldest superseded manifest goes, with its unshared chunks only.
  const r2 = await evict(store, { protect, targetBytes: r1.after.bytes - 1 });
  t.deepEqual(r2.manifests.map((m) => m.id), [fooOld.id]);
  t.is(r2.bytes, (old1.storedSize + 12) + (old2.storedSize + 12));
  t.false(await exists(chunkFile(old1.id)));
  t.false(await exists(chunkFile(old2.id)));
  t.true(await exists(chunkFile(shared.id)), 'a chunk a kept manifest references stays');
  t.is(await store.index.getManifest(fooOld.id), undefined, 'dropped from the index, so the catalog stops listing it');

  // Pressure beyond anything GC may free: every superseded manifest that is not protected goes, nothing else.
  const r3 = await evict(store, { protect, targetBytes: 0 });
  t.deepEqual(r3.manifests.map((m) => m.id), [fooMid.id]);
  t.false(await exists(chunkFile(mid1.id)));
  for (const c of [shared, cur1, bar1, barOld1]) t.true(await exists(chunkFile(c.id)), `${c.id} is protected or referenced`);
  t.truthy(await store.index.getManifest(barOld.id), 'a protected superseded manifest stays');
  t.deepEqual((await store.index.listManifests()).map((s) => s.id).sort(), [fooCur.id, barOld.id, bar.id].sort());
  t.is(r3.after.chunks, 4);
});
