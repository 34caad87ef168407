// Content-defined chunking of the canonical tar stream (FastCDC-style gear hash with
// normalized chunking). Boundaries depend only on the bytes, never on how the stream was
// split into pieces, so two versions of a runtime cut the same way around unchanged files.

import { createHash } from 'node:crypto';
import { GEAR_WASM_BASE64 } from './gear-wasm.js';

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

// The cut search runs as WebAssembly (gear.wat; the JavaScript loop it replaced took 1.8 - 2.5 ns per hashed
// byte, 0.76 s of a publish's main thread for a 338 MB tree). One compiled module; each Chunker has its own
// instance, whose memory holds the gear table and the chunker's working buffer.
const GEAR_BYTES = 1024;
// The few WebAssembly APIs used here; this project compiles without the DOM types that declare them.
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  Global: new (descriptor: { value: 'i32'; mutable: false }, value: number) => object;
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
const GEAR_MODULE = new Wasm.Module(Buffer.from(GEAR_WASM_BASE64, 'base64'));
const GEAR_IMPORTS = {
  chunker: {
    min: new Wasm.Global({ value: 'i32', mutable: false }, CHUNK_MIN),
    max: new Wasm.Global({ value: 'i32', mutable: false }, CHUNK_MAX),
    normal: new Wasm.Global({ value: 'i32', mutable: false }, CHUNK_NORMAL),
    maskHard: new Wasm.Global({ value: 'i32', mutable: false }, MASK_HARD),
    maskEasy: new Wasm.Global({ value: 'i32', mutable: false }, MASK_EASY),
  },
};

/**
 * A working buffer of 2 x CHUNK_MAX bytes and the cut search over it: `findCut(start, available)` finds the
 * next cut point in work[start, start + available) and returns the chunk length. The caller guarantees that
 * the answer cannot change with more data: either at least CHUNK_MAX bytes are available, or the stream has
 * ended.
 */
function cutSearch(): { work: Buffer; findCut: (start: number, available: number) => number } {
  const instance = new Wasm.Instance(GEAR_MODULE, GEAR_IMPORTS);
  const memory = instance.exports.memory as { buffer: ArrayBuffer };
  if (memory.buffer.byteLength < GEAR_BYTES + 2 * CHUNK_MAX) throw new Error('internal: gear.wat has too little memory for the chunker');
  new Int32Array(memory.buffer, 0, 256).set(GEAR);
  return {
    work: Buffer.from(memory.buffer, GEAR_BYTES, 2 * CHUNK_MAX),
    findCut: instance.exports.findCut as (start: number, available: number) => number,
  };
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
  private readonly work: Buffer;
  private readonly findCut: (start: number, available: number) => number;
  private start = 0; // first byte of the chunk being formed
  private end = 0; // one past the last buffered byte

  constructor() {
    ({ work: this.work, findCut: this.findCut } = cutSearch());
  }

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
        const length = this.findCut(this.start, this.end - this.start);
        out.push(copyOf(work, this.start, length));
        this.start += length;
      }
    }
    return out;
  }

  finish(): Buffer[] {
    const out: Buffer[] = [];
    while (this.end > this.start) {
      const length = this.findCut(this.start, this.end - this.start);
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
