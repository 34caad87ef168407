// Turning a canonical tar stream into stored chunks, and chunks back into the tar stream.

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ChunkStore } from './chunk-store.js';
import { chunkStream } from './chunker.js';
import type { ChunkRef } from './types.js';

/**
 * Puts in flight at once. Compression runs on the libuv thread pool, so on a 2-core machine
 * two chunks compress while the main thread chunks and hashes the next one; a third keeps
 * the pool busy while a finished put waits for its fsync. Each costs at most one chunk
 * (<= 4 MiB) of memory.
 */
export const DEFAULT_PUTS_IN_FLIGHT = 3;

export interface IngestResult {
  /** The chunks of the tar, in order. */
  chunks: ChunkRef[];
  /** Total tar bytes. */
  size: number;
  /** sha256 hex of the whole tar. */
  sha256: string;
  /** Ids of chunks this ingest wrote (not those already present), for cleanup if the publish fails. */
  createdIds: string[];
}

export interface IngestOptions {
  /** Called once per chunk, in tar order, after it is stored. */
  onChunk?: (ref: ChunkRef, created: boolean) => void;
  putsInFlight?: number;
}

/**
 * Chunks a tar stream into the store. If anything fails (the source, a put), the chunks this
 * ingest created are deleted again before the error is rethrown.
 */
export async function ingestTar(
  tar: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  chunks: ChunkStore,
  opts: IngestOptions = {},
): Promise<IngestResult> {
  const maxInFlight = Math.max(1, opts.putsInFlight ?? DEFAULT_PUTS_IN_FLIGHT);
  const tarHash = createHash('sha256');
  const refs: ChunkRef[] = [];
  const createdIds: string[] = [];
  const inFlight: Promise<{ ref: ChunkRef; created: boolean }>[] = [];
  let size = 0;

  // Results are taken in the order the puts were started, which keeps the chunk list in tar order.
  const settleOldest = async (): Promise<void> => {
    const { ref, created } = await inFlight.shift()!;
    refs.push(ref);
    if (created) createdIds.push(ref.id);
    opts.onChunk?.(ref, created);
  };

  try {
    for await (const chunk of chunkStream(tar)) {
      tarHash.update(chunk);
      size += chunk.length;
      const put = chunks.put(chunk);
      // A put may fail while we are still waiting on an older one; it is awaited later.
      put.catch(() => undefined);
      inFlight.push(put);
      if (inFlight.length >= maxInFlight) await settleOldest();
    }
    while (inFlight.length > 0) await settleOldest();
  } catch (err) {
    // Let the remaining puts finish so that every chunk we created is known, then remove them.
    const rest = await Promise.allSettled(inFlight.splice(0));
    for (const r of rest) if (r.status === 'fulfilled' && r.value.created) createdIds.push(r.value.ref.id);
    await Promise.allSettled(createdIds.map((id) => chunks.delete(id)));
    throw err;
  }
  return { chunks: refs, size, sha256: tarHash.digest('hex'), createdIds };
}

/**
 * The tar stream back from its chunks: each chunk is read, decoded and verified against its
 * id before its bytes are pushed. Reads ahead at most `readAhead` chunks, and only as fast as
 * the consumer drains, so memory stays at a few chunks whatever the tar size. A bad or missing
 * chunk ends the stream with CorruptChunkError / ChunkNotFoundError.
 */
export function readTar(chunks: ChunkStore, refs: ChunkRef[], opts: { readAhead?: number } = {}): Readable {
  const readAhead = Math.max(1, opts.readAhead ?? 2);
  const pending: Promise<Buffer>[] = [];
  let next = 0; // index of the next chunk to start reading

  const fill = (): void => {
    while (pending.length < readAhead && next < refs.length) {
      const ref = refs[next++]!;
      const read = chunks.get(ref.id).then((bytes) => {
        if (bytes.length !== ref.size) {
          throw new Error(`chunk ${ref.id} has ${bytes.length} bytes but the manifest says ${ref.size}`);
        }
        return bytes;
      });
      read.catch(() => undefined); // observed when its turn comes
      pending.push(read);
    }
  };

  return new Readable({
    // One chunk buffered beyond what is being read ahead is plenty.
    highWaterMark: 1,
    read() {
      fill();
      const head = pending.shift();
      if (!head) {
        this.push(null);
        return;
      }
      head.then(
        (bytes) => {
          fill();
          this.push(bytes);
        },
        (err: Error) => this.destroy(err),
      );
    },
  });
}
