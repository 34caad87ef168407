// zstd through node:zlib, where the running Node has it (22.15 and later; the release artifact carries 24).
//
// Measured on this 2-core machine on 1 MiB pieces of the JDK 17 tar (Node 24, same run): zstd level 1
// compresses at 490-600 MB/s and decodes at 1300-1430 MB/s; brotli quality 1 compresses at 220-280 MB/s and
// decodes at 350-430 MB/s, for the same size (96.7 vs 96.4 MB of 134 MB). Brotli decoding was a receiver's
// largest single cost after its file writes, and compressing the publisher's, so new chunks are zstd wherever it
// exists.
// Node 20 has no zstd: there chunks stay brotli, and a peer sends such a node zstd chunks decoded (messages.ts).
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

type ZstdFn = (input: Buffer, options: object, callback: (err: Error | null, out: Buffer) => void) => void;

/** The zstd half of node:zlib; @types/node 20 does not declare it. */
const api = zlib as unknown as {
  zstdCompress?: ZstdFn;
  createZstdCompress?: (options: object) => import('node:stream').Transform;
  zstdDecompress?: ZstdFn;
  constants: Record<string, number>;
};

export const ZSTD_AVAILABLE = typeof api.zstdCompress === 'function' && typeof api.zstdDecompress === 'function';

const decompressAsync = ZSTD_AVAILABLE ? promisify(api.zstdDecompress!) : undefined;

/** Level 1, measured above. Level 3 stored 3 % fewer bytes (93.7 MB) at 310 – 400 MB/s compressing, 510 – 1000 decoding. */
const LEVEL = 1;

/** Thrown where zstd is needed and this Node lacks it: not a corrupt chunk, a runtime too old to read it. */
export class ZstdUnavailableError extends Error {
  override name = 'ZstdUnavailableError';
  constructor(what: string) {
    super(`${what} is zstd-compressed, and Node ${process.version} has no zstd: run the agent on Node 22.15 or later (the release artifact carries it)`);
  }
}

export async function zstdCompress(raw: Buffer): Promise<Buffer> {
  if (!ZSTD_AVAILABLE || !api.createZstdCompress) throw new ZstdUnavailableError('a new chunk');
  const engine = api.createZstdCompress({
    // The chunk is hashed by its id already; zstd's own checksum would be a second pass for nothing.
    params: { [api.constants.ZSTD_c_compressionLevel!]: LEVEL, [api.constants.ZSTD_c_checksumFlag!]: 0 },
    // The size in the frame header: a decoder that knows it, and has that much room, decodes straight into its
    // output. Without it zstd allocates a window buffer per frame and copies out of it (measured: 311 of a JDK
    // receiver's 1029 MB of large allocations). That memory is native, so V8's GCs are the same either way.
    pledgedSrcSize: raw.length,
    // One output buffer for the whole chunk: one thread-pool job instead of a hop back per 16 KiB.
    chunkSize: Math.max(64 * 1024, raw.length + 1024),
  });
  const parts: Buffer[] = [];
  engine.on('data', (part: Buffer) => parts.push(part));
  await new Promise<void>((resolve, reject) => {
    engine.once('end', resolve);
    engine.once('error', reject);
    engine.end(raw);
  });
  return joinAdjacent(parts);
}

/**
 * The parts as one buffer. zstd hands a chunk over in two parts, the frame and then its last bytes (3 of
 * ~260 KB), both slices of the one output buffer and side by side in it; node's zstdCompress copied them into a
 * new buffer, 164 ms and one more allocation per chunk on a JDK publish. Adjacent slices are joined as a view.
 */
export function joinAdjacent(parts: Buffer[]): Buffer {
  if (parts.length === 1) return parts[0]!;
  const first = parts[0];
  if (first === undefined) return Buffer.alloc(0);
  let end = first.byteOffset + first.length;
  for (const p of parts.slice(1)) {
    if (p.buffer !== first.buffer || p.byteOffset !== end) return Buffer.concat(parts);
    end += p.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}

/** Decodes one chunk; `maxOutputLength` makes a decompression bomb fail early instead of growing a buffer. */
export async function zstdDecompress(stored: Buffer, size: number, what: string): Promise<Buffer> {
  if (!decompressAsync) throw new ZstdUnavailableError(what);
  // One byte of room past the size, as for brotli and inflate (chunk-store.ts): a buffer that is exactly full
  // makes zlib allocate a second one to learn that nothing follows.
  return decompressAsync(stored, { maxOutputLength: Math.max(size, 1), chunkSize: Math.max(64 * 1024, size + 1) });
}
