// What a kill or a power cut can leave in the runtimes dir, put right before the daemon does anything else:
// 1. commits a kill interrupted (install or forced replace): finished, and the record made to say which
//    tree is in place (RuntimesDir.recoverCommits);
// 2. a tree in place without an install record (a lost record, or an older agent killed between rename
//    and record): adopted when it matches its manifest in full, else reinstalled from the store;
// 3. after an unclean stop, the installed trees are checked cheaply (types and sizes against the entry
//    list): a power cut before data reached the disk leaves empty or short files. Those are reinstalled.
import type { SignedManifest } from '../../store/types.js';
import { log, errorText } from '../log.js';
import { installManifest, type InstallContext } from './install-manifest.js';
import { recordInstall } from './record-install.js';
import { checkTree, hasDrift, readEntryList, type TreeCheck } from './verify-tree.js';

export async function recoverAtStart(ctx: InstallContext, opts: { unclean: boolean }): Promise<void> {
  const { store, runtimes } = ctx;
  await runtimes.recoverCommits(async (r) => {
    const sm = r.tag === null ? undefined : await store.index.getManifest(r.tag);
    if (r.tag === null) {
      log.warn('commit_rolled_back', { name: r.name, version: r.version, path: r.path, step: r.step });
      return;
    }
    if (!sm) {
      // The tree's manifest is unknown: the record cannot be trusted to describe it; the adoption below decides.
      await store.index.deleteInstall(r.name, r.version);
      log.warn('commit_recovered_without_manifest', { name: r.name, version: r.version, manifestId: r.tag, step: r.step });
      return;
    }
    await recordInstall(store, sm, r.path);
    log.info('commit_recovered', { name: r.name, version: r.version, manifestId: sm.id, path: r.path, step: r.step });
  });
  await runtimes.cleanupLeftovers();

  const manifests = await store.index.listManifests();
  for (const tree of await runtimes.listTrees()) {
    if (await store.index.getInstall(tree.name, tree.version)) continue;
    const sm = newestFor(manifests, tree.name, tree.version);
    if (!sm) continue; // not the fleet's: a runtime put there by hand stays untouched
    const entries = await entryList(ctx, sm);
    if (entries === null) continue;
    const mismatch = describeDrift(await checkTree(tree.path, entries, { full: true, owner: ctx.owner }));
    if (mismatch === null) {
      await recordInstall(store, sm, tree.path);
      log.info('install_adopted', { name: tree.name, version: tree.version, manifestId: sm.id, path: tree.path });
      continue;
    }
    log.warn('install_orphan_differs', { name: tree.name, version: tree.version, manifestId: sm.id, path: tree.path, reason: mismatch });
    await reinstall(ctx, sm, tree.path);
  }

  if (!opts.unclean) return;
  for (const r of await store.index.listInstalls()) {
    const sm = await store.index.getManifest(r.manifestId);
    if (!sm) continue;
    const entries = await entryList(ctx, sm);
    if (entries === null) continue;
    const damage = describeDrift(await checkTree(r.path, entries, { full: false, owner: ctx.owner }));
    if (damage === null) continue;
    log.warn('install_damaged', { name: r.name, version: r.version, manifestId: sm.id, path: r.path, reason: damage,
      hint: 'found after an unclean stop (power cut or crash); reinstalled' });
    await store.index.deleteInstall(r.name, r.version);
    await reinstall(ctx, sm, r.path);
  }
}

/** Replaces the tree at `path` from the store; without the chunks, the damaged tree is removed (joblet must not use it) and the swarm fetches it again. */
async function reinstall(ctx: InstallContext, sm: SignedManifest, path: string): Promise<void> {
  const { name, version } = sm.manifest.runtime;
  try {
    const record = await installManifest(ctx, sm);
    if (record) log.info('install_replaced', { name, version, manifestId: sm.id, path: record.path });
  } catch (err) {
    log.warn('reinstall_deferred', { name, version, manifestId: sm.id, path, error: errorText(err),
      hint: 'the tree was removed; it is installed again once its chunks are fetched' });
    await ctx.runtimes.remove(name, version).catch(() => {});
  }
}

function newestFor(all: SignedManifest[], name: string, version: string): SignedManifest | undefined {
  return all
    .filter((sm) => sm.manifest.runtime.name === name && sm.manifest.runtime.version === version)
    .sort((a, b) => Date.parse(b.manifest.createdAt) - Date.parse(a.manifest.createdAt))[0];
}

/** The manifest's entry list from the store, checked against its sha256; null when its chunks are not here. */
async function entryList(ctx: InstallContext, sm: SignedManifest): Promise<Buffer | null> {
  return readEntryList(ctx.store.chunks, sm.manifest).catch(() => null);
}

/** null when the tree matches, else one sentence naming the first differences. */
function describeDrift(c: TreeCheck): string | null {
  if (!hasDrift(c)) return null;
  if (c.deleted) return 'the runtime dir is gone';
  const parts = [
    ...c.changed.slice(0, 3).map((x) => `${x.path} differs (${x.what.join(', ')})`),
    ...c.missing.slice(0, 3).map((x) => `${x} is missing`),
    ...c.added.slice(0, 3).map((x) => `${x} is not in the entry list`),
  ];
  const total = c.changed.length + c.missing.length + c.added.length;
  return parts.join('; ') + (total > parts.length ? `; and ${total - parts.length} more` : '');
}
