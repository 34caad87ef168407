// Install a runtime from the chunks of a verified manifest: the entry list is read first, then the tree is
// created in a staging dir, each content chunk's bytes written into their files as the chunk comes, in any
// order (extract-any-order.ts), each file checked against its sha256 from the list. Only when everything
// matched is the tree renamed into place. A list where a later entry replaces an earlier one is extracted in
// content order instead (its meaning depends on order).
//
// The chunks come from a ChunkSource: during a download, as they arrive (one pass from wire to tree);
// otherwise from the store.
import { createHash } from 'node:crypto';
import { AnyOrderTreeWriter, planAnyOrder } from '../../runtime/extract-any-order.js';
import { TreeWriter } from '../../runtime/extract.js';
import { syncTreeFilesystem } from '../../runtime/durable.js';
import type { RuntimesDir } from '../../runtime/install.js';
import { decodeEntries } from '../../runtime/tree-entry.js';
import { PackageError, type PackageLimits } from '../../runtime/types.js';
import { manifestChunks } from '../../store/manifest.js';
import type { Store } from '../../store/store.js';
import type { InstallRecord, SignedManifest } from '../../store/types.js';
import { StoreChunkSource, type ChunkSource } from './chunk-source.js';
import { recordInstall } from './record-install.js';

export interface InstallContext {
  store: Store;
  runtimes: RuntimesDir;
  limits: PackageLimits;
  owner?: { uid: number; gid: number };
}

export interface InstallOptions {
  /** Where the chunks come from; default: the store. */
  source?: ChunkSource;
  /** Runs the final step (rename into place, install record) under the daemon's lock. */
  lock?: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Asked under the lock, right before the rename: false = the runtime was removed meanwhile, skip it. */
  stillWanted?: () => boolean;
  /** Install `sm` again over its own installed tree (a repair) instead of skipping it as already installed. */
  reinstall?: boolean;
}

/** What decides whether `sm` should be installed: null = skip (already there, or a newer one is). */
async function plan(ctx: InstallContext, sm: SignedManifest, reinstall = false): Promise<{ existing: InstallRecord | undefined } | InstallRecord | null> {
  const { name, version } = sm.manifest.runtime;
  const existing = await ctx.store.index.getInstall(name, version);
  if (existing) {
    if (existing.manifestId === sm.id) return reinstall ? { existing } : existing;
    const current = await ctx.store.index.getManifest(existing.manifestId);
    if (current && Date.parse(current.manifest.createdAt) >= Date.parse(sm.manifest.createdAt)) return null;
  }
  return { existing };
}

/**
 * Install `sm` at <runtimes>/<name>/<version>. An installed version from an older manifest is replaced;
 * one from a newer manifest is kept and this one is skipped (returns null).
 */
export async function installManifest(ctx: InstallContext, sm: SignedManifest, opts: InstallOptions = {}): Promise<InstallRecord | null> {
  const lock = opts.lock ?? ((fn) => fn());
  const first = await plan(ctx, sm, opts.reinstall);
  if (first === null || 'manifestId' in first) {
    opts.source?.close();
    return first;
  }
  const { name, version } = sm.manifest.runtime;
  const source = opts.source ?? new StoreChunkSource(ctx.store.chunks, manifestChunks(sm.manifest));
  const staging = await ctx.runtimes.createStaging();
  try {
    await extractInto(staging, sm, source, ctx);
    // On disk before the rename (power-loss safety, durable.ts), and before the lock: other installs need not wait for it.
    await syncTreeFilesystem(staging);
    return await lock(async () => {
      if (opts.stillWanted && !opts.stillWanted()) {
        await ctx.runtimes.discard(staging);
        return null;
      }
      // Looked at again: a publish or another install may have landed while this one was extracting.
      const now = await plan(ctx, sm, opts.reinstall);
      if (now === null || 'manifestId' in now) {
        await ctx.runtimes.discard(staging);
        return now;
      }
      // A tree in place without an install record is what a kill between the rename and the record leaves
      // (or a copy put there by hand). The staged tree is fully verified, so it replaces that one: retrying an
      // interrupted install must converge, never fail with "already installed" for ever.
      const orphan = now.existing === undefined && (await ctx.runtimes.occupied(name, version));
      let record: InstallRecord | null = null;
      await ctx.runtimes.commit(staging, sm.manifest.runtime, {
        force: now.existing !== undefined || orphan,
        tag: sm.id,
        synced: true,
        onPlaced: async (installed) => {
          record = await recordInstall(ctx.store, sm, installed);
        },
      });
      return record!;
    });
  } catch (err) {
    await ctx.runtimes.discard(staging).catch(() => {});
    throw err;
  } finally {
    source.close();
  }
}

/** Bytes of the content stream, taken entry by entry from consecutive chunks without copying. */
class ContentCursor {
  private chunk: Buffer | null = null;
  private offset = 0;
  private next: number;
  consumed = 0;

  constructor(private readonly source: ChunkSource, first: number, private readonly end: number) {
    this.next = first;
  }

  /** Exactly `size` bytes, in pieces. */
  async *take(size: number, what: string): AsyncGenerator<Buffer> {
    let left = size;
    while (left > 0) {
      if (this.chunk === null || this.offset === this.chunk.length) {
        if (this.next >= this.end) throw new PackageError(`the content stream ends inside ${what}`);
        this.chunk = await this.source.get(this.next++);
        this.offset = 0;
      }
      const n = Math.min(left, this.chunk.length - this.offset);
      const piece = this.chunk.subarray(this.offset, this.offset + n);
      this.offset += n;
      left -= n;
      this.consumed += n;
      yield piece;
    }
  }

  /** True when every chunk was used up exactly. */
  atEnd(): boolean {
    return this.next >= this.end && (this.chunk === null || this.offset === this.chunk.length);
  }
}

async function extractInto(staging: string, sm: SignedManifest, source: ChunkSource, ctx: InstallContext): Promise<void> {
  const m = sm.manifest;
  const label = `${m.runtime.name}@${m.runtime.version}`;
  const listParts: Buffer[] = [];
  for (let i = 0; i < m.entries.chunks.length; i++) listParts.push(await source.get(i));
  const list = Buffer.concat(listParts, m.entries.size);
  const listSha = createHash('sha256').update(list).digest('hex');
  if (list.length !== m.entries.size || listSha !== m.entries.sha256) {
    throw new Error(`the entry list of ${label} reassembles to sha256 ${listSha} (${list.length} bytes), not the manifest's ${m.entries.sha256}`);
  }
  listParts.length = 0;

  const sizes = m.content.chunks.map((c) => c.size);
  const plan = planAnyOrder(decodeEntries(list), sizes, { limits: ctx.limits, label, count: m.entries.count, contentSize: m.content.size });
  if (plan === null) return extractInOrder(staging, sm, list, source, ctx);
  const writer = new AnyOrderTreeWriter(staging, plan, sizes, label, { owner: ctx.owner });
  const first = m.entries.chunks.length;
  try {
    await writer.prepare();
    for await (const { index, raw, release } of source.each(first, first + sizes.length)) await writer.place(index - first, raw, release);
    await writer.finish();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Entry by entry, each file taking its bytes from the content stream in order. */
async function extractInOrder(staging: string, sm: SignedManifest, list: Buffer, source: ChunkSource, ctx: InstallContext): Promise<void> {
  const m = sm.manifest;
  const label = `${m.runtime.name}@${m.runtime.version}`;
  const writer = new TreeWriter(staging, { limits: ctx.limits, owner: ctx.owner });
  const first = m.entries.chunks.length;
  const content = new ContentCursor(source, first, first + m.content.chunks.length);
  let count = 0;
  try {
    for (const entry of decodeEntries(list)) {
      count++;
      await writer.begin(entry);
      if (entry.type === 'file') {
        const hash = createHash('sha256');
        for await (const piece of content.take(entry.size, `file ${entry.path}`)) {
          hash.update(piece);
          await writer.write(piece);
        }
        const digest = hash.digest('hex');
        if (digest !== entry.sha256) {
          throw new Error(`file ${entry.path} of ${label} hashes to ${digest}, not the ${entry.sha256} of its entry list`);
        }
      }
      await writer.end();
    }
    if (count !== m.entries.count) throw new Error(`the entry list of ${label} holds ${count} entries, not the manifest's ${m.entries.count}`);
    if (content.consumed !== m.content.size || !content.atEnd()) {
      throw new Error(`the files of ${label} use ${content.consumed} bytes of content, not the manifest's ${m.content.size}`);
    }
    await writer.finish();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

