// LiveChunkSource's memory: which chunks that arrive ahead of the install are kept, and which are read back.
import test from 'ava';
import { createHash } from 'node:crypto';

import { LiveChunkSource } from '../src/agent/install/chunk-source.js';
import type { ChunkStore } from '../src/store/chunk-store.js';
import type { ChunkRef } from '../src/store/types.js';

function chunk(n: number): { ref: ChunkRef; raw: Buffer } {
  const raw = Buffer.alloc(100, n);
  return { ref: { id: `sha256:${createHash('sha256').update(raw).digest('hex')}`, size: 100, storedSize: 100, codec: 'raw' }, raw };
}

/** A store that only answers read-backs, and records them. */
function fakeStore(chunks: { ref: ChunkRef; raw: Buffer }[]) {
  const readBacks: number[] = [];
  const store = {
    async get(id: string): Promise<Buffer> {
      const i = chunks.findIndex((c) => c.ref.id === id);
      readBacks.push(i);
      return chunks[i]!.raw;
    },
  } as unknown as ChunkStore;
  return { store, readBacks };
}

/** get(index) once the install would call it; resolves with the chunk's first byte, to check what came back. */
const take = async (feed: LiveChunkSource, index: number): Promise<number> => (await feed.get(index))[0]!;

test('a full cache keeps the chunks the install reaches first: a nearer arrival evicts the one kept farthest ahead', async (t) => {
  const chunks = [0, 1, 2, 3, 4, 5].map(chunk);
  const refs = chunks.map((c) => c.ref);
  const { store, readBacks } = fakeStore(chunks);
  // Room for one chunk.
  const feed = new LiveChunkSource(store, refs, () => false, 100);
  const arrive = (i: number) => feed.arrived(chunks[i]!.ref.id, chunks[i]!.raw);

  const first = take(feed, 0); // the install waits for chunk 0
  arrive(5); // kept: there is room
  arrive(2); // nearer than 5: evicts it
  arrive(0);
  t.is(await first, 0);
  const second = take(feed, 1);
  arrive(1);
  t.is(await second, 1);
  t.is(await take(feed, 2), 2, 'chunk 2 comes from memory');
  arrive(4); // the cache is empty again
  const fourth = take(feed, 3);
  arrive(3);
  t.is(await fourth, 3);
  t.is(await take(feed, 4), 4);
  t.is(await take(feed, 5), 5);
  // Only the chunk that was evicted for a nearer one is read back. Keeping whatever came first would have kept
  // chunk 5 and read back 2 and 4.
  t.deepEqual(readBacks, [5]);
  t.is(feed.readBack, 1);
});

test('an arrival farther ahead than everything in a full cache is not kept; a chunk used twice stays for its second use', async (t) => {
  const chunks = [0, 1, 2, 3].map(chunk);
  // Chunk 1's bytes are used again at index 4.
  const refs = [...chunks.map((c) => c.ref), chunks[1]!.ref];
  const { store, readBacks } = fakeStore(chunks);
  const feed = new LiveChunkSource(store, refs, () => false, 100);
  const arrive = (i: number) => feed.arrived(chunks[i]!.ref.id, chunks[i]!.raw);

  const first = take(feed, 0);
  arrive(1);
  arrive(3); // farther than chunk 1, and no room: not kept
  arrive(2); // farther than chunk 1 too
  arrive(0);
  t.is(await first, 0);
  t.is(await take(feed, 1), 1, 'from memory');
  t.is(await take(feed, 2), 2, 'read back');
  t.is(await take(feed, 3), 3, 'read back');
  t.is(await take(feed, 4), 1, 'chunk 1 again, still in memory');
  t.deepEqual(readBacks, [2, 3]);
});

test('the time the install waited for chunks that had not arrived is counted', async (t) => {
  const chunks = [0].map(chunk);
  const { store } = fakeStore(chunks);
  const feed = new LiveChunkSource(store, chunks.map((c) => c.ref), () => false);
  const waiting = take(feed, 0);
  await new Promise((r) => setTimeout(r, 60));
  feed.arrived(chunks[0]!.ref.id, chunks[0]!.raw);
  await waiting;
  t.true(feed.waitedMs >= 50, `waited ${feed.waitedMs} ms`);
});

test('nothing is evicted for an arrival that would not fit even then', async (t) => {
  // Sizes 60, 60 and 100 bytes, room for 120: chunk 2 arrives needing 100 with only chunk 1 (60) kept later than it.
  const sized = (n: number, size: number) => {
    const raw = Buffer.alloc(size, n);
    return { ref: { id: `sha256:${createHash('sha256').update(raw).digest('hex')}`, size, storedSize: size, codec: 'raw' as const }, raw };
  };
  const chunks = [sized(0, 10), sized(1, 60), sized(2, 100), sized(3, 60)];
  const { store, readBacks } = fakeStore(chunks);
  const feed = new LiveChunkSource(store, chunks.map((c) => c.ref), () => false, 120);
  const first = take(feed, 0);
  feed.arrived(chunks[1]!.ref.id, chunks[1]!.raw); // kept (60)
  feed.arrived(chunks[3]!.ref.id, chunks[3]!.raw); // kept (120)
  // Chunk 2 is needed before chunk 3, but evicting 3 leaves 60 + 100 > 120: chunk 3 stays, 2 is not kept.
  feed.arrived(chunks[2]!.ref.id, chunks[2]!.raw);
  feed.arrived(chunks[0]!.ref.id, chunks[0]!.raw);
  t.is(await first, 0);
  for (const i of [1, 2, 3]) t.is(await take(feed, i), i);
  t.deepEqual(readBacks, [2]);
});
