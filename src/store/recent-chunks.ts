// The stored bytes of the chunks this process wrote last, kept in memory for serving.
//
// In a swarm a chunk that just arrived is the one its neighbours lack (they hear of it by `have` at once and
// fetch rarest first), so it is asked for again within seconds. Reading it back from its file costs five
// thread-pool round trips (open, fstat, fstat, read, close) and a fresh buffer per upload. The bytes here were
// verified against their id before they were written (ChunkStore.receive and put) and are never written to
// after that. Each is kept with the identity of the file it went into (as in chunk-trust.ts): the store uses
// it only while one stat shows the same file, unchanged, so a host still never serves bytes of a file that
// changed since it was checked.
import type { Stats } from 'node:fs';
import type { StoredChunk } from './chunk-store.js';
import { fileIdentity } from './chunk-trust.js';

interface Kept { chunk: StoredChunk; file: string }

export class RecentChunks {
  private readonly kept = new Map<string, Kept>();
  private bytes = 0;
  /** Uploads answered from here, and from the chunk files. */
  hits = 0;
  misses = 0;

  constructor(private readonly maxBytes: number) {}

  /** `info`: the stat of the file just written with these bytes. */
  add(id: string, chunk: StoredChunk, info: Stats): void {
    if (chunk.data.length > this.maxBytes) return;
    this.delete(id);
    this.kept.set(id, { chunk, file: fileIdentity(info) });
    this.bytes += chunk.data.length;
    // The map's order is insertion order: the oldest go first.
    for (const [old, k] of this.kept) {
      if (this.bytes <= this.maxBytes) break;
      this.kept.delete(old);
      this.bytes -= k.chunk.data.length;
    }
  }

  /** The kept bytes, counted as an upload from memory. */
  get(id: string): StoredChunk | undefined {
    const k = this.kept.get(id);
    if (k) this.hits++;
    return k?.chunk;
  }

  /** An upload read from its file. */
  miss(): void {
    this.misses++;
  }

  /** The kept bytes, not counted. */
  peek(id: string): StoredChunk | undefined {
    return this.kept.get(id)?.chunk;
  }

  /** True when `info` is the stat of the same file, unchanged, that the kept bytes of `id` were written to. */
  matches(id: string, info: Stats): boolean {
    return this.kept.get(id)?.file === fileIdentity(info);
  }

  delete(id: string): void {
    const k = this.kept.get(id);
    if (!k) return;
    this.kept.delete(id);
    this.bytes -= k.chunk.data.length;
  }

  get size(): number {
    return this.bytes;
  }
}
