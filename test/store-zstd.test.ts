// zstd chunks: stored, verified, served and fetched. These need a Node with zstd (22.15+); on Node 20 they are
// skipped here and run under the Node the release carries by test/zstd-shipped-node.test.ts.
import '../src/agent/polyfill.js';

import { createHash, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as zlib from 'node:zlib';

import test, { type ExecutionContext } from 'ava';

import { CHUNK_PROTOCOL, ChunkClient, fetchAndStore, registerChunkServer } from '../src/protocol/chunk-exchange.js';
import { FrameReader, FrameWriter } from '../src/protocol/frames.js';
import { ChunkStore, CHUNK_HEADER_BYTES, NEW_CHUNK_CODEC } from '../src/store/chunk-store.js';
import { releaseBytes } from '../src/store/release-bytes.js';
import { CorruptChunkError } from '../src/store/types.js';
import { joinAdjacent, ZSTD_AVAILABLE, zstdCompress } from '../src/store/zstd.js';
import { connectedPair, tempDir } from './p2p-helpers.js';

const zstdTest = ZSTD_AVAILABLE ? test : test.skip;

const sha256Id = (bytes: Uint8Array): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
/** Compressible bytes that differ from run to run, so no chunk is ever shared with another test's. */
const text = (size: number): Buffer => Buffer.from(`${randomBytes(8).toString('hex')} line of a text file\n`.repeat(size).slice(0, size));
const zlibDecode = (b: Buffer): Buffer => (zlib as unknown as { zstdDecompressSync(b: Buffer): Buffer }).zstdDecompressSync(b);
const zstdSync = (raw: Buffer): Buffer => (zlib as unknown as { zstdCompressSync(b: Buffer): Buffer }).zstdCompressSync(raw);

/** Frame_Content_Size from a zstd frame header (RFC 8878, 3.1.1.1), or undefined when the frame leaves it out. */
function frameContentSize(frame: Buffer): number | undefined {
  if (frame.readUInt32LE(0) !== 0xfd2fb528) throw new Error('not a zstd frame');
  const fhd = frame[4]!;
  const singleSegment = (fhd >> 5) & 1;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fhd >> 6]!;
  const at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][fhd & 3]!;
  if (fcsBytes === 0) return undefined;
  if (fcsBytes === 1) return frame[at]!;
  if (fcsBytes === 2) return frame.readUInt16LE(at) + 256;
  if (fcsBytes === 4) return frame.readUInt32LE(at);
  return Number(frame.readBigUInt64LE(at));
}

async function store(t: ExecutionContext, name: string): Promise<ChunkStore> {
  const s = new ChunkStore(join(await tempDir(t, `zstd-${name}`), 'chunks'));
  await s.init();
  return s;
}

zstdTest('new chunks are zstd on a Node that has it: header byte 3, served as stored, read back exact', async (t) => {
  t.is(NEW_CHUNK_CODEC, 'zstd');
  const s = await store(t, 'put');
  const raw = text(1024 * 1024);
  const { ref } = await s.put(raw);
  t.is(ref.codec, 'zstd');
  t.true(ref.storedSize < raw.length / 10, `stored ${ref.storedSize} bytes of ${raw.length}`);
  const file = await readFile(s.pathOf(ref.id));
  t.is(file[5], 3, 'codec byte 3 in the chunk file header');
  t.is(file.length, CHUNK_HEADER_BYTES + ref.storedSize);
  // The frame names its content size, so a decoder writes straight into its output instead of a window buffer.
  t.is(frameContentSize(file.subarray(CHUNK_HEADER_BYTES)), raw.length, 'the zstd frame header carries the chunk size');
  const stored = await s.getStored(ref.id);
  t.is(stored.codec, 'zstd');
  t.true(stored.data.equals(file.subarray(CHUNK_HEADER_BYTES)));
  // A fresh store instance has nothing in memory: the bytes come from the file, decoded and hashed.
  const again = new ChunkStore(s.dir);
  t.true((await again.get(ref.id)).equals(raw));
});

zstdTest('a compressed chunk comes back as one view of zstd\'s output, not a copy, and decodes to its bytes', async (t) => {
  for (const size of [1, 1000, 300_000, 1024 * 1024]) {
    // Hex digits: about 2 : 1, so the output is too large for node's pool of small buffers.
    const raw = Buffer.from(randomBytes(Math.ceil(size / 2)).toString('hex').slice(0, size));
    const out = await zstdCompress(raw);
    t.true(zlibDecode(out).equals(raw), `${size} bytes round trip`);
    t.is(frameContentSize(out), size);
    // The output buffer has room for the whole raw chunk: a result smaller than its buffer is a view of it.
    if (size >= 300_000) t.true(out.buffer.byteLength > out.length, `${size}: a view of the output buffer (${out.length} of ${out.buffer.byteLength})`);
  }
});

test('joinAdjacent joins side-by-side slices as a view and copies anything else', (t) => {
  const whole = Buffer.from('abcdefghij');
  const joined = joinAdjacent([whole.subarray(0, 4), whole.subarray(4, 7)]);
  const gap = joinAdjacent([whole.subarray(0, 2), whole.subarray(3, 5)]);
  const other = joinAdjacent([whole.subarray(0, 2), Buffer.from('xy')]);
  t.deepEqual([joined.toString(), gap.toString(), other.toString()], ['abcdefg', 'abde', 'abxy']);
  whole[0] = 0x41; // 'A'
  t.is(joined.toString(), 'Abcdefg', 'adjacent: a view of the same bytes');
  t.is(gap.toString(), 'abde', 'not adjacent: a copy');
  t.is(other.toString(), 'abxy', 'another buffer: a copy');
  t.is(joinAdjacent([whole]), whole);
  t.is(joinAdjacent([]).length, 0);
});

zstdTest('a received zstd chunk that decodes to other bytes, or to more than its size, is refused and not stored', async (t) => {
  const s = await store(t, 'receive');
  const raw = text(200_000);
  const id = sha256Id(raw);
  const other = zstdSync(text(200_000));
  await t.throwsAsync(s.receive(id, 'zstd', other, raw.length), { instanceOf: CorruptChunkError, message: /hash to/ });
  // A bomb: a frame of 200,000 bytes claimed to be 1,000.
  await t.throwsAsync(s.receive(id, 'zstd', zstdSync(raw), 1000), { instanceOf: CorruptChunkError, message: /does not decode to 1000 bytes/ });
  await t.throwsAsync(s.receive(id, 'zstd', Buffer.from('not a zstd frame'), raw.length), { instanceOf: CorruptChunkError });
  t.false(await s.has(id));
  const { ref } = await s.receive(id, 'zstd', zstdSync(raw), raw.length);
  t.is(ref.codec, 'zstd');
  t.true((await s.get(id)).equals(raw));
});

zstdTest('a decoded chunk is its receiver\'s own, and releasing it frees its memory at once; raw chunks and shared buffers are never freed', async (t) => {
  const s = await store(t, 'release');
  const raw = text(1024 * 1024);
  const id = sha256Id(raw);
  const got = await s.receive(id, 'zstd', zstdSync(raw), raw.length);
  t.true(got.own);
  t.true(got.raw.equals(raw));
  const before = process.memoryUsage().arrayBuffers;
  releaseBytes(got.raw);
  t.is(got.raw.length, 0, 'the buffer is detached');
  const freed = before - process.memoryUsage().arrayBuffers;
  t.true(freed >= raw.length, `${freed} bytes freed`);
  // The store kept the compressed bytes, not the decode: the chunk still reads back whole.
  const read = await s.read(id);
  t.true(read.own);
  t.true(read.raw.equals(raw));

  // A raw chunk's bytes are the ones the store keeps for serving: not the receiver's to free.
  const noise = randomBytes(300_000);
  const rawId = sha256Id(noise);
  t.false((await s.receive(rawId, 'raw', noise, noise.length)).own);
  t.false((await s.read(rawId)).own);
  t.true((await s.get(rawId)).equals(noise));

  // Whatever a caller says, a slice of a larger buffer (or of node's pool of small ones) is left alone.
  const pooled = Buffer.from('a small pooled buffer');
  releaseBytes(pooled);
  t.is(pooled.toString(), 'a small pooled buffer');
  const big = Buffer.alloc(1024 * 1024, 7);
  const tail = big.subarray(100);
  releaseBytes(tail);
  t.is(tail.length, big.length - 100);
  const head = big.subarray(0, 512 * 1024);
  releaseBytes(head);
  t.is(head.length, 512 * 1024);
  t.is(big[0], 7);
});

zstdTest('a zstd chunk file damaged on disk fails its read and is deleted', async (t) => {
  const s = await store(t, 'damaged');
  const { ref } = await s.put(text(300_000));
  const handle = await open(s.pathOf(ref.id), 'r+');
  await handle.write(Buffer.from([0xff, 0xff, 0xff, 0xff]), 0, 4, CHUNK_HEADER_BYTES + Math.floor(ref.storedSize / 2));
  await handle.close();
  await t.throwsAsync(new ChunkStore(s.dir).get(ref.id), { instanceOf: CorruptChunkError });
  t.false(await s.has(ref.id));
});

zstdTest('the server sends zstd to a requester that asks for it, and the decoded bytes, codec raw, to one that does not', async (t) => {
  const { server, client, serverStore, clientStore } = await connectedPair(t, 'zstd-serve');
  const raw = text(2 * 1024 * 1024);
  const { ref } = await serverStore.put(raw);
  t.is(ref.codec, 'zstd');
  const chunkServer = await registerChunkServer(server, serverStore, { maxConcurrentUploads: 4 });
  t.teardown(() => chunkServer.close());

  const ask = async (request: object) => {
    const stream = await client.dialProtocol(server.peerId, CHUNK_PROTOCOL);
    const reader = new FrameReader(stream, { maxHeaderBytes: 4096, maxPayloadBytes: 8 * 1024 * 1024 });
    await new FrameWriter(stream).write(request);
    const frame = await reader.next();
    stream.abort(new Error('done'));
    return frame!;
  };
  const plain = await ask({ t: 'get', rid: 1, id: ref.id });
  t.like(plain.header, { t: 'chunk', codec: 'raw', size: raw.length, len: raw.length });
  t.true(plain.payload.equals(raw));
  const packed = await ask({ t: 'get', rid: 2, id: ref.id, zstd: true });
  t.like(packed.header, { t: 'chunk', codec: 'zstd', size: raw.length, len: ref.storedSize });
  t.true(packed.payload.equals((await serverStore.getStored(ref.id)).data));

  // The agent's own client asks for zstd, and the chunk is kept as it came.
  const chunks = new ChunkClient(client, server.peerId, { maxInFlight: 2 });
  t.teardown(() => chunks.close());
  const got = await fetchAndStore(chunks, clientStore, ref.id);
  t.is(got.codec, 'zstd');
  t.is(got.storedSize, ref.storedSize);
  t.true((await new ChunkStore(clientStore.dir).get(ref.id)).equals(raw));
});
