// Reading a tar stream entry by entry with tar-stream, plus the one check tar-stream does not make:
// that the archive really ended. tar-stream accepts a stream that stops cleanly between two entries,
// which is exactly what a tar truncated on a 512-byte boundary looks like. A complete archive ends
// with an all-zero header block, so `TarFraming` follows the block structure alongside the parser
// and says whether the last header position held that end marker.
import type { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { PackageError } from './types.js';

const BLOCK = 512;
// Larger pax/long-name headers are refused by tar-stream as well.
const MAX_LONG_HEADER = 4 * 1024 * 1024;

/** Follows tar framing (headers, data, padding) without interpreting entries. */
export class TarFraming {
  private header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  private skip = 0; // data + padding bytes left to pass over
  private paxCollect: Buffer[] | null = null;
  private paxRemaining = 0;
  private paxSize: number | null = null; // size override for the next real entry
  private lastHeaderWasEnd = false;

  feed(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - offset);
        if (this.paxCollect && this.paxRemaining > 0) {
          const take = Math.min(n, this.paxRemaining);
          this.paxCollect.push(chunk.subarray(offset, offset + take));
          this.paxRemaining -= take;
          if (this.paxRemaining === 0) this.finishPax();
        }
        this.skip -= n;
        offset += n;
        continue;
      }
      const n = Math.min(BLOCK - this.headerFill, chunk.length - offset);
      chunk.copy(this.header, this.headerFill, offset, offset + n);
      this.headerFill += n;
      offset += n;
      if (this.headerFill === BLOCK) {
        this.headerFill = 0;
        this.onHeader();
      }
    }
  }

  /** True when the stream stopped right after an end-of-archive block. */
  endedCleanly(): boolean {
    return this.skip === 0 && this.headerFill === 0 && this.lastHeaderWasEnd;
  }

  private onHeader(): void {
    const h = this.header;
    if (h.every((b) => b === 0)) {
      this.lastHeaderWasEnd = true;
      return;
    }
    this.lastHeaderWasEnd = false;
    const typeflag = String.fromCharCode(h[156]!);
    let size = decodeNumber(h.subarray(124, 136));
    if (typeflag === 'x' || typeflag === 'g') {
      // Local pax headers may carry the real size of the next entry (files over 8 GiB).
      if (typeflag === 'x' && size > 0 && size <= MAX_LONG_HEADER) {
        this.paxCollect = [];
        this.paxRemaining = size;
      }
    } else if (typeflag !== 'L' && typeflag !== 'K') {
      if (this.paxSize !== null) size = this.paxSize;
      this.paxSize = null;
      // tar-stream treats a directory's data as absent (the next block is a header): follow it.
      if (typeflag === '5') size = 0;
    }
    this.skip = padded(size);
  }

  private finishPax(): void {
    const records = Buffer.concat(this.paxCollect ?? []).toString('utf8');
    this.paxCollect = null;
    const match = /(?:^|\n)\d+ size=(\d+)\n/.exec(records);
    if (match) this.paxSize = Number.parseInt(match[1]!, 10);
  }
}

function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

/** Octal (NUL/space terminated) or GNU base-256 numbers, as tar-stream decodes them. */
function decodeNumber(field: Buffer): number {
  if (field[0]! & 0x80) {
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  let text = '';
  for (const b of field) {
    if (b === 0 || (b === 0x20 && text.length > 0)) break;
    if (b !== 0x20) text += String.fromCharCode(b);
  }
  const n = Number.parseInt(text, 8);
  return Number.isFinite(n) ? n : 0;
}

/**
 * One entry: its header, and (iterating it) its data, which must be consumed before the next entry.
 * `header.type` is null at run time for typeflags tar-stream does not know (e.g. GNU sparse files).
 */
export interface TarEntry {
  header: tarStream.Header;
  /** The entry's data; a malformed archive or a failing source surfaces here as the mapped error too. */
  data: AsyncIterable<Buffer>;
}

export interface TarReadOptions {
  /** Builds the error for a malformed archive from tar-stream's (or our) description. */
  invalid: (detail: string) => PackageError;
  /** Maps an error of the source stream (gunzip, file read, peer stream) to the error to report. */
  sourceError?: (err: Error) => Error;
}

/**
 * Yields the entries of the tar carried by `source`. The caller must consume each entry's stream
 * before asking for the next one. Breaking out of the loop destroys the source.
 */
export async function* readTarEntries(source: Readable, opts: TarReadOptions): AsyncGenerator<TarEntry> {
  const extract = tarStream.extract();
  const framing = new TarFraming();
  let sourceFailure: Error | null = null;
  let finished = false;

  const onSourceError = (err: Error) => {
    if (sourceFailure === null) sourceFailure = err;
    extract.destroy(err);
  };
  source.on('error', onSourceError);
  source.on('data', (chunk: Buffer) => {
    framing.feed(chunk);
    if (!extract.write(chunk)) source.pause();
  });
  extract.on('drain', () => source.resume());
  source.on('end', () => extract.end(undefined));
  // A consumer that closes the stream early (no 'end') must not leave us waiting for entries.
  source.on('close', () => {
    if (!source.readableEnded && !finished && sourceFailure === null) {
      onSourceError(new Error('the tar stream was closed before its end'));
    }
  });

  // Errors met while the consumer reads an entry's data (a truncated body, a gunzip failure) get the
  // same treatment as errors between entries.
  const failureOf = (err: unknown): Error => {
    if (sourceFailure !== null) return mapSourceError(sourceFailure, opts);
    if (err instanceof PackageError) return err;
    return opts.invalid((err as Error).message);
  };
  async function* mappedData(data: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      yield* data;
    } catch (err) {
      throw failureOf(err);
    }
  }

  try {
    try {
      for await (const entry of extract) {
        const entryStream = entry as unknown as AsyncIterable<Buffer> & { header: tarStream.Header };
        yield { header: entryStream.header, data: mappedData(entryStream) };
      }
    } catch (err) {
      throw failureOf(err);
    }
    if (sourceFailure !== null) throw mapSourceError(sourceFailure, opts);
    if (!framing.endedCleanly()) {
      throw opts.invalid('the archive is truncated (it ends without an end-of-archive block)');
    }
    finished = true;
  } finally {
    finished = true;
    if (!source.readableEnded) source.destroy();
    if (!extract.destroyed) extract.destroy(null);
  }
}

function mapSourceError(err: Error, opts: TarReadOptions): Error {
  if (err instanceof PackageError) return err;
  if (opts.sourceError) return opts.sourceError(err);
  return opts.invalid(err.message);
}
