// Content-defined chunking of the canonical tar stream (FastCDC-style gear hash with
// normalized chunking). Boundaries depend only on the bytes, never on how the stream was
// split into pieces, so two versions of a runtime cut the same way around unchanged files.

import { createHash } from 'node:crypto';

export const CHUNK_MIN = 256 * 1024;
export const CHUNK_AVG = 1024 * 1024;
export const CHUNK_MAX = 4 * 1024 * 1024;

/**
 * Where the harder mask hands over to the easier one. With min 256 KiB, a 22-bit mask before
 * this point and an 18-bit mask after it, the expected chunk size is
 *   min + (1 - e^-a/4Mi) * 4Mi + e^-a/4Mi * 256Ki   with a = NORMAL - min,
 * which is ~1.0 MiB for NORMAL = 832 KiB (checked on random data by the tests).
 */
const CHUNK_NORMAL = 832 * 1024;

// The hash is 32 bits and shifts left by one per byte, so bit k depends on the last k+1 bytes.
// The masks use the top bits, which see a 11..32-byte window.
const MASK_HARD = 0xfffffc00 | 0; // 22 bits: cut probability 2^-22 per byte before NORMAL
const MASK_EASY = 0xffffc000 | 0; // 18 bits: cut probability 2^-18 per byte after NORMAL

/**
 * The gear table: 256 pseudo-random 32-bit words. It must be identical on every host forever,
 * or the same bytes would chunk differently and nothing would dedup across agents. It is
 * derived, not random: word i is bytes [4*(i%8), 4*(i%8)+4) (little endian) of
 *   sha256("joblet-agent gear table v1/" + floor(i / 8))
 * A test pins the sha256 of the resulting table.
 */
export const GEAR: Int32Array = buildGearTable();

function buildGearTable(): Int32Array {
  const table = new Int32Array(256);
  for (let block = 0; block < 32; block++) {
    const digest = createHash('sha256').update(`joblet-agent gear table v1/${block}`).digest();
    for (let word = 0; word < 8; word++) table[block * 8 + word] = digest.readInt32LE(word * 4);
  }
  return table;
}

/**
 * Finds the next cut point in buf[start, start + available) and returns the chunk length.
 * The caller guarantees that the answer cannot change with more data: either at least
 * CHUNK_MAX bytes are available, or the stream has ended.
 */
function findCut(buf: Uint8Array, start: number, available: number): number {
  if (available <= CHUNK_MIN) return available;
  const gear = GEAR;
  const limit = start + (available < CHUNK_MAX ? available : CHUNK_MAX);
  const normal = Math.min(limit, start + CHUNK_NORMAL);
  let h = 0;
  // The first CHUNK_MIN bytes can never hold a cut, so they are not hashed at all.
  let i = start + CHUNK_MIN;
  for (; i < normal; i++) {
    h = ((h << 1) + gear[buf[i]!]!) | 0;
    if ((h & MASK_HARD) === 0) return i + 1 - start;
  }
  for (; i < limit; i++) {
    h = ((h << 1) + gear[buf[i]!]!) | 0;
    if ((h & MASK_EASY) === 0) return i + 1 - start;
  }
  return limit - start;
}

/**
 * Cuts a byte stream into content-defined chunks, fed piece by piece: `push` returns the chunks that
 * are complete, `end` the rest. Each chunk is its own copy, so the consumer may keep it.
 *
 * Input is copied into one pre-allocated working buffer of 2 x CHUNK_MAX. A cut is searched only once
 * CHUNK_MAX bytes are buffered past the current chunk start (or the stream ended), so every byte is
 * hashed at most once and the result cannot depend on piece sizes. The unconsumed tail is moved to the
 * front only when the buffer's end is reached, about once per CHUNK_MAX bytes instead of once per chunk.
 */
export class Chunker {
  private readonly work = Buffer.allocUnsafe(2 * CHUNK_MAX);
  private start = 0; // first byte of the chunk being formed
  private end = 0; // one past the last buffered byte

  push(piece: Uint8Array): Buffer[] {
    const out: Buffer[] = [];
    const work = this.work;
    let offset = 0;
    while (offset < piece.length) {
      if (this.end === work.length) {
        work.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      }
      const take = Math.min(work.length - this.end, piece.length - offset);
      work.set(piece.subarray(offset, offset + take), this.end);
      this.end += take;
      offset += take;
      while (this.end - this.start >= CHUNK_MAX) {
        const length = findCut(work, this.start, this.end - this.start);
        out.push(copyOf(work, this.start, length));
        this.start += length;
      }
    }
    return out;
  }

  finish(): Buffer[] {
    const out: Buffer[] = [];
    while (this.end > this.start) {
      const length = findCut(this.work, this.start, this.end - this.start);
      out.push(copyOf(this.work, this.start, length));
      this.start += length;
    }
    return out;
  }
}

/** `Chunker` over a whole stream. */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<Buffer> {
  const chunker = new Chunker();
  for await (const piece of source) yield* chunker.push(piece);
  yield* chunker.finish();
}

function copyOf(buf: Buffer, start: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  buf.copy(out, 0, start, start + length);
  return out;
}
