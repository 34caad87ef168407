import '../src/agent/polyfill.js';

import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import {
  CHUNK_PROTOCOL,
  ChunkBusyError,
  ChunkClient,
  ChunkMissError,
  ChunkTimeoutError,
  fetchAndStore,
  registerChunkServer,
  type ChunkServerOptions,
} from '../src/protocol/chunk-exchange.js';
import { encodeFrameHead } from '../src/protocol/frames.js';
import { ChunkStore, NEW_CHUNK_CODEC } from '../src/store/chunk-store.js';
import { CorruptChunkError } from '../src/store/types.js';
import { connectedPair, type NodePair } from './p2p-helpers.js';

const MiB = 1024 * 1024;

function sha256Id(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Random chunks of 256 KiB..4 MiB (every fourth one compressible, so both codecs travel) totalling `total`. */
async function fillStore(store: ChunkStore, total: number): Promise<string[]> {
  const ids: string[] = [];
  let made = 0;
  for (let i = 0; made < total; i++) {
    const size = Math.min(total - made, 256 * 1024 + Math.floor(Math.random() * (4 * MiB - 256 * 1024)));
    const raw = i % 4 === 3 ? Buffer.from(`line ${i} of a text file\n`.repeat(size).slice(0, size)) : randomBytes(size);
    const { ref } = await store.put(raw);
    ids.push(ref.id);
    made += size;
  }
  return ids;
}

async function serve(t: ExecutionContext, pair: NodePair, opts: ChunkServerOptions) {
  const server = await registerChunkServer(pair.server, pair.serverStore, opts);
  t.teardown(() => server.close());
  return server;
}

function client(t: ExecutionContext, pair: NodePair, maxInFlight: number, timeoutMs?: number): ChunkClient {
  const c = new ChunkClient(pair.client, pair.server.peerId, { maxInFlight, timeoutMs });
  t.teardown(() => c.close());
  return c;
}

async function fileCount(dir: string): Promise<number> {
  let n = 0;
  for (const sub of await readdir(dir)) n += (await readdir(join(dir, sub))).length;
  return n;
}

test('64 MiB of chunks transfer with several requests in flight and verify on arrival', async (t) => {
  const pair = await connectedPair(t, 'bulk');
  const ids = await fillStore(pair.serverStore, 64 * MiB);
  const server = await serve(t, pair, { maxConcurrentUploads: 8 });
  const c = client(t, pair, 4);

  const transfers = ids.map((id) => fetchAndStore(c, pair.clientStore, id));
  // fetch() takes its slot synchronously: the first four requests are on the wire together.
  t.is(c.stats().inFlight, 4);
  const refs = await Promise.all(transfers);

  t.deepEqual(refs.map((r) => r.id), ids);
  t.true(refs.some((r) => r.codec === NEW_CHUNK_CODEC) && refs.some((r) => r.codec === 'raw'));
  let total = 0;
  for (const id of ids) {
    const bytes = await pair.clientStore.get(id);
    t.is(sha256Id(bytes), id);
    total += bytes.length;
  }
  t.is(total, 64 * MiB);

  const stored = refs.reduce((sum, r) => sum + r.storedSize, 0);
  const stats = c.stats();
  t.is(stats.chunks, ids.length);
  t.is(stats.bytesReceived, stored);
  t.is(stats.errors + stats.busy + stats.misses, 0);
  t.true(stats.throughputBps > 0);
  const served = server.stats();
  t.is(served.bytesServed, stored);
  t.is(served.perPeer.get(pair.client.peerId.toString())?.chunks, ids.length);
  t.is(served.activeUploads, 0);
  t.log(`64 MiB in ${ids.length} chunks, client-measured rate ${(stats.throughputBps / 1e6).toFixed(0)} MB/s`);
});

test('a peer serving corrupt bytes makes fetchAndStore throw CorruptChunkError and nothing is written', async (t) => {
  const pair = await connectedPair(t, 'corrupt');
  const ids = await fillStore(pair.serverStore, 2 * MiB);
  await serve(t, pair, {
    maxConcurrentUploads: 4,
    faultHook: (_id, data) => {
      const bad = Buffer.from(data);
      bad[bad.length >> 1]! ^= 0x01;
      return bad;
    },
  });
  const c = client(t, pair, 2);

  for (const id of ids) {
    await t.throwsAsync(fetchAndStore(c, pair.clientStore, id), { instanceOf: CorruptChunkError });
    t.false(await pair.clientStore.has(id));
  }
  t.is(await fileCount(pair.clientStore.dir), 0);
});

test('garbage on a stream makes the server reset that stream and keep serving others', async (t) => {
  const pair = await connectedPair(t, 'garbage');
  // One chunk of a known size (fillStore cuts random sizes, so its first chunk may be shorter than the total).
  const id = (await pair.serverStore.put(randomBytes(300 * 1024))).ref.id;
  const server = await serve(t, pair, { maxConcurrentUploads: 4 });
  const c = client(t, pair, 2);
  await fetchAndStore(c, pair.clientStore, id);

  const junkStreams = [
    Buffer.from('\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n', 'latin1'), // header length 4 GiB
    Buffer.concat([encodeFrameHead({ t: 'get', rid: 1, id: 'sha256:nope' }, 0)]), // valid frame, invalid message
    encodeFrameHead({ t: 'get', rid: 1, id }, 1000), // a request with a payload, which requests never have
  ];
  for (const junk of junkStreams) {
    const raw = await pair.client.dialProtocol(pair.server.peerId, CHUNK_PROTOCOL);
    raw.send(junk);
    const ended = await (async () => {
      try {
        for await (const _ of raw) return 'got data';
        return 'closed cleanly';
      } catch (err) {
        return (err as Error).name;
      }
    })();
    t.is(ended, 'StreamResetError');
  }
  t.is(server.stats().protocolErrors, junkStreams.length);

  // The long-lived client stream was untouched, and new streams work too.
  const again = await c.fetch(id);
  t.is(again.size, 300 * 1024);
  const fresh = client(t, pair, 1);
  t.is((await fresh.fetch(id)).size, 300 * 1024);
});

test('with one upload slot, a second client is told busy while the first is served', async (t) => {
  const pair = await connectedPair(t, 'busy');
  const ids = await fillStore(pair.serverStore, 1 * MiB);
  const server = await serve(t, pair, {
    maxConcurrentUploads: 1,
    // Slow serving keeps the single slot taken long enough for the second request to arrive.
    faultHook: async (_id, data) => {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return data;
    },
  });
  const first = client(t, pair, 1);
  const second = client(t, pair, 1);

  const slow = fetchAndStore(first, pair.clientStore, ids[0]!);
  // Wait until the first request holds the only slot, however slow this machine is.
  while (server.stats().activeUploads === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const err = await t.throwsAsync(second.fetch(ids[0]!), { instanceOf: ChunkBusyError });
  t.is(err!.peerId, pair.server.peerId.toString());
  t.is((await slow).id, ids[0]);
  t.is(second.stats().busy, 1);
  t.is(server.stats().perPeer.get(pair.client.peerId.toString())?.busy, 1);
  // Once the slot is free the same client is served.
  t.is((await second.fetch(ids[0]!)).data.length, (await pair.serverStore.getStored(ids[0]!)).data.length);
});

test('a missing chunk is a ChunkMissError; a stalled answer times out and the client re-opens the stream', async (t) => {
  const pair = await connectedPair(t, 'miss');
  const ids = await fillStore(pair.serverStore, 600 * 1024);
  let stall = true;
  await serve(t, pair, {
    maxConcurrentUploads: 4,
    faultHook: async (_id, data) => {
      if (stall) await new Promise((resolve) => setTimeout(resolve, 5000));
      return data;
    },
  });
  const c = client(t, pair, 2, 1500);

  const absent = sha256Id(Buffer.from('not stored anywhere'));
  await t.throwsAsync(c.fetch(absent), { instanceOf: ChunkMissError });

  await t.throwsAsync(c.fetch(ids[0]!), { instanceOf: ChunkTimeoutError });
  stall = false;
  const ref = await fetchAndStore(c, pair.clientStore, ids[0]!);
  t.is(ref.id, ids[0]);
  t.is(c.stats().misses, 1);
  t.is(c.stats().errors, 1);
});
