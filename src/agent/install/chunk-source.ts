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
 * for it goes straight in; one that arrives ahead of its turn is kept in memory while the cache has room
 * (most arrive close to in order: the scheduler asks for the next few first) and is read back from the
 * store otherwise. Chunks present before the download started are read from the store.
 */
export class LiveChunkSource implements ChunkSource {
  private readonly cache = new Map<string, Buffer>();
  private cacheBytes = 0;
  private readonly stored = new Set<string>();
  private waiting: { id: string; resolve: (b: Buffer | null) => void } | null = null;
  private closed = false;
  /** The index the install waits for or will ask for next. */
  cursor = 0;
  /** Chunks that had to be read back from the store although they arrived during this download. */
  readBack = 0;

  constructor(
    private readonly store: ChunkStore,
    private readonly refs: ChunkRef[],
    present: (index: number) => boolean,
    private readonly maxCacheBytes = 24 * 1024 * 1024,
  ) {
    refs.forEach((r, i) => { if (present(i)) this.stored.add(r.id); });
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
    if (this.cache.has(id) || this.cacheBytes + raw.length > this.maxCacheBytes) return;
    // Only chunks the install has yet to reach are worth keeping.
    if (!this.refs.slice(this.cursor).some((r) => r.id === id)) return;
    this.cache.set(id, raw);
    this.cacheBytes += raw.length;
  }

  async get(index: number): Promise<Buffer> {
    if (this.closed) throw new Error('the download was stopped');
    this.cursor = index;
    const id = this.refs[index]!.id;
    const cached = this.cache.get(id);
    if (cached) {
      // Keep it while a later index still needs the same bytes (a chunk repeated in one manifest).
      if (!this.refs.slice(index + 1).some((r) => r.id === id)) {
        this.cache.delete(id);
        this.cacheBytes -= cached.length;
      }
      return cached;
    }
    if (!this.stored.has(id)) {
      const raw = await new Promise<Buffer | null>((resolve) => { this.waiting = { id, resolve }; });
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
