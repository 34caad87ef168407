// The publish pipeline: one read of the package feeds both the chunk store and the extraction into a
// staging dir, so a publish costs one decompression, not two. Nothing is left behind on failure:
// the staging dir is discarded and the chunks this publish created are deleted.
import { PassThrough, type Readable } from 'node:stream';
import type { KeyObject } from 'node:crypto';
import { openCanonicalTar, StripGuessError, type CanonicalInfo } from '../../runtime/canonical.js';
import { extractTar } from '../../runtime/extract.js';
import { RuntimesDir } from '../../runtime/install.js';
import { archAllowed } from '../../runtime/runtime-yml.js';
import { findSymlinks, jobletWarnings } from '../../runtime/joblet-rules.js';
import { PackageError, type PackageLimits } from '../../runtime/types.js';
import type { ReadAccess } from '../../runtime/no-follow.js';
import type { Store } from '../../store/store.js';
import { ingestTar } from '../../store/ingest.js';
import { buildManifest, publicKeyOf, signManifest } from '../../store/manifest.js';
import type { ChunkRef, InstallRecord, SignedManifest } from '../../store/types.js';

export interface PublishContext {
  store: Store;
  runtimes: RuntimesDir;
  publisherKey: KeyObject;
  limits: PackageLimits;
  owner?: { uid: number; gid: number };
  /** Whose right to read the package is checked (see client-access.ts); nobody's when absent. */
  access?: ReadAccess;
}

export interface PublishResult {
  name: string;
  version: string;
  manifestId: string;
  /** Where it is installed here, or null when this machine's architecture is excluded. */
  path: string | null;
  /** True when the same content was already installed under this name and version. */
  unchanged: boolean;
  chunks: number;
  newChunks: number;
  tarBytes: number;
  storedNewBytes: number;
  /** What joblet would treat differently than the publisher probably expects (joblet-rules.ts). */
  warnings: string[];
  signed: SignedManifest;
}

const PIPE_BUFFER = 1024 * 1024;

export async function publishPackage(
  ctx: PublishContext,
  pkg: string,
  opts: { force?: boolean; onProgress?: (read: number, total: number) => void },
): Promise<PublishResult> {
  try {
    return await publishOnce(ctx, pkg, 'auto', opts);
  } catch (err) {
    // The first entry was a directory but other top-level entries followed: read again without stripping.
    if (err instanceof StripGuessError) return publishOnce(ctx, pkg, 'none', opts);
    throw err;
  }
}

async function publishOnce(
  ctx: PublishContext,
  pkg: string,
  strip: 'auto' | 'none',
  opts: { force?: boolean; onProgress?: (read: number, total: number) => void },
): Promise<PublishResult> {
  const staging = await ctx.runtimes.createStaging();
  const created: string[] = [];
  let committed = false;
  try {
    const { stream, done } = openCanonicalTar(pkg, { limits: ctx.limits, strip, onProgress: opts.onProgress, access: ctx.access });
    const [ingested, , info] = await runBoth(stream, done, (s) =>
      ingestTar(s, ctx.store.chunks, { onChunk: (ref, isNew) => { if (isNew) created.push(ref.id); } }),
    (s) => extractTar(s, staging, { limits: ctx.limits, owner: ctx.owner }));

    const meta = info.meta;
    const warnings = jobletWarnings({ ...info, symlinks: await findSymlinks(staging), installPath: ctx.runtimes.pathFor(meta.name, meta.version) });
    const manifest = buildManifest(meta, { size: ingested.size, sha256: ingested.sha256 }, ingested.chunks, publicKeyOf(ctx.publisherKey));
    const signed = signManifest(manifest, ctx.publisherKey);
    const base = {
      name: meta.name, version: meta.version, chunks: ingested.chunks.length, newChunks: created.length,
      tarBytes: ingested.size, storedNewBytes: storedBytesOf(ingested.chunks, created), warnings,
    };

    const existing = await ctx.store.index.getInstall(meta.name, meta.version);
    if (existing) {
      const old = await ctx.store.index.getManifest(existing.manifestId);
      if (old && old.manifest.tar.sha256 === ingested.sha256) {
        await ctx.runtimes.discard(staging);
        return { ...base, manifestId: old.id, path: existing.path, unchanged: true, signed: old };
      }
      if (!opts.force) {
        throw new PackageError(`${meta.name}@${meta.version} is already installed with different content (manifest ${existing.manifestId}); publish with --force to replace it`);
      }
    }

    await ctx.store.index.putManifest(signed);
    if (!archAllowed(meta)) {
      // Stored and signed for the fleet, but this host's architecture is excluded.
      await ctx.runtimes.discard(staging);
      committed = true;
      return { ...base, manifestId: signed.id, path: null, unchanged: false, signed };
    }
    const installedPath = await ctx.runtimes.commit(staging, meta, { force: opts.force });
    committed = true;
    const record: InstallRecord = {
      name: meta.name, version: meta.version, manifestId: signed.id, path: installedPath,
      sizeBytes: await ctx.runtimes.treeSize(installedPath), installedAt: new Date().toISOString(),
    };
    await ctx.store.index.putInstall(record);
    if (existing && existing.manifestId !== signed.id) await ctx.store.index.deleteManifest(existing.manifestId);
    return { ...base, manifestId: signed.id, path: installedPath, unchanged: false, signed };
  } catch (err) {
    if (!committed) {
      await ctx.runtimes.discard(staging).catch(() => {});
      for (const id of created) await ctx.store.chunks.delete(id).catch(() => {});
    }
    throw err;
  }
}

function storedBytesOf(chunks: ChunkRef[], ids: string[]): number {
  const wanted = new Set(ids);
  let n = 0;
  for (const c of chunks) if (wanted.delete(c.id)) n += c.storedSize;
  return n;
}

/**
 * Feed one canonical stream to two consumers with shared backpressure. If any side fails, the
 * source is destroyed so the other side stops too, and we wait for both before the caller cleans up
 * (otherwise cleanup would race with writes still in progress).
 */
async function runBoth<A, B>(
  source: Readable,
  done: Promise<CanonicalInfo>,
  left: (s: Readable) => Promise<A>,
  right: (s: Readable) => Promise<B>,
): Promise<[A, B, CanonicalInfo]> {
  const a = new PassThrough({ highWaterMark: PIPE_BUFFER });
  const b = new PassThrough({ highWaterMark: PIPE_BUFFER });
  source.pipe(a);
  source.pipe(b);
  let firstError: unknown = null;
  const fail = (err: unknown) => {
    if (firstError === null) firstError = err;
    source.destroy(err instanceof Error ? err : new Error(String(err)));
    a.destroy(); b.destroy();
  };
  source.on('error', fail);
  const results = await Promise.allSettled([
    left(a).catch((e) => { fail(e); throw e; }),
    right(b).catch((e) => { fail(e); throw e; }),
    done.catch((e) => { fail(e); throw e; }),
  ]);
  // Every rejection went through fail(), so firstError holds the root cause.
  if (firstError !== null) throw firstError;
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [A, B, CanonicalInfo];
}

