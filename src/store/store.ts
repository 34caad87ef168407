// The agent's store: chunk files plus the level index, under one data dir, and GC over both.

import { mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ChunkStore } from './chunk-store.js';
import { StoreIndex } from './index-db.js';
import { manifestChunks } from './manifest.js';

export interface GcOptions {
  /**
   * Temp files modified more recently than this are kept: they may still be being written.
   * Default one minute.
   */
  graceMs?: number;
  /**
   * The same grace for unreferenced chunk files. The daemon passes 0: it stores a download's
   * manifest before fetching its chunks and runs publishes and GC one at a time, so an
   * unreferenced chunk there is garbage whatever its age. Default: graceMs.
   */
  chunkGraceMs?: number;
}

export class Store {
  private constructor(
    readonly dataDir: string,
    readonly chunks: ChunkStore,
    readonly index: StoreIndex,
  ) {}

  /** Opens (creating if needed) <dataDir>/chunks and <dataDir>/index. */
  static async open(dataDir: string): Promise<Store> {
    await mkdir(dataDir, { recursive: true });
    const chunks = new ChunkStore(join(dataDir, 'chunks'));
    await chunks.init();
    const index = await StoreIndex.open(join(dataDir, 'index'));
    return new Store(dataDir, chunks, index);
  }

  async close(): Promise<void> {
    await this.index.close();
  }

  /**
   * Removes chunk files that no manifest in the index references, and stale temp files.
   * Only files in this store's chunks dir whose names look like ours are considered.
   */
  async gc(opts: GcOptions = {}): Promise<{ removed: number; bytes: number }> {
    const graceMs = opts.graceMs ?? 60_000;
    const referenced = new Set<string>();
    for (const sm of await this.index.listManifests()) for (const c of manifestChunks(sm.manifest)) referenced.add(c.id);

    const cutoff = Date.now() - graceMs;
    const chunkCutoff = Date.now() - (opts.chunkGraceMs ?? graceMs);
    let removed = 0;
    let bytes = 0;
    for await (const entry of this.chunks.scan()) {
      if (entry.mtimeMs > (entry.kind === 'chunk' ? chunkCutoff : cutoff)) continue;
      if (entry.kind === 'chunk' && referenced.has(entry.id!)) continue;
      try {
        await unlink(entry.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      removed++;
      bytes += entry.bytes;
    }
    return { removed, bytes };
  }
}
