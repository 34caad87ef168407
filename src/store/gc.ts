// Eviction under a disk budget: what the store can give back, in the order the fleet misses it least.
//
//   1. garbage: chunk files no manifest in the index references (left by a removal or a replaced version)
//      and temp files of interrupted writes; always removed, oldest first;
//   2. superseded manifests: a name@version for which the index holds a newer manifest. Oldest first, each
//      is dropped from the index (so the catalog stops listing it) and its chunks that no kept manifest
//      references are deleted, until the agent's own bytes are at or below the target.
//
// A manifest in `protect` (installed here, in transfer) is never dropped, and neither is any chunk a kept
// manifest references: chunks are shared between manifests. Only files of this store's layout are touched.
// The caller runs this under the daemon's lock: a publish stores chunks before its manifest is indexed.

import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChunkFileEntry } from './chunk-store.js';
import { manifestChunks } from './manifest.js';
import type { Store } from './store.js';
import type { SignedManifest } from './types.js';

/** Temp files younger than this may still be being written. */
const TEMP_GRACE_MS = 60_000;

export interface OwnUsage {
  /** Chunk files, headers included. */
  chunkBytes: number;
  chunks: number;
  /** Temp files of chunk writes in progress or interrupted. */
  tempBytes: number;
  /** The level index. */
  indexBytes: number;
  /** All of the above: what the budget counts. */
  bytes: number;
}

export interface EvictedManifest { id: string; name: string; version: string; createdAt: string }

export interface EvictionResult {
  /** Files deleted (chunks and temp files) and their bytes. */
  files: number;
  bytes: number;
  /** Superseded manifests dropped from the index. */
  manifests: EvictedManifest[];
  before: OwnUsage;
  after: OwnUsage;
}

/** The agent's own bytes in the data dir: chunk files, temp files and the index, nothing else. */
export async function ownUsage(store: Store): Promise<OwnUsage> {
  let chunkBytes = 0;
  let chunks = 0;
  let tempBytes = 0;
  for await (const e of store.chunks.scan()) {
    if (e.kind === 'chunk') { chunks++; chunkBytes += e.bytes; } else tempBytes += e.bytes;
  }
  const indexBytes = await indexSize(join(store.dataDir, 'index'));
  return { chunkBytes, chunks, tempBytes, indexBytes, bytes: chunkBytes + tempBytes + indexBytes };
}

async function indexSize(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return 0;
  }
  let total = 0;
  for (const name of names) {
    const info = await stat(join(dir, name)).catch(() => null);
    if (info?.isFile()) total += info.size;
  }
  return total;
}

/** Manifests of the index superseded by a newer one of the same name@version there, oldest first. */
export function supersededManifests(all: SignedManifest[]): SignedManifest[] {
  const newest = new Map<string, number>();
  const key = (sm: SignedManifest) => `${sm.manifest.runtime.name}\u0000${sm.manifest.runtime.version}`;
  for (const sm of all) newest.set(key(sm), Math.max(newest.get(key(sm)) ?? -Infinity, Date.parse(sm.manifest.createdAt)));
  return all
    .filter((sm) => Date.parse(sm.manifest.createdAt) < newest.get(key(sm))!)
    .sort((a, b) => Date.parse(a.manifest.createdAt) - Date.parse(b.manifest.createdAt));
}

/**
 * Removes garbage, then superseded manifests not in `protect`, until the agent's own bytes are at most
 * `targetBytes` (Infinity: garbage only). Returns what went and the usage before and after.
 */
export async function evict(store: Store, opts: { protect: Set<string>; targetBytes: number; protectChunks?: Set<string> }): Promise<EvictionResult> {
  // Scan first, then read the index: a chunk written before the scan belongs to a manifest indexed before it.
  const files: ChunkFileEntry[] = [];
  for await (const e of store.chunks.scan()) files.push(e);
  const manifests = await store.index.listManifests();
  const indexBytes = await indexSize(join(store.dataDir, 'index'));
  const usageOf = (list: ChunkFileEntry[]): OwnUsage => {
    let chunkBytes = 0, chunks = 0, tempBytes = 0;
    for (const e of list) if (e.kind === 'chunk') { chunks++; chunkBytes += e.bytes; } else tempBytes += e.bytes;
    return { chunkBytes, chunks, tempBytes, indexBytes, bytes: chunkBytes + tempBytes + indexBytes };
  };
  const before = usageOf(files);

  const refCount = new Map<string, number>();
  const add = (sm: SignedManifest, d: number) => {
    for (const id of new Set(manifestChunks(sm.manifest).map((c) => c.id))) refCount.set(id, (refCount.get(id) ?? 0) + d);
  };
  for (const sm of manifests) add(sm, 1);
  const kept = (id: string) => (refCount.get(id) ?? 0) > 0 || (opts.protectChunks?.has(id) ?? false);

  const present = new Map<string, ChunkFileEntry>();
  let deletedFiles = 0;
  let deletedBytes = 0;
  const remove = async (e: ChunkFileEntry): Promise<void> => {
    // Not served from memory either once its file is gone (chunk-store.ts keeps the last few written).
    if (e.id) store.chunks.recent.delete(e.id);
    try {
      await unlink(e.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return; // gone meanwhile
    }
    deletedFiles++;
    deletedBytes += e.bytes;
  };

  const now = Date.now();
  const remaining: ChunkFileEntry[] = [];
  for (const e of [...files].sort((a, b) => a.mtimeMs - b.mtimeMs)) {
    if (e.kind === 'temp' ? e.mtimeMs < now - TEMP_GRACE_MS : !kept(e.id!)) await remove(e);
    else {
      remaining.push(e);
      if (e.kind === 'chunk') present.set(e.id!, e);
    }
  }
  let bytes = usageOf(remaining).bytes;

  const evicted: EvictedManifest[] = [];
  if (bytes > opts.targetBytes) {
    for (const sm of supersededManifests(manifests)) {
      if (bytes <= opts.targetBytes) break;
      if (opts.protect.has(sm.id)) continue;
      await store.index.deleteManifest(sm.id);
      add(sm, -1);
      const { name, version } = sm.manifest.runtime;
      evicted.push({ id: sm.id, name, version, createdAt: sm.manifest.createdAt });
      // Its unshared chunks, oldest first.
      const own = [...new Set(manifestChunks(sm.manifest).map((c) => c.id))]
        .filter((id) => !kept(id) && present.has(id)).map((id) => present.get(id)!).sort((a, b) => a.mtimeMs - b.mtimeMs);
      for (const e of own) {
        await remove(e);
        present.delete(e.id!);
        bytes -= e.bytes;
      }
    }
  }
  const after = usageOf([...remaining.filter((e) => e.kind === 'temp'), ...present.values()]);
  return { files: deletedFiles, bytes: deletedBytes, manifests: evicted, before, after };
}
