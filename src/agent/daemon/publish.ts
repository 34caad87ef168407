// The publish pipeline: one read of the package feeds both the chunk store (entry list and file contents
// as two chunked streams) and the extraction into a staging dir, so a publish costs one decompression and
// one parse, not two. Nothing is left behind on failure:
// the staging dir is discarded and the chunks this publish created are deleted.
import type { KeyObject } from 'node:crypto';
import { readPackage, StripGuessError } from '../../runtime/canonical.js';
import { TreeWriter } from '../../runtime/extract.js';
import { TeeSink } from '../../runtime/tree-entry.js';
import { RuntimesDir } from '../../runtime/install.js';
import { syncTreeFilesystem } from '../../runtime/durable.js';
import { archAllowed } from '../../runtime/runtime-yml.js';
import { findSymlinks, jobletWarnings } from '../../runtime/joblet-rules.js';
import { PackageError, type PackageLimits } from '../../runtime/types.js';
import type { ReadAccess } from '../../runtime/no-follow.js';
import type { Store } from '../../store/store.js';
import { TreeIngest } from '../../store/ingest.js';
import { buildManifest, manifestBytes, manifestChunks, publicKeyOf, signManifest } from '../../store/manifest.js';
import type { ChunkRef, Manifest, SignedManifest } from '../../store/types.js';
import { markNotForThisHost, unmarkNotForThisHost } from '../install/no-install.js';
import { recordInstall } from '../install/record-install.js';

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
  /** Where it is installed here, or null when this machine's architecture is excluded or with --no-install. */
  path: string | null;
  /** Published with --no-install: kept and served here, never installed here. */
  noInstall: boolean;
  /** True when the same content was already installed under this name and version. */
  unchanged: boolean;
  chunks: number;
  newChunks: number;
  treeBytes: number;
  storedNewBytes: number;
  /** What joblet would treat differently than the publisher probably expects (joblet-rules.ts). */
  warnings: string[];
  signed: SignedManifest;
}

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
  // With --no-install there is nothing to extract: the package only feeds the chunk store (readPackage still
  // applies every safety rule and limit to each entry).
  const staging = opts.noInstall ? null : await ctx.runtimes.createStaging();
  const discard = async () => { if (staging !== null) await ctx.runtimes.discard(staging); };
  const ingest = new TreeIngest(ctx.store.chunks);
  const writer = staging === null ? null : new TreeWriter(staging, { limits: ctx.limits, owner: ctx.owner });
  let created: string[] = [];
  let committed = false;
  try {
    // One read of the package: each entry goes to the chunk store and (unless --no-install) into the staging dir.
    let info;
    try {
      info = await readPackage(pkg, new TeeSink(writer === null ? [ingest] : [ingest, writer]), { limits: ctx.limits, strip, onProgress: opts.onProgress, access: ctx.access });
      await writer?.finish();
    } catch (err) {
      await writer?.abort();
      await ingest.abort();
      created = ingest.createdIds;
      throw err instanceof StripGuessError || writer === null ? err : writer.wrap(err);
    }
    const tree = await ingest.finish();
    created = tree.createdIds;
    // The chunks are written without fsync (chunk-store.ts): on disk before the manifest that needs them is
    // indexed and announced, so a power cut after the publish returned cannot leave the fleet's only copy torn.
    if (created.length > 0) await syncTreeFilesystem(ctx.store.chunks.dir);

    const meta = info.meta;
    const warnings = jobletWarnings({ ...info, symlinks: staging === null ? [] : await findSymlinks(staging), installPath: ctx.runtimes.pathFor(meta.name, meta.version) });
    const manifest = buildManifest(meta, tree, publicKeyOf(ctx.publisherKey));
    const signed = signManifest(manifest, ctx.publisherKey);
    const chunks = manifestChunks(manifest);
    const base = {
      name: meta.name, version: meta.version, chunks: chunks.length, newChunks: created.length,
      treeBytes: manifestBytes(manifest), storedNewBytes: storedBytesOf(chunks, created), warnings,
      noInstall: opts.noInstall === true,
    };

    const existing = await ctx.store.index.getInstall(meta.name, meta.version);
    if (existing) {
      const old = await ctx.store.index.getManifest(existing.manifestId);
      if (old && sameTree(old.manifest, manifest)) {
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
    const installedPath = await ctx.runtimes.commit(staging, meta, {
      force: opts.force,
      tag: signed.id,
      onPlaced: async (installed) => {
        committed = true;
        await recordInstall(ctx.store, signed, installed);
      },
    });
    committed = true;
    return { ...base, manifestId: signed.id, path: installedPath, unchanged: false, signed };
  } catch (err) {
    if (!committed) {
      await discard().catch(() => {});
      for (const id of created) await ctx.store.chunks.delete(id).catch(() => {});
    }
    throw err;
  }
}

/** The same tree: the same entry list and the same content (metadata and bytes alike). */
function sameTree(a: Manifest, b: Manifest): boolean {
  return a.entries.sha256 === b.entries.sha256 && a.entries.size === b.entries.size &&
    a.content.size === b.content.size && a.content.chunks.every((c, i) => c.id === b.content.chunks[i]?.id) &&
    a.content.chunks.length === b.content.chunks.length;
}

function storedBytesOf(chunks: ChunkRef[], ids: string[]): number {
  const wanted = new Set(ids);
  let n = 0;
  for (const c of chunks) if (wanted.delete(c.id)) n += c.storedSize;
  return n;
}
