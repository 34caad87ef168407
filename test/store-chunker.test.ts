import test from 'ava';
import { createHash } from 'node:crypto';
import { CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, GEAR, chunkStream } from '../src/store/chunker.js';
import { pieces, seededBytes, sha256Hex } from './store-helpers.js';

async function lengths(source: Iterable<Buffer> | AsyncIterable<Buffer>): Promise<number[]> {
  const out: number[] = [];
  for await (const chunk of chunkStream(source)) out.push(chunk.length);
  return out;
}

test('the gear table is pinned: changing it would break dedup across hosts and versions', (t) => {
  const bytes = Buffer.alloc(256 * 4);
  GEAR.forEach((word, i) => bytes.writeInt32LE(word, i * 4));
  t.is(createHash('sha256').update(bytes).digest('hex'), '30e323d9e7072e86c8816c5a7fd40cd8c73b544da239c9f0c898f22aac9cd7b5');
});

test('boundaries do not depend on how the input is split into pieces', async (t) => {
  const data = seededBytes('chunker-determinism', 8 * 1024 * 1024 + 12345);
  const whole = await lengths([data]);
  t.true(whole.length >= 5, `expected several chunks, got ${whole.length}`);
  t.is(whole.reduce((a, b) => a + b, 0), data.length);

  t.deepEqual(await lengths(pieces(data, 1)), whole, '1-byte pieces');
  t.deepEqual(await lengths(pieces(data, 64 * 1024)), whole, '64 KiB pieces');
  t.deepEqual(await lengths(pieces(data, 5 * 1024 * 1024)), whole, '5 MiB pieces');

  // Irregular piece sizes from an async source.
  async function* irregular(): AsyncGenerator<Buffer> {
    let offset = 0;
    for (let i = 0; offset < data.length; i++) {
      const size = 1 + ((i * 7919) % 300_000);
      yield data.subarray(offset, offset + size);
      offset += size;
    }
  }
  t.deepEqual(await lengths(irregular()), whole, 'irregular async pieces');
});

test('the chunks concatenate back to the input', async (t) => {
  const data = seededBytes('chunker-concat', 9 * 1024 * 1024);
  const chunks: Buffer[] = [];
  for await (const c of chunkStream(pieces(data, 100_000))) chunks.push(c);
  t.is(sha256Hex(Buffer.concat(chunks)), sha256Hex(data));
});

test('all chunks but the last lie within [min, max] and average about 1 MiB on random data', async (t) => {
  const data = seededBytes('chunker-sizes', 96 * 1024 * 1024);
  const sizes = await lengths(pieces(data, 1024 * 1024));
  for (const size of sizes.slice(0, -1)) {
    t.true(size >= CHUNK_MIN && size <= CHUNK_MAX, `chunk of ${size} bytes is out of bounds`);
  }
  const last = sizes[sizes.length - 1]!;
  t.true(last > 0 && last <= CHUNK_MAX);
  const average = data.length / sizes.length;
  t.true(average > 0.8 * CHUNK_AVG && average < 1.25 * CHUNK_AVG, `average chunk size ${average}`);
});

test('a cut is forced at max on data without content boundaries, and short streams are one chunk', async (t) => {
  const zeros = Buffer.alloc(10 * 1024 * 1024);
  const sizes = await lengths([zeros]);
  t.is(sizes.reduce((a, b) => a + b, 0), zeros.length);
  for (const size of sizes.slice(0, -1)) t.true(size >= CHUNK_MIN && size <= CHUNK_MAX);

  t.deepEqual(await lengths([Buffer.from('tiny')]), [4]);
  t.deepEqual(await lengths([]), []);
});

test('bytes inserted in the middle change only the chunks around them', async (t) => {
  const v1 = seededBytes('chunker-edit', 32 * 1024 * 1024);
  const middle = 16 * 1024 * 1024;
  // An insertion shifts everything after it: fixed-size blocks would all change.
  const v2 = Buffer.concat([v1.subarray(0, middle), Buffer.from('inserted!'), v1.subarray(middle)]);
  const ids = async (buf: Buffer): Promise<Set<string>> => {
    const out = new Set<string>();
    for await (const c of chunkStream([buf])) out.add(sha256Hex(c));
    return out;
  };
  const [a, b] = [await ids(v1), await ids(v2)];
  const fresh = [...b].filter((id) => !a.has(id));
  t.true(fresh.length >= 1 && fresh.length <= 2, `${fresh.length} new chunks`);
});
