// Install a runtime from the chunks of a verified manifest: chunks are read back in order (each one
// verified against its id), hashed as a whole against the manifest, and extracted into a staging dir
// that is renamed into place only when everything matched.
import crypto from 'node:crypto';
import { Transform } from 'node:stream';
import { extractTar } from '../../runtime/extract.js';
import type { RuntimesDir } from '../../runtime/install.js';
import type { PackageLimits } from '../../runtime/types.js';
import { readTar } from '../../store/ingest.js';
import type { Store } from '../../store/store.js';
import type { InstallRecord, SignedManifest } from '../../store/types.js';

export interface InstallContext {
  store: Store;
  runtimes: RuntimesDir;
  limits: PackageLimits;
  owner?: { uid: number; gid: number };
}

/**
 * Install `sm` at <runtimes>/<name>/<version>. An installed version from an older manifest is replaced;
 * one from a newer manifest is kept and this one is skipped (returns null).
 */
export async function installManifest(ctx: InstallContext, sm: SignedManifest): Promise<InstallRecord | null> {
  const { name, version } = sm.manifest.runtime;
  const existing = await ctx.store.index.getInstall(name, version);
  let replace = false;
  if (existing) {
    if (existing.manifestId === sm.id) return existing;
    const current = await ctx.store.index.getManifest(existing.manifestId);
    if (current && Date.parse(current.manifest.createdAt) >= Date.parse(sm.manifest.createdAt)) return null;
    replace = true;
  }
  const staging = await ctx.runtimes.createStaging();
  try {
    const hash = crypto.createHash('sha256');
    let size = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    const source = readTar(ctx.store.chunks, sm.manifest.chunks);
    let readError: Error | null = null;
    source.on('error', (err) => {
      readError = err;
      hashing.destroy(err);
    });
    source.pipe(hashing);
    try {
      await extractTar(hashing, staging, { limits: ctx.limits, owner: ctx.owner });
    } catch (err) {
      // The extractor reports a failed read as a tar problem; the caller needs the chunk that was bad.
      throw readError ?? err;
    }
    const digest = hash.digest('hex');
    if (size !== sm.manifest.tar.size || digest !== sm.manifest.tar.sha256) {
      throw new Error(`the chunks of ${name}@${version} reassemble to sha256 ${digest} (${size} bytes), not the manifest's ${sm.manifest.tar.sha256}`);
    }
    const installed = await ctx.runtimes.commit(staging, sm.manifest.runtime, { force: replace });
    const record: InstallRecord = {
      name, version, manifestId: sm.id, path: installed,
      sizeBytes: await ctx.runtimes.treeSize(installed), installedAt: new Date().toISOString(),
    };
    await ctx.store.index.putInstall(record);
    if (existing) await ctx.store.index.deleteManifest(existing.manifestId);
    return record;
  } catch (err) {
    await ctx.runtimes.discard(staging).catch(() => {});
    throw err;
  }
}
