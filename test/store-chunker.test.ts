import test from 'ava';
import { createHash } from 'node:crypto';
import { CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, GEAR, chunkStream } from '../src/store/chunker.js';
import { pieces, seededBytes, sha256Hex } from './store-helpers.js';
import { compileGearWat } from '../scripts/build-gear-wasm.js';
import { GEAR_WASM_BASE64 } from '../src/store/gear-wasm.js';

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

// The cut search as it was written in JavaScript before it moved to WebAssembly (gear.wat): the specification
// the module must match byte for byte, or stores made by earlier agents would stop sharing chunks.
function referenceLengths(data: Buffer): number[] {
  const normalSize = 832 * 1024;
  const hard = 0xfffffc00 | 0;
  const easy = 0xffffc000 | 0;
  const out: number[] = [];
  for (let start = 0; start < data.length;) {
    const available = data.length - start;
    let length: number;
    if (available <= CHUNK_MIN) {
      length = available;
    } else {
      const limit = start + Math.min(available, CHUNK_MAX);
      const normal = Math.min(limit, start + normalSize);
      let h = 0;
      let i = start + CHUNK_MIN;
      length = limit - start;
      for (; i < normal; i++) {
        h = ((h << 1) + GEAR[data[i]!]!) | 0;
        if ((h & hard) === 0) { length = i + 1 - start; break; }
      }
      if (i === normal) {
        for (; i < limit; i++) {
          h = ((h << 1) + GEAR[data[i]!]!) | 0;
          if ((h & easy) === 0) { length = i + 1 - start; break; }
        }
      }
    }
    out.push(length);
    start += length;
  }
  return out;
}

test('the WebAssembly cut search cuts exactly where the JavaScript reference does', async (t) => {
  const random = seededBytes('chunker-reference', 40 * 1024 * 1024 + 777);
  const cuts = referenceLengths(random);
  // Both masks must have been exercised: some chunks end before the normal size, some after it.
  t.true(cuts.some((n) => n < 832 * 1024) && cuts.some((n) => n > 832 * 1024 && n < CHUNK_MAX), `cuts ${cuts.join(',')}`);
  t.deepEqual(await lengths(pieces(random, 300_001)), cuts, 'random data');
  // Low-entropy data: long runs of one byte, a short repeating text, zeros (cuts forced at the maximum).
  const runs = Buffer.alloc(12 * 1024 * 1024);
  for (let i = 0; i < runs.length; i++) runs[i] = (i >> 17) & 0xff;
  const text = Buffer.from('joblet runtime '.repeat(700_000));
  for (const [name, data] of [['runs', runs], ['text', text], ['zeros', Buffer.alloc(9 * 1024 * 1024)], ['short', random.subarray(0, CHUNK_MIN + 5)]] as const) {
    t.deepEqual(await lengths([data]), referenceLengths(data), name);
  }
});

test('gear-wasm.ts is what gear.wat compiles to', async (t) => {
  t.is(GEAR_WASM_BASE64, (await compileGearWat()).toString('base64'), 'run node dist/scripts/build-gear-wasm.js');
});
