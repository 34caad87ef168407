// Where an install takes a manifest's chunks from, in order: the store (a retry, a resume, a local
// reinstall), or a download in progress, whose chunks are handed over as they arrive so that the install
// ends with the last chunk instead of reading every chunk back afterwards.
import type { ChunkStore } from '../../store/chunk-store.js';
import type { ChunkRef } from '../../store/types.js';

export interface ChunkSource {
  /** The verified, uncompressed bytes of chunk `index`; called for 0, 1, 2, ... in order. */
  get(index: number): Promise<Buffer>;
  /** The install is over (done or failed): release what is held. */
  close(): void;
}

/** Reads chunks from the store, verified on every read, a couple ahead of the consumer. */
export class StoreChunkSource implements ChunkSource {
  private readonly ahead = new Map<number, Promise<Buffer>>();

  constructor(private readonly store: ChunkStore, private readonly refs: ChunkRef[], private readonly readAhead = 2) {}

  get(index: number): Promise<Buffer> {
    const read = this.ahead.get(index) ?? this.read(index);
    this.ahead.delete(index);
    for (let i = index + 1; i <= index + this.readAhead && i < this.refs.length; i++) {
      if (!this.ahead.has(i)) this.ahead.set(i, this.read(i));
    }
    return read;
  }

  close(): void {
    this.ahead.clear();
  }

  private read(index: number): Promise<Buffer> {
    const ref = this.refs[index]!;
    const p = this.store.get(ref.id);
    p.catch(() => {}); // observed when its turn comes
    return p;
  }
}

/**
 * Chunks of a download, handed over as they are verified. A chunk that arrives while the install waits
 * for it goes straight in; one that arrives ahead of its turn is kept in memory while the cache has room,
 * and read back from the store otherwise. When the cache is full, the chunks the install reaches first
 * stay: a later arrival nearer the cursor evicts the one kept farthest ahead. (Rarest-first downloading
 * delivers chunks from all over the manifest; a cache that kept whatever came first filled with chunks the
 * install would reach last, and nearly every chunk near the cursor was read back: measured at N = 16, 20 of
 * the first 21 chunks extracted.) Chunks present before the download started are read from the store.
 */
export class LiveChunkSource implements ChunkSource {
  /** Kept chunks by id, with the manifest index the install will next take each at. */
  private readonly cache = new Map<string, { raw: Buffer; at: number }>();
  private cacheBytes = 0;
  private readonly stored = new Set<string>();
  /** Every index of each chunk id, ascending (a chunk can repeat within a manifest). */
  private readonly indexes = new Map<string, number[]>();
  private waiting: { id: string; resolve: (b: Buffer | null) => void } | null = null;
  private closed = false;
  /** The index the install waits for or will ask for next. */
  cursor = 0;
  /** Chunks that had to be read back from the store although they arrived during this download. */
  readBack = 0;
  /** Milliseconds the install spent waiting for a chunk that had not arrived yet: the download's order, not its work. */
  waitedMs = 0;

  constructor(
    private readonly store: ChunkStore,
    private readonly refs: ChunkRef[],
    present: (index: number) => boolean,
    private readonly maxCacheBytes = 24 * 1024 * 1024,
  ) {
    refs.forEach((r, i) => {
      if (present(i)) this.stored.add(r.id);
      const list = this.indexes.get(r.id);
      if (list) list.push(i);
      else this.indexes.set(r.id, [i]);
    });
  }

  /** The first index at or after the cursor that uses chunk `id`, or -1 when the install is past all of them. */
  private nextUse(id: string, from: number): number {
    for (const i of this.indexes.get(id) ?? []) if (i >= from) return i;
    return -1;
  }

  /** Chunk `id` was verified and stored; `raw` is its uncompressed bytes. */
  arrived(id: string, raw: Buffer): void {
    if (this.closed) return;
    this.stored.add(id);
    if (this.waiting?.id === id) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve(raw);
      return;
    }
    if (this.cache.has(id) || raw.length > this.maxCacheBytes) return;
    // Only chunks the install has yet to reach are worth keeping.
    const at = this.nextUse(id, this.cursor);
    if (at < 0) return;
    if (this.cacheBytes + raw.length > this.maxCacheBytes) {
      // Only chunks needed later than this one may make room for it, farthest first; if evicting all of them
      // would not make enough, nothing is evicted and this one is not kept.
      const later = [...this.cache].filter(([, v]) => v.at > at).sort((a, b) => b[1].at - a[1].at);
      const freeable = later.reduce((sum, [, v]) => sum + v.raw.length, 0);
      if (this.cacheBytes - freeable + raw.length > this.maxCacheBytes) return;
      for (const [k, v] of later) {
        if (this.cacheBytes + raw.length <= this.maxCacheBytes) break;
        this.cache.delete(k);
        this.cacheBytes -= v.raw.length;
      }
    }
    this.cache.set(id, { raw, at });
    this.cacheBytes += raw.length;
  }

  async get(index: number): Promise<Buffer> {
    if (this.closed) throw new Error('the download was stopped');
    this.cursor = index;
    const id = this.refs[index]!.id;
    const cached = this.cache.get(id);
    if (cached) {
      // Keep it while a later index still needs the same bytes (a chunk repeated in one manifest).
      const later = this.nextUse(id, index + 1);
      if (later < 0) {
        this.cache.delete(id);
        this.cacheBytes -= cached.raw.length;
      } else {
        cached.at = later;
      }
      return cached.raw;
    }
    if (!this.stored.has(id)) {
      const since = performance.now();
      const raw = await new Promise<Buffer | null>((resolve) => { this.waiting = { id, resolve }; });
      this.waitedMs += performance.now() - since;
      if (raw === null) throw new Error('the download was stopped');
      return raw;
    }
    this.readBack++;
    return this.store.get(id);
  }

  close(): void {
    this.closed = true;
    this.cache.clear();
    this.cacheBytes = 0;
    const w = this.waiting;
    this.waiting = null;
    w?.resolve(null);
  }
}
