// Turning a tree (entry list + file contents) or a byte stream into stored chunks, and chunks back into bytes.

import { createHash } from 'node:crypto';
import type { ChunkStore } from './chunk-store.js';
import { Chunker, chunkStream } from './chunker.js';
import { releaseBytes } from './release-bytes.js';
import { encodeEntry, type TreeEntry, type TreeSink } from '../runtime/tree-entry.js';
import type { ChunkRef } from './types.js';

/**
 * Puts in flight at once. Compression runs on the libuv thread pool, so on a 2-core machine
 * two chunks compress while the main thread chunks and hashes the next one; a third keeps
 * the pool busy while a finished put waits for its file write. Each costs at most one chunk
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
 * Chunks pushed in stream order, stored with a few puts in flight; the refs come out in the same order.
 * On failure, `abort` deletes every chunk this queue created.
 */
class PutQueue {
  readonly refs: ChunkRef[] = [];
  readonly createdIds: string[] = [];
  private readonly inFlight: Promise<{ ref: ChunkRef; created: boolean }>[] = [];

  constructor(private readonly chunks: ChunkStore, private readonly opts: IngestOptions) {}

  /** `chunk` is the queue's alone (a Chunker's copy): once stored, it is freed unless the store keeps it. */
  async add(chunk: Buffer): Promise<void> {
    const put = this.chunks.put(chunk);
    // The store keeps the bytes it was given only for a new chunk stored uncompressed (for serving).
    put.then(({ ref, created }) => {
      if (!created || ref.codec !== 'raw') releaseBytes(chunk);
    }, () => undefined);
    // A put may fail while we are still waiting on an older one; it is awaited later.
    put.catch(() => undefined);
    this.inFlight.push(put);
    if (this.inFlight.length >= Math.max(1, this.opts.putsInFlight ?? DEFAULT_PUTS_IN_FLIGHT)) await this.settleOldest();
  }

  async drain(): Promise<ChunkRef[]> {
    while (this.inFlight.length > 0) await this.settleOldest();
    return this.refs;
  }

  /** Lets the remaining puts finish so that every chunk created is known, then removes them. */
  async abort(): Promise<void> {
    const rest = await Promise.allSettled(this.inFlight.splice(0));
    for (const r of rest) if (r.status === 'fulfilled' && r.value.created) this.createdIds.push(r.value.ref.id);
    await Promise.allSettled(this.createdIds.map((id) => this.chunks.delete(id)));
  }

  // Results are taken in the order the puts were started, which keeps the chunk list in stream order.
  private async settleOldest(): Promise<void> {
    const { ref, created } = await this.inFlight.shift()!;
    this.refs.push(ref);
    if (created) this.createdIds.push(ref.id);
    this.opts.onChunk?.(ref, created);
  }
}

/**
 * Chunks a byte stream into the store. If anything fails (the source, a put), the chunks this
 * ingest created are deleted again before the error is rethrown.
 */
export async function ingestTar(
  tar: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  chunks: ChunkStore,
  opts: IngestOptions = {},
): Promise<IngestResult> {
  const tarHash = createHash('sha256');
  const queue = new PutQueue(chunks, opts);
  let size = 0;
  try {
    for await (const chunk of chunkStream(tar)) {
      tarHash.update(chunk);
      size += chunk.length;
      await queue.add(chunk);
    }
    await queue.drain();
  } catch (err) {
    await queue.abort();
    throw err;
  }
  return { chunks: queue.refs, size, sha256: tarHash.digest('hex'), createdIds: queue.createdIds };
}

/** What a tree ingest produced: the two chunked streams of a schema 2 manifest. */
export interface TreeIngestResult {
  entries: { count: number; size: number; sha256: string; chunks: ChunkRef[] };
  content: { size: number; chunks: ChunkRef[] };
  /** Ids of chunks this ingest wrote (not those already present), for cleanup if the publish fails. */
  createdIds: string[];
}

/**
 * A TreeSink that stores a tree as two chunked streams: the file contents, cut by the content-defined
 * chunker as they arrive, and the entry list (metadata), gathered and chunked at the end. Because the
 * chunker never sees metadata, two packages whose files hold the same bytes in the same order share all
 * their content chunks, whatever their mtimes, modes or owners.
 */
export class TreeIngest implements TreeSink {
  private readonly chunker = new Chunker();
  private readonly content: PutQueue;
  private readonly lines: string[] = [];
  private current: TreeEntry | null = null;
  private contentSize = 0;

  constructor(private readonly chunks: ChunkStore, private readonly opts: IngestOptions = {}) {
    this.content = new PutQueue(chunks, opts);
  }

  begin(entry: TreeEntry): void {
    this.current = entry;
  }

  async write(piece: Buffer): Promise<void> {
    this.contentSize += piece.length;
    for (const chunk of this.chunker.push(piece)) await this.content.add(chunk);
  }

  end(sha256?: string): void {
    const e = this.current;
    this.current = null;
    if (e === null) return;
    if (e.type === 'file') {
      if (!sha256) throw new Error(`internal: file ${e.path} ended without its sha256`);
      this.lines.push(encodeEntry({ ...e, sha256 }));
    } else {
      this.lines.push(encodeEntry(e));
    }
  }

  /** Stores the rest of the content and the entry list; on failure removes every chunk this ingest created. */
  async finish(): Promise<TreeIngestResult> {
    const meta = new PutQueue(this.chunks, this.opts);
    try {
      for (const chunk of this.chunker.finish()) await this.content.add(chunk);
      const contentChunks = await this.content.drain();
      const list = Buffer.from(this.lines.join('\n'), 'utf8');
      const listChunker = new Chunker();
      for (const chunk of [...listChunker.push(list), ...listChunker.finish()]) await meta.add(chunk);
      const metaChunks = await meta.drain();
      const createdIds = [...this.content.createdIds, ...meta.createdIds];
      return {
        entries: { count: this.lines.length, size: list.length, sha256: createHash('sha256').update(list).digest('hex'), chunks: metaChunks },
        content: { size: this.contentSize, chunks: contentChunks },
        createdIds,
      };
    } catch (err) {
      await meta.abort();
      await this.abort();
      throw err;
    }
  }

  async abort(): Promise<void> {
    await this.content.abort();
  }

  /** Chunks created so far (complete after finish or abort). */
  get createdIds(): string[] {
    return this.content.createdIds;
  }
}
