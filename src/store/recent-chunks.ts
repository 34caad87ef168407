// The stored bytes of the chunks this process wrote last, kept in memory for serving.
//
// In a swarm a chunk that just arrived is the one its neighbours lack (they hear of it by `have` at once and
// fetch rarest first), so it is asked for again within seconds. Reading it back from its file costs five
// thread-pool round trips (open, fstat, fstat, read, close) and a fresh buffer per upload. The bytes here were
// verified against their id before they were written (ChunkStore.receive and put) and are never written to
// after that. The store uses them only while one stat shows the file verified since it was written
// (chunk-trust.ts), so a host still never serves bytes of a file that changed since it was checked.
import type { StoredChunk } from './chunk-store.js';

export class RecentChunks {
  private readonly kept = new Map<string, StoredChunk>();
  private bytes = 0;
  /** Uploads answered from here, and from the chunk files. */
  hits = 0;
  misses = 0;

  constructor(private readonly maxBytes: number) {}

  add(id: string, chunk: StoredChunk): void {
    if (chunk.data.length > this.maxBytes) return;
    this.delete(id);
    this.kept.set(id, chunk);
    this.bytes += chunk.data.length;
    // The map's order is insertion order: the oldest go first.
    for (const [old, c] of this.kept) {
      if (this.bytes <= this.maxBytes) break;
      this.kept.delete(old);
      this.bytes -= c.data.length;
    }
  }

  /** The kept bytes, not counted. */
  peek(id: string): StoredChunk | undefined {
    return this.kept.get(id);
  }

  /** Counts an upload: from memory or from its file. */
  count(fromMemory: boolean): void {
    if (fromMemory) this.hits++;
    else this.misses++;
  }

  delete(id: string): void {
    const c = this.kept.get(id);
    if (!c) return;
    this.kept.delete(id);
    this.bytes -= c.data.length;
  }
}
