// LiveChunkSource: the install takes the entry list's chunks in order and the content chunks in arrival order;
// which arrivals wait in memory, and which are read back from the store.
import test from 'ava';
import { createHash } from 'node:crypto';

import { LiveChunkSource } from '../src/agent/install/chunk-source.js';
import type { ChunkStore } from '../src/store/chunk-store.js';
import type { ChunkRef } from '../src/store/types.js';

function chunk(n: number): { ref: ChunkRef; raw: Buffer } {
  const raw = Buffer.alloc(100, n);
  return { ref: { id: `sha256:${createHash('sha256').update(raw).digest('hex')}`, size: 100, storedSize: 100, codec: 'raw' }, raw };
}

/** A store that only answers read-backs, and records them; `own`: which chunks it reads into buffers of their own. */
function fakeStore(chunks: { ref: ChunkRef; raw: Buffer }[], own: (i: number) => boolean = () => false) {
  const readBacks: number[] = [];
  const store = {
    async read(id: string): Promise<{ raw: Buffer; own: boolean }> {
      const i = chunks.findIndex((c) => c.ref.id === id);
      readBacks.push(i);
      return { raw: chunks[i]!.raw, own: own(i) };
    },
  } as unknown as ChunkStore;
  return { store, readBacks };
}

/** Everything `each` yields for [from, end), as [index, first byte] pairs, once it is done. */
async function collect(feed: LiveChunkSource, from: number, end: number): Promise<[number, number][]> {
  const out: [number, number][] = [];
  for await (const { index, raw } of feed.each(from, end)) out.push([index, raw[0]!]);
  return out;
}

test('content chunks are handed over in arrival order, those present before the download first; the entry list is left to get', async (t) => {
  const chunks = [0, 1, 2, 3, 4, 5].map(chunk);
  const { store, readBacks } = fakeStore(chunks);
  // Chunk 4 was on disk before the download started (a resume).
  const feed = new LiveChunkSource(store, chunks.map((c) => c.ref), (i) => i === 4);
  const arrive = (i: number) => feed.arrived(chunks[i]!.ref.id, chunks[i]!.raw);
  t.is(feed.cursor, 0, 'before anything, the scheduler is told the install needs chunk 0 first');
  arrive(3); // content, before the entry list
  arrive(0);
  t.is((await feed.get(0))[0], 0);
  const all = collect(feed, 1, 6);
  t.is(feed.cursor, undefined, 'content is taken in any order: no in-order preference');
  arrive(5);
  arrive(1);
  await new Promise((r) => setTimeout(r, 10));
  arrive(2);
  t.deepEqual(await all, [[4, 4], [3, 3], [5, 5], [1, 1], [2, 2]]);
  t.deepEqual(readBacks, [4], 'only the chunk present at the start is read from the store');
  t.is(feed.readBack, 0);
  t.is(feed.delivered, 6);
});

test('arrivals beyond the memory allowance are read back when their turn comes; the one the install waits for is always kept', async (t) => {
  const chunks = [0, 1, 2, 3, 4].map(chunk);
  const { store, readBacks } = fakeStore(chunks);
  // Room for two chunks of 100 bytes.
  const feed = new LiveChunkSource(store, chunks.map((c) => c.ref), () => false, 200);
  const arrive = (i: number) => feed.arrived(chunks[i]!.ref.id, chunks[i]!.raw);
  const list = feed.get(0);
  arrive(1);
  arrive(2);
  arrive(3); // no room left: not kept
  arrive(0); // the one get(0) waits for: kept although there is no room
  t.is((await list)[0], 0);
  t.deepEqual(readBacks, [], 'chunk 0 came from memory');
  const all = collect(feed, 1, 5);
  await new Promise((r) => setTimeout(r, 10));
  arrive(4);
  t.deepEqual(await all, [[1, 1], [2, 2], [3, 3], [4, 4]]);
  t.deepEqual(readBacks, [3]);
  t.is(feed.readBack, 1);
});

test('a chunk repeated in one manifest is handed over at each of its indices from one arrival', async (t) => {
  const chunks = [0, 1, 2].map(chunk);
  // Chunk 1's bytes are used again at index 3.
  const refs = [...chunks.map((c) => c.ref), chunks[1]!.ref];
  const { store, readBacks } = fakeStore(chunks);
  const feed = new LiveChunkSource(store, refs, () => false);
  const arrive = (i: number) => feed.arrived(chunks[i]!.ref.id, chunks[i]!.raw);
  arrive(0);
  await feed.get(0);
  const all = collect(feed, 1, 4);
  arrive(1);
  arrive(2);
  t.deepEqual(await all, [[1, 1], [3, 1], [2, 2]]);
  t.deepEqual(readBacks, []);
});

test('the install may release a chunk only when nothing else holds its bytes: its own decode, at one index of the manifest', async (t) => {
  const chunks = [0, 1, 2, 3, 4, 5].map(chunk);
  // Chunk 1 again at index 6; chunk 5 was on disk at the start, and the store reads it into a buffer of its own.
  const refs = [...chunks.map((c) => c.ref), chunks[1]!.ref];
  const { store } = fakeStore(chunks, (i) => i === 5);
  const feed = new LiveChunkSource(store, refs, (i) => i === 5);
  feed.arrived(chunks[0]!.ref.id, chunks[0]!.raw, true);
  await feed.get(0);
  const releasable: number[] = [];
  const all = (async () => {
    for await (const { index, release } of feed.each(1, 7)) if (release) releasable.push(index);
  })();
  feed.arrived(chunks[1]!.ref.id, chunks[1]!.raw, true); // its own, but shared by indices 1 and 6
  feed.arrived(chunks[2]!.ref.id, chunks[2]!.raw, true);
  feed.arrived(chunks[3]!.ref.id, chunks[3]!.raw, false); // the store keeps these bytes (a raw chunk)
  feed.arrived(chunks[4]!.ref.id, chunks[4]!.raw, true);
  await all;
  t.deepEqual(releasable.sort(), [2, 4, 5]);
});

test('the time the install waited for chunks is counted; stopping the download ends a waiting install', async (t) => {
  const chunks = [0, 1].map(chunk);
  const { store } = fakeStore(chunks);
  const feed = new LiveChunkSource(store, chunks.map((c) => c.ref), () => false);
  const waiting = feed.get(0);
  await new Promise((r) => setTimeout(r, 60));
  feed.arrived(chunks[0]!.ref.id, chunks[0]!.raw);
  await waiting;
  t.true(feed.waitedMs >= 50, `waited ${feed.waitedMs} ms`);
  const all = collect(feed, 1, 2);
  await new Promise((r) => setTimeout(r, 10));
  feed.close();
  await t.throwsAsync(all, { message: /stopped/ });
});

test('read-backs start two ahead of their turn', async (t) => {
  const chunks = [0, 1, 2, 3, 4, 5].map(chunk);
  const { store, readBacks } = fakeStore(chunks);
  // Room for one chunk: 1 is kept, 2 - 5 are read back.
  const feed = new LiveChunkSource(store, chunks.map((c) => c.ref), () => false, 100);
  feed.arrived(chunks[0]!.ref.id, chunks[0]!.raw);
  await feed.get(0);
  for (const i of [1, 2, 3, 4, 5]) feed.arrived(chunks[i]!.ref.id, chunks[i]!.raw);
  const seen: number[][] = [];
  for await (const { index } of feed.each(1, 6)) seen.push([index, readBacks.length]);
  // When chunk 2 is handed over, the reads of 3 and 4 have started as well.
  t.deepEqual(seen, [[1, 0], [2, 3], [3, 4], [4, 4], [5, 4]]);
  t.deepEqual(readBacks, [2, 3, 4, 5]);
});
