import test from 'ava';
import { deflateRawSync } from 'node:zlib';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_HEADER_BYTES, ChunkNotFoundError, ChunkStore, NEW_CHUNK_CODEC, sha256Id } from '../src/store/chunk-store.js';
import { CorruptChunkError } from '../src/store/types.js';
import { seededBytes, tempDir, textBytes } from './store-helpers.js';

async function newStore(t: Parameters<typeof tempDir>[0]): Promise<ChunkStore> {
  const store = new ChunkStore(join(await tempDir(t, 'chunks'), 'chunks'));
  await store.init();
  return store;
}

/** Every file under the store dir, relative paths. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) out.push(join(entry.parentPath ?? entry.path, entry.name).slice(dir.length + 1));
  }
  return out.sort();
}

test('put then get returns the same bytes; compressible data is compressed, random data kept raw', async (t) => {
  const store = await newStore(t);
  const text = textBytes(1024 * 1024);
  const random = seededBytes('store-random', 1024 * 1024);

  const a = await store.put(text);
  t.true(a.created);
  t.is(a.ref.id, sha256Id(text));
  t.is(a.ref.codec, NEW_CHUNK_CODEC);
  t.true(a.ref.storedSize < text.length / 5, `stored ${a.ref.storedSize} bytes of text`);
  t.is((await stat(store.pathOf(a.ref.id))).size, CHUNK_HEADER_BYTES + a.ref.storedSize);
  t.true((await store.get(a.ref.id)).equals(text));

  const b = await store.put(random);
  t.is(b.ref.codec, 'raw');
  t.is(b.ref.storedSize, random.length);
  t.true((await store.get(b.ref.id)).equals(random));

  // The file name is the hex hash, split after two digits.
  const hex = a.ref.id.slice('sha256:'.length);
  t.is(store.pathOf(a.ref.id), join(store.dir, hex.slice(0, 2), hex.slice(2)));

  // A second put of the same bytes writes nothing and reports the stored form.
  const again = await store.put(text);
  t.false(again.created);
  t.deepEqual(again.ref, a.ref);

  t.deepEqual(await store.usage(), {
    chunks: 2,
    bytes: 2 * CHUNK_HEADER_BYTES + a.ref.storedSize + b.ref.storedSize,
  });
  const ids: string[] = [];
  for await (const id of store.list()) ids.push(id);
  t.deepEqual(ids.sort(), [a.ref.id, b.ref.id].sort());
});

test('getStored returns the wire form, which putStored in another store accepts as-is', async (t) => {
  const source = await newStore(t);
  const target = await newStore(t);
  const text = textBytes(700_000);
  const { ref } = await source.put(text);
  const stored = await source.getStored(ref.id);
  t.is(stored.codec, NEW_CHUNK_CODEC);
  t.is(stored.size, text.length);
  t.is(stored.data.length, ref.storedSize);

  const copied = await target.putStored(ref.id, stored.codec, stored.data, stored.size);
  t.deepEqual(copied, ref);
  t.true((await readFile(target.pathOf(ref.id))).equals(await readFile(source.pathOf(ref.id))));
  t.true((await target.get(ref.id)).equals(text));
});

test('a byte flipped on disk is detected by get() with CorruptChunkError naming chunk and file', async (t) => {
  const store = await newStore(t);
  for (const data of [textBytes(500_000), seededBytes('flip', 500_000)]) {
    const { ref } = await store.put(data);
    const path = store.pathOf(ref.id);
    const handle = await open(path, 'r+');
    const at = CHUNK_HEADER_BYTES + Math.floor(ref.storedSize / 2);
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0x40;
    await handle.write(one, 0, 1, at);
    await handle.close();

    const err = await t.throwsAsync(store.get(ref.id), { instanceOf: CorruptChunkError });
    t.is(err?.chunkId, ref.id);
    t.true(err?.message.includes(ref.id) && err.message.includes(path), err?.message);
  }
});

test('a truncated or foreign file is reported as corrupt, a missing one as not found', async (t) => {
  const store = await newStore(t);
  const { ref } = await store.put(textBytes(300_000));
  await writeFile(store.pathOf(ref.id), 'not a chunk');
  await t.throwsAsync(store.get(ref.id), { instanceOf: CorruptChunkError, message: /no valid chunk header/ });

  const missing = sha256Id(Buffer.from('absent'));
  t.false(await store.has(missing));
  await t.throwsAsync(store.get(missing), { instanceOf: ChunkNotFoundError, message: /is not in the store/ });
});

test('putStored rejects bytes that do not match the id or size and writes nothing', async (t) => {
  const store = await newStore(t);
  const data = textBytes(400_000);
  const id = sha256Id(data);
  const deflated = deflateRawSync(data);

  const tampered = Buffer.from(data);
  tampered[1234] = tampered[1234]! ^ 1;
  await t.throwsAsync(store.putStored(id, 'raw', tampered, data.length), { instanceOf: CorruptChunkError, message: /hash to/ });
  await t.throwsAsync(store.putStored(id, 'deflate', deflated, data.length - 1), { instanceOf: CorruptChunkError });
  await t.throwsAsync(store.putStored(id, 'deflate', deflated.subarray(0, 1000), data.length), { instanceOf: CorruptChunkError });
  await t.throwsAsync(store.putStored(id, 'deflate', Buffer.from('garbage bytes'), data.length), { instanceOf: CorruptChunkError });
  t.false(await store.has(id));
  t.deepEqual(await filesUnder(store.dir), []);

  const ref = await store.putStored(id, 'deflate', deflated, data.length);
  t.is(ref.codec, 'deflate');
  t.true((await store.get(id)).equals(data));
});

test('writes go through temp files that never stay behind; delete removes the file', async (t) => {
  const store = await newStore(t);
  const refs = await Promise.all(
    Array.from({ length: 8 }, (_, i) => store.put(seededBytes(`temp-${i}`, 300_000 + i))),
  );
  const files = await filesUnder(store.dir);
  t.is(files.length, 8);
  for (const f of files) t.regex(f, /^[0-9a-f]{2}\/[0-9a-f]{62}$/);

  await store.delete(refs[0]!.ref.id);
  await store.delete(refs[0]!.ref.id); // absent: no error
  t.false(await store.has(refs[0]!.ref.id));
  t.is((await filesUnder(store.dir)).length, 7);
});

test('malformed chunk ids are refused before touching the disk', async (t) => {
  const store = await newStore(t);
  await t.throwsAsync(store.get('sha256:../../etc/passwd'), { message: /invalid chunk id/ });
  t.throws(() => store.pathOf('md5:abc'), { message: /invalid chunk id/ });
});

test('the last chunks written are served from memory while their files are unchanged, and read again when not', async (t) => {
  const store = await newStore(t);
  const chunks = Array.from({ length: 9 }, (_, i) => seededBytes(`recent-${i}`, 1024 * 1024));
  const ids: string[] = [];
  for (const c of chunks) ids.push((await store.receive(sha256Id(c), 'raw', c, c.length)).ref.id);

  // 9 MiB written, 8 MiB kept: the first is read from its file, the last from memory (the same buffer).
  const before = { hits: store.recent.hits, misses: store.recent.misses };
  t.true((await store.getStored(ids[0]!)).data.equals(chunks[0]!));
  t.is(store.recent.misses, before.misses + 1);
  const last = await store.getStored(ids[8]!);
  t.is(last.data, chunks[8]!, 'the kept buffer itself');
  t.is(store.recent.hits, before.hits + 1);

  // A write to the file changes its identity: the next read goes to the file, verifies it, and drops it.
  await new Promise((r) => setTimeout(r, 20)); // past the filesystem's timestamp granularity
  const handle = await open(store.pathOf(ids[8]!), 'r+');
  await handle.write(Buffer.from([0xff]), 0, 1, CHUNK_HEADER_BYTES + 10);
  await handle.close();
  await t.throwsAsync(store.getStored(ids[8]!), { instanceOf: CorruptChunkError });
  await t.throwsAsync(store.get(ids[8]!), { instanceOf: ChunkNotFoundError }, 'the corrupt file was deleted');

  // A deleted chunk is not served from memory either.
  await store.delete(ids[7]!);
  await t.throwsAsync(store.getStored(ids[7]!), { instanceOf: ChunkNotFoundError });
});
