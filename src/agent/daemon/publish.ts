// The publish pipeline: one read of the package feeds both the chunk store and the extraction into a
// staging dir, so a publish costs one decompression, not two. Nothing is left behind on failure:
// the staging dir is discarded and the chunks this publish created are deleted.
import { PassThrough, type Readable } from 'node:stream';
import type { KeyObject } from 'node:crypto';
import { openCanonicalTar, StripGuessError, type CanonicalInfo } from '../../runtime/canonical.js';
import { extractTar } from '../../runtime/extract.js';
import { RuntimesDir } from '../../runtime/install.js';
import { archAllowed } from '../../runtime/runtime-yml.js';
import { PackageError, type PackageLimits } from '../../runtime/types.js';
import type { Store } from '../../store/store.js';
import { ingestTar } from '../../store/ingest.js';
import { buildManifest, publicKeyOf, signManifest } from '../../store/manifest.js';
import type { ChunkRef, InstallRecord, SignedManifest } from '../../store/types.js';
import { markNotForThisHost, unmarkNotForThisHost } from '../install/no-install.js';

export interface PublishContext {
  store: Store;
  runtimes: RuntimesDir;
  publisherKey: KeyObject;
  limits: PackageLimits;
  owner?: { uid: number; gid: number };
}

export interface PublishResult {
  name: string;
  version: string;
  manifestId: string;
  /** Where it is installed here, or null when this machine's architecture is excluded or with --no-install. */
  path: string | null;
  /** Published with --no-install: kept and served here, never installed here. */
  noInstall: boolean;
  /** True when the same content was already installed under this name and version. */
  unchanged: boolean;
  chunks: number;
  newChunks: number;
  tarBytes: number;
  storedNewBytes: number;
  signed: SignedManifest;
}

const PIPE_BUFFER = 1024 * 1024;

export interface PublishOptions {
  force?: boolean;
  /** A build host: ingest, sign and serve, but do not extract or install here. */
  noInstall?: boolean;
  onProgress?: (read: number, total: number) => void;
}

export async function publishPackage(
  ctx: PublishContext,
  pkg: string,
  opts: PublishOptions,
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
  opts: PublishOptions,
): Promise<PublishResult> {
  // With --no-install there is nothing to extract: the canonical stream only feeds the chunk store (the
  // safety rules still run, in the canonical writer).
  const staging = opts.noInstall ? null : await ctx.runtimes.createStaging();
  const discard = async () => { if (staging !== null) await ctx.runtimes.discard(staging); };
  const created: string[] = [];
  let committed = false;
  try {
    const { stream, done } = openCanonicalTar(pkg, { limits: ctx.limits, strip, onProgress: opts.onProgress });
    const [ingested, , info] = await runBoth(stream, done, (s) =>
      ingestTar(s, ctx.store.chunks, { onChunk: (ref, isNew) => { if (isNew) created.push(ref.id); } }),
    (s): Promise<unknown> => (staging === null ? drain(s) : extractTar(s, staging, { limits: ctx.limits, owner: ctx.owner })));

    const meta = info.meta;
    const manifest = buildManifest(meta, { size: ingested.size, sha256: ingested.sha256 }, ingested.chunks, publicKeyOf(ctx.publisherKey));
    const signed = signManifest(manifest, ctx.publisherKey);
    const base = {
      name: meta.name, version: meta.version, chunks: ingested.chunks.length, newChunks: created.length,
      tarBytes: ingested.size, storedNewBytes: storedBytesOf(ingested.chunks, created), noInstall: opts.noInstall === true,
    };

    const existing = await ctx.store.index.getInstall(meta.name, meta.version);
    if (existing) {
      const old = await ctx.store.index.getManifest(existing.manifestId);
      if (old && old.manifest.tar.sha256 === ingested.sha256) {
        await discard();
        return { ...base, manifestId: old.id, path: existing.path, unchanged: true, signed: old, noInstall: false };
      }
      if (!opts.force) {
        throw new PackageError(`${meta.name}@${meta.version} is already installed with different content (manifest ${existing.manifestId}); publish with --force to replace it`);
      }
    }

    await ctx.store.index.putManifest(signed);
    if (staging === null) {
      // Marked before anything announces it, so the swarm never starts a download of it here.
      await markNotForThisHost(ctx.store.index, signed.id);
      committed = true;
      return { ...base, manifestId: signed.id, path: null, unchanged: false, signed };
    }
    await unmarkNotForThisHost(ctx.store.index, signed.id);
    if (!archAllowed(meta)) {
      // Stored and signed for the fleet, but this host's architecture is excluded.
      await discard();
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
      await discard().catch(() => {});
      for (const id of created) await ctx.store.chunks.delete(id).catch(() => {});
    }
    throw err;
  }
}

/** Read a stream to its end, for a consumer that needs nothing from it. */
function drain(s: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    s.on('end', resolve);
    s.on('error', reject);
    s.resume();
  });
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

