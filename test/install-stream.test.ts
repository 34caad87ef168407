// Schema 2 end to end without a network: a package ingested as entry list + content chunks, installed again
// from a live chunk feed that receives the chunks out of order (as a swarm delivers them), from the store,
// and what a rebuild with new mtimes costs in new chunks.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Store } from '../src/store/store.js';
import { manifestChunks, signManifest } from '../src/store/manifest.js';
import { CorruptChunkError, type SignedManifest } from '../src/store/types.js';
import { installManifest } from '../src/agent/install/install-manifest.js';
import { LiveChunkSource } from '../src/agent/install/chunk-source.js';
import { Download, type DownloadHost } from '../src/agent/swarm/download.js';
import { tmpDir, execFileP, comparable, listAll } from './helpers/agent.js';
import { makeRuntimeTree, seededBytes } from './helpers/fixtures.js';
import { deliver, leftovers, privateKey, publisherAndReceiver, publishInto } from './helpers/streaming.js';

async function fixture(t: any, bulkBytes = 6 * 1024 * 1024) {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await makeRuntimeTree(src, { name: 'streamed', version: '1.0.0', bulkBytes });
  const pkg = path.join(dir, 'pkg.tar.gz');
  await execFileP('tar', ['czf', pkg, '-C', src, '.']);
  return { dir, src, pkg, ...(await publisherAndReceiver(t, dir, pkg)) };
}

test('a manifest holds an entry list and content chunks; chunks arriving out of order install the same tree', async (t) => {
  const { src, pubStore, store, sm, ctx } = await fixture(t);
  const refs = manifestChunks(sm.manifest);
  t.true(sm.manifest.entries.chunks.length >= 1);
  t.true(sm.manifest.content.chunks.length >= 3, `${sm.manifest.content.chunks.length} content chunks`);
  // Every regular file's bytes, and nothing else, are in the content stream.
  const files = (await listAll(src)).map((p) => path.join(src, p));
  let fileBytes = 0;
  for (const f of files) {
    const st = await fs.lstat(f);
    if (st.isFile() && st.nlink === 1) fileBytes += st.size;
  }
  // The hardlinked pair is counted once: its second entry is a link.
  const linked = (await fs.lstat(path.join(src, 'isolated/usr/bin/tool'))).size;
  t.is(sm.manifest.content.size, fileBytes + linked);

  const feed = new LiveChunkSource(store.chunks, refs, () => false, 2 * 1024 * 1024);
  const installing = installManifest(ctx, sm, { source: feed });
  // Reverse order: the entry list comes last, so the install can take nothing until the very last delivery, and
  // the content that waits for it overflows the small memory allowance (2 MiB): some chunks are read back.
  for (const ref of [...refs].reverse()) await deliver(pubStore, store, feed, ref.id);
  const rec = await installing;
  t.truthy(rec);
  t.deepEqual(await comparable(rec!.path), await comparable(src));
  t.true(feed.readBack > 0, 'chunks that did not fit in memory were read back from the store');
});

test('in-order arrivals are extracted as they come, without reading anything back', async (t) => {
  const { src, pubStore, store, sm, ctx } = await fixture(t);
  const refs = manifestChunks(sm.manifest);
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest(ctx, sm, { source: feed });
  for (const ref of refs) {
    await deliver(pubStore, store, feed, ref.id);
    await new Promise((r) => setTimeout(r, 5));
  }
  const rec = await installing;
  t.deepEqual(await comparable(rec!.path), await comparable(src));
  t.is(feed.readBack, 0);
});

test('a corrupt chunk from a peer is refused before the install sees it; the good copy completes the install', async (t) => {
  const { src, pubStore, store, sm, ctx } = await fixture(t);
  const refs = manifestChunks(sm.manifest);
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest(ctx, sm, { source: feed });
  const victim = sm.manifest.content.chunks[1]!;
  for (const ref of refs) {
    if (ref.id === victim.id) {
      const stored = await pubStore.chunks.getStored(ref.id);
      const bad = Buffer.from(stored.data);
      bad[bad.length >> 1]! ^= 0xff;
      await t.throwsAsync(store.chunks.receive(ref.id, stored.codec, bad, stored.size), { instanceOf: CorruptChunkError });
      t.false(await store.chunks.has(ref.id), 'nothing is stored for the corrupt copy');
    }
    await deliver(pubStore, store, feed, ref.id);
  }
  const rec = await installing;
  t.deepEqual(await comparable(rec!.path), await comparable(src));
});

test('a download stopped mid-stream leaves no tree; a restart resumes from the chunks on disk', async (t) => {
  const { dir, src, pubStore, store, sm, ctx } = await fixture(t);
  const refs = manifestChunks(sm.manifest);
  const feed = new LiveChunkSource(store.chunks, refs, () => false);
  const installing = installManifest(ctx, sm, { source: feed });
  const half = Math.ceil(refs.length / 2);
  for (const ref of refs.slice(0, half)) await deliver(pubStore, store, feed, ref.id);
  feed.close(); // the agent is stopped
  await t.throwsAsync(installing, { message: /stopped/ });
  t.deepEqual(await leftovers(path.join(dir, 'runtimes')), []);

  // Restart: what is on disk counts as present; only the rest is delivered.
  const have = await Promise.all(refs.map((r) => store.chunks.has(r.id)));
  t.is(have.filter(Boolean).length, new Set(refs.slice(0, half).map((r) => r.id)).size);
  const resumed = new LiveChunkSource(store.chunks, refs, (i) => have[i]!);
  const again = installManifest(ctx, sm, { source: resumed });
  for (const [i, ref] of refs.entries()) if (!have[i]) await deliver(pubStore, store, resumed, ref.id);
  const rec = await again;
  t.deepEqual(await comparable(rec!.path), await comparable(src));
});

test('a file whose bytes do not match its digest in the entry list fails the install and leaves nothing', async (t) => {
  const { dir, pubStore, store, sm, ctx } = await fixture(t);
  // A publisher bug or a tampered list cannot get past the per-file digests: swap two content chunks'
  // order in a re-signed manifest (every chunk is still valid on its own).
  const m = structuredClone(sm.manifest);
  const c = m.content.chunks;
  [c[0], c[1]] = [c[1]!, c[0]!];
  const bad = signManifest(m, privateKey);
  for (const ref of manifestChunks(m)) {
    const stored = await pubStore.chunks.getStored(ref.id);
    await store.chunks.receive(ref.id, stored.codec, Buffer.from(stored.data), stored.size);
  }
  await t.throwsAsync(installManifest(ctx, bad), { message: /hashes to [0-9a-f]{64}, not the [0-9a-f]{64} of its entry list|ends inside|use \d+ bytes of content/ });
  t.deepEqual(await leftovers(path.join(dir, 'runtimes')), []);
});

test('a rebuild with every mtime changed shares its content chunks; one changed small file costs at most 2 new chunks', async (t) => {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await fs.mkdir(path.join(src, 'lib'), { recursive: true });
  await fs.writeFile(path.join(src, 'runtime.yml'), 'name: rebuilt\nversion: 1.0.0\n');
  // 3,000 small files (~8 KB each, 24 MB): the shape where mtimes in a tar stream used to change every chunk.
  for (let i = 0; i < 3000; i++) {
    await fs.writeFile(path.join(src, 'lib', `m${String(i).padStart(4, '0')}.py`), seededBytes(2000 + (i * 7919) % 12000, `f${i}`));
  }
  const pkg1 = path.join(dir, 'v1.tar');
  await execFileP('tar', ['cf', pkg1, '--sort=name', '-C', src, '.']);
  const store = await Store.open(path.join(dir, 'data'));
  t.teardown(() => store.close());
  const v1 = await publishInto(store, pkg1);

  // The same tree rebuilt: every mtime new, and a new version in runtime.yml.
  const later = new Date(Date.now() + 3600_000);
  for (const name of await fs.readdir(path.join(src, 'lib'))) await fs.utimes(path.join(src, 'lib', name), later, later);
  await fs.writeFile(path.join(src, 'runtime.yml'), 'name: rebuilt\nversion: 1.0.1\n');
  const pkg2 = path.join(dir, 'v2.tar');
  await execFileP('tar', ['cf', pkg2, '--sort=name', '-C', src, '.']);
  const v2 = await publishInto(store, pkg2);
  const total = (m: SignedManifest) => manifestChunks(m.manifest).reduce((n, c) => n + c.size, 0);
  const newBytes = manifestChunks(v2.sm.manifest).filter((c) => v2.created.includes(c.id)).reduce((n, c) => n + c.size, 0);
  const v1Content = new Set(v1.sm.manifest.content.chunks.map((c) => c.id));
  const sharedContent = v2.sm.manifest.content.chunks.filter((c) => v1Content.has(c.id)).length;
  t.log(`mtimes changed: ${v2.created.length} new chunks of ${manifestChunks(v2.sm.manifest).length}, ${newBytes} of ${total(v2.sm)} bytes (${(100 * newBytes / total(v2.sm)).toFixed(1)} %)`);
  t.is(sharedContent, v2.sm.manifest.content.chunks.length - 1, 'only the chunk holding runtime.yml changes');
  t.true(newBytes <= 0.1 * total(v2.sm), `${newBytes} new bytes of ${total(v2.sm)}`);

  // One small file changed (same length).
  const victim = path.join(src, 'lib', 'm1500.py');
  const bytes = await fs.readFile(victim);
  bytes[100]! ^= 0xff;
  await fs.writeFile(victim, bytes);
  const pkg3 = path.join(dir, 'v3.tar');
  await execFileP('tar', ['cf', pkg3, '--sort=name', '-C', src, '.']);
  const v3 = await publishInto(store, pkg3);
  const newContent = v3.sm.manifest.content.chunks.filter((c) => v3.created.includes(c.id)).length;
  t.log(`one file changed: ${newContent} new content chunks, ${v3.created.length} new chunks in all`);
  t.true(newContent <= 2, `${newContent} new content chunks`);
});

test('a tree left in place without its install record (a kill between the rename and the record) is replaced on the retry', async (t) => {
  const { src, pubStore, store, sm, ctx, runtimes } = await fixture(t);
  for (const ref of manifestChunks(sm.manifest)) {
    const stored = await pubStore.chunks.getStored(ref.id);
    await store.chunks.receive(ref.id, stored.codec, Buffer.from(stored.data), stored.size);
  }
  const first = await installManifest(ctx, sm);
  t.truthy(first);
  // What the kill leaves: the renamed tree, no record; and someone's stray file inside it.
  await store.index.deleteInstall('streamed', '1.0.0');
  await fs.writeFile(path.join(runtimes.pathFor('streamed', '1.0.0'), 'stray'), 'x');
  const again = await installManifest(ctx, sm);
  t.is(again?.manifestId, sm.id);
  t.deepEqual(await comparable(again!.path), await comparable(src));
  t.is((await store.index.getInstall('streamed', '1.0.0'))?.manifestId, sm.id);
});

test('a download tells have-subscribers only what its store holds: chunks found at the start and each one once written', async (t) => {
  const { pubStore, store, sm } = await fixture(t);
  const refs = manifestChunks(sm.manifest);
  t.true(refs.length >= 4);
  // One chunk already here, as after a restart.
  const first = await pubStore.chunks.getStored(refs[0]!.id);
  await store.chunks.receive(refs[0]!.id, first.codec, Buffer.from(first.data), first.size);
  let corrupt = false;
  const host = {
    store, zone: null, peerId: 'self',
    peerInfo: () => ({}),
    chunkStored: () => {},
    chunkFetching: () => {},
    peerSentCorrupt: () => { corrupt = true; },
    clientFor: () => ({
      fetch: async (id: string) => {
        const s = await pubStore.chunks.getStored(id);
        const data = Buffer.from(s.data);
        if (id === refs[2]!.id) data[data.length >> 1]! ^= 0xff; // this peer corrupts chunk 2
        return { codec: s.codec, data, size: s.size };
      },
    }),
  } as unknown as DownloadHost;
  const d = new Download(host, sm, refs.map((_, i) => i === 0));
  const fetch = (index: number) => (d as unknown as { fetch(p: string, i: number, tok: number): Promise<void> }).fetch('peer', index, 0);
  const holds = () => refs.map((_, i) => d.holds(i));
  const inStore = async () => Promise.all(refs.map((r) => store.chunks.has(r.id)));

  t.deepEqual(holds(), refs.map((_, i) => i === 0));
  await fetch(1);
  t.deepEqual(holds(), refs.map((_, i) => i <= 1));
  await fetch(2);
  t.true(corrupt, 'the corrupt copy was refused');
  t.false(d.holds(2), 'a refused chunk is not claimed');
  t.deepEqual(holds(), await inStore(), 'what subscribers are told is what the store has');
  t.false(d.holds(refs.length), 'an index past the manifest is not held');
});
