// Where an install takes a manifest's chunks from: the store (a retry, a resume, a local reinstall), or a
// download in progress, whose chunks are handed over as they arrive, in whatever order the swarm delivers them,
// so that the install ends with the last chunk instead of reading chunks back afterwards.
import type { ChunkStore } from '../../store/chunk-store.js';
import { releaseBytes } from '../../store/release-bytes.js';
import type { ChunkRef } from '../../store/types.js';

/**
 * A chunk handed to the install. `release`, when set: nothing else holds `raw`, so the install calls it once it
 * is done with the bytes (every write from them finished), and their memory is freed at once.
 */
export interface HandedChunk {
  index: number;
  raw: Buffer;
  release?: () => void;
}

export interface ChunkSource {
  /** The verified, uncompressed bytes of chunk `index`, once it is there. */
  get(index: number): Promise<Buffer>;
  /** Every chunk index in [from, end) once, with its verified bytes, in the order they become available. */
  each(from: number, end: number): AsyncIterable<HandedChunk>;
  /** The install is over (done or failed): release what is held. */
  close(): void;
}

/** Reads chunks from the store, verified on every read, a couple ahead of the consumer. */
export class StoreChunkSource implements ChunkSource {
  private readonly ahead = new Map<number, Promise<Read>>();

  constructor(private readonly store: ChunkStore, private readonly refs: ChunkRef[], private readonly readAhead = 2) {}

  async get(index: number): Promise<Buffer> {
    return (await this.take(index)).raw;
  }

  async *each(from: number, end: number): AsyncIterable<HandedChunk> {
    // Every index is a read of its own, so even a chunk that repeats in the manifest is released after its use.
    for (let index = from; index < end; index++) yield handed(index, await this.take(index));
  }

  close(): void {
    this.ahead.clear();
  }

  private take(index: number): Promise<Read> {
    const read = this.ahead.get(index) ?? this.read(index);
    this.ahead.delete(index);
    for (let i = index + 1; i <= index + this.readAhead && i < this.refs.length; i++) {
      if (!this.ahead.has(i)) this.ahead.set(i, this.read(i));
    }
    return read;
  }

  private read(index: number): Promise<Read> {
    const ref = this.refs[index]!;
    const p = this.store.read(ref.id);
    p.catch(() => {}); // observed when its turn comes
    return p;
  }
}

/** A chunk's bytes, and whether they are the reader's alone (ChunkStore.read). */
interface Read {
  raw: Buffer;
  own: boolean;
}

function handed(index: number, { raw, own }: Read): HandedChunk {
  return own ? { index, raw, release: () => releaseBytes(raw) } : { index, raw };
}

/** Read-backs of a LiveChunkSource started ahead of their turn. */
const READ_AHEAD = 2;

/**
 * Chunks of a download, handed over as they are verified. The install first asks for the entry list's chunks
 * (`get`), then takes the content chunks in arrival order (`each`): an arrival goes straight to the install when
 * it is waiting, and otherwise waits in memory while the ones waiting fit in `maxPendingBytes` (beyond that it
 * is read back from the store when its turn comes). Chunks present before the download started are read from
 * the store, first.
 */
export class LiveChunkSource implements ChunkSource {
  /** Every index of each chunk id (a chunk can repeat within a manifest). */
  private readonly indexes = new Map<string, number[]>();
  private readonly presentAtStart: boolean[];
  private readonly stored: boolean[];
  private readonly taken: boolean[];
  /** Arrivals the install has not taken yet, in arrival order; null: not kept in memory, read it back. */
  private readonly pending = new Map<number, Buffer | null>();
  private pendingBytes = 0;
  /** Indices whose kept bytes nothing else holds (a decode, and the only index of its chunk): released after use. */
  private readonly own = new Set<number>();
  /** Read-backs started ahead of their turn: a store read waits in the thread pool, so a few run at once. */
  private readonly readingAhead = new Map<number, Promise<Read>>();
  /** The install waiting for an arrival, and the indices it waits for, [from, to), until it has one. */
  private wake: (() => void) | null = null;
  private wanted: [number, number] = [0, 0];
  private closed = false;
  /**
   * Where the install needs chunks in order, for the scheduler: the entry list's chunk it waits for or will ask
   * for next; undefined once it takes content in any order.
   */
  cursor: number | undefined = 0;
  /** Chunks handed to the install. */
  delivered = 0;
  /** Chunks that had to be read back from the store although they arrived during this download. */
  readBack = 0;
  /** Milliseconds the install spent waiting for a chunk to arrive. */
  waitedMs = 0;
  /** Milliseconds spent reading chunks back from the store (those that arrived during this download). */
  readBackMs = 0;
  /** Milliseconds the install spent on the content chunks handed to it (writing them into the tree). */
  placeMs = 0;
  /** Milliseconds from this source's creation until the last chunk asked for with `get` (the entry list) was there. */
  listMs: number | null = null;
  /** Milliseconds from this source's creation until the install asked for content (entry list in, tree prepared). */
  contentFromMs: number | null = null;
  private readonly createdAt = performance.now();

  constructor(
    private readonly store: ChunkStore,
    private readonly refs: ChunkRef[],
    present: (index: number) => boolean,
    private readonly maxPendingBytes = 16 * 1024 * 1024,
  ) {
    this.presentAtStart = refs.map((_, i) => present(i));
    this.stored = [...this.presentAtStart];
    this.taken = refs.map(() => false);
    refs.forEach((r, i) => {
      const list = this.indexes.get(r.id);
      if (list) list.push(i);
      else this.indexes.set(r.id, [i]);
    });
  }

  /**
   * Chunk `id` was verified and stored; `raw` is its uncompressed bytes, and `own` says that nothing else holds
   * them (ChunkStore.receive), so they can be freed once the install has written them.
   */
  arrived(id: string, raw: Buffer, own = false): void {
    if (this.closed) return;
    const indexes = this.indexes.get(id) ?? [];
    for (const i of indexes) {
      if (this.stored[i]) continue;
      this.stored[i] = true;
      // One the install waits for is kept whatever the others take.
      const awaited = i >= this.wanted[0] && i < this.wanted[1];
      const keep = awaited || this.pendingBytes + raw.length <= this.maxPendingBytes;
      this.pending.set(i, keep ? raw : null);
      if (keep) this.pendingBytes += raw.length;
      // A chunk that repeats in the manifest shares its bytes between its indices: never released.
      if (keep && own && indexes.length === 1) this.own.add(i);
    }
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async get(index: number): Promise<Buffer> {
    if (this.cursor !== undefined) this.cursor = index;
    this.wanted = [index, index + 1];
    while (!this.stored[index]) await this.arrival();
    this.wanted = [0, 0];
    this.listMs = performance.now() - this.createdAt;
    return (await this.take(index)).raw;
  }

  async *each(from: number, end: number): AsyncIterable<HandedChunk> {
    this.cursor = undefined;
    this.contentFromMs = performance.now() - this.createdAt;
    for (let index = from; index < end; index++) {
      if (this.presentAtStart[index] && !this.taken[index]) yield* this.handOver(index, await this.take(index));
    }
    let left = 0;
    for (let index = from; index < end; index++) if (!this.taken[index]) left++;
    while (left > 0) {
      const next = this.firstPending(from, end);
      if (next === undefined) {
        this.wanted = [from, end];
        await this.arrival();
        continue;
      }
      this.wanted = [0, 0];
      left--;
      yield* this.handOver(next, await this.take(next));
    }
  }

  /** Yields one chunk, timing how long the install works on it before it asks for the next. */
  private *handOver(index: number, read: Read): Generator<HandedChunk> {
    const since = performance.now();
    yield handed(index, read);
    this.placeMs += performance.now() - since;
  }

  close(): void {
    this.closed = true;
    this.pending.clear();
    this.own.clear();
    this.readingAhead.clear();
    this.pendingBytes = 0;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** The earliest arrival in [from, end) not taken yet; others (the entry list's) are left for `get`. */
  private firstPending(from: number, end: number): number | undefined {
    for (const index of this.pending.keys()) if (index >= from && index < end && !this.taken[index]) return index;
    return undefined;
  }

  /** Resolves at the next arrival; rejects once the download is stopped. */
  private async arrival(): Promise<void> {
    if (this.closed) throw new Error('the download was stopped');
    const since = performance.now();
    await new Promise<void>((resolve) => { this.wake = resolve; });
    this.waitedMs += performance.now() - since;
    if (this.closed) throw new Error('the download was stopped');
  }

  /** The bytes of stored chunk `index`: the ones kept from its arrival, or a read from the store. */
  private async take(index: number): Promise<Read> {
    if (this.closed) throw new Error('the download was stopped');
    this.taken[index] = true;
    this.delivered++;
    const kept = this.pending.get(index);
    this.pending.delete(index);
    const own = this.own.delete(index);
    if (kept) {
      this.pendingBytes -= kept.length;
      return { raw: kept, own };
    }
    if (this.presentAtStart[index]) return this.store.read(this.refs[index]!.id);
    this.readBack++;
    const since = performance.now();
    const read = this.readingAhead.get(index) ?? this.store.read(this.refs[index]!.id);
    this.readingAhead.delete(index);
    // The next arrivals that were not kept in memory: their reads start now.
    for (const [i, kept] of this.pending) {
      if (this.readingAhead.size >= READ_AHEAD) break;
      if (kept !== null || this.readingAhead.has(i)) continue;
      const ahead = this.store.read(this.refs[i]!.id);
      ahead.catch(() => {}); // observed when its turn comes
      this.readingAhead.set(i, ahead);
    }
    try {
      return await read;
    } finally {
      this.readBackMs += performance.now() - since;
    }
  }
}
