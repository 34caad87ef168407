// Check an installed runtime against its manifest, and restore it from the chunks.
//
// A repair is a fresh install of the same manifest: staged and checked file by file like any install,
// then renamed over the damaged tree under the daemon's lock (install-manifest.ts), so a reader sees the
// damaged tree or the restored one, never a mix. Chunks the store lacks are fetched from the swarm first.
import { CorruptChunkError, type InstallRecord, type SignedManifest } from '../../store/types.js';
import { manifestChunks } from '../../store/manifest.js';
import { errorText } from '../log.js';
import { installManifest, type InstallContext } from './install-manifest.js';
import { checkTree, hasDrift, readEntryList, type TreeCheck } from './verify-tree.js';

/** One installed runtime as `verify` reports it. */
export interface RuntimeCheck {
  name: string;
  version: string;
  manifestId: string;
  path: string;
  /** ok: matches; drifted: see changed/added/missing; deleted: the runtime dir is gone; unchecked: see error. */
  state: 'ok' | 'drifted' | 'deleted' | 'unchecked';
  changed: TreeCheck['changed'];
  added: string[];
  missing: string[];
  entries: number;
  error: string | null;
}

export async function checkInstalled(ctx: InstallContext, record: InstallRecord, full: boolean): Promise<RuntimeCheck & { sm: SignedManifest | undefined }> {
  const base = { name: record.name, version: record.version, manifestId: record.manifestId, path: record.path, changed: [], added: [], missing: [], entries: 0 };
  const sm = await ctx.store.index.getManifest(record.manifestId);
  if (!sm) return { ...base, sm, state: 'unchecked', error: `its manifest ${record.manifestId} is not in this agent's index` };
  let list: Buffer;
  try {
    list = await readEntryList(ctx.store.chunks, sm.manifest);
  } catch (err) {
    return { ...base, sm, state: 'unchecked', error: `its entry list cannot be read from the store: ${errorText(err)}` };
  }
  const c = await checkTree(record.path, list, { full, owner: ctx.owner });
  const state = c.deleted ? 'deleted' : hasDrift(c) ? 'drifted' : 'ok';
  return { ...base, sm, state, changed: c.changed, added: c.added, missing: c.missing, entries: c.entries, error: null };
}

export interface RepairDeps {
  ctx: InstallContext;
  /** The daemon's lock, for the rename over the damaged tree. */
  lock: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Fetches the chunks the store lacks from the swarm; resolves to how many are still missing. Absent when alone. */
  fetchChunks?: (sm: SignedManifest) => Promise<number>;
}

/** A repair that could not be done; its message is one sentence for the operator. */
export class RepairError extends Error {
  override name = 'RepairError';
}

/**
 * Reinstall `sm` over the tree `record` describes. Returns the new install record, or null when the
 * runtime was removed or replaced by another manifest meanwhile (then nothing was changed).
 */
export async function repairRuntime(deps: RepairDeps, record: InstallRecord, sm: SignedManifest): Promise<InstallRecord | null> {
  const label = `${record.name}@${record.version}`;
  const total = manifestChunks(sm.manifest).length;
  // A chunk found corrupt during the install is dropped by the store; one more round fetches it again.
  for (let attempt = 1; ; attempt++) {
    const missing = (await Promise.all(manifestChunks(sm.manifest).map((c) => deps.ctx.store.chunks.has(c.id)))).filter((h) => !h).length;
    if (missing > 0) {
      if (!deps.fetchChunks) {
        throw new RepairError(`${missing} of the ${total} chunks of ${label} are not in the store, and this agent is in no fleet to fetch them from (no fleet key); the installed tree is left as it is`);
      }
      const left = await deps.fetchChunks(sm);
      if (left > 0) {
        throw new RepairError(`${left} of the ${total} chunks of ${label} are not in the store and no reachable peer sent them; the installed tree is left as it is (retry when a host that has ${label} is up)`);
      }
    }
    let wanted = true;
    try {
      return await installManifest(deps.ctx, sm, {
        reinstall: true,
        // Under the lock, right before the rename: a removal or another install meanwhile wins.
        lock: (fn) => deps.lock(async () => {
          const now = await deps.ctx.store.index.getInstall(record.name, record.version);
          wanted = now?.manifestId === sm.id;
          return fn();
        }),
        stillWanted: () => wanted,
      });
    } catch (err) {
      if (err instanceof CorruptChunkError && attempt < 3) continue;
      throw err;
    }
  }
}
