// Manifests superseded here: an older manifest of a name@version of which this host holds a newer one (a
// `publish --force` replaced it). Such a manifest will never be installed again, so keeping it only holds
// its chunks on disk for ever and offers it to every peer in the catalog, from where the hosts that had
// dropped it learn it again (found by the soak: every forced republish left its predecessor on every host;
// and GC may evict it, after which fetching it back each round would be a loop). The swarm drops them in its
// maintenance rounds (never the installed one), never learns them again, and then collects the chunks.
import type { StoreIndex } from '../../store/index-db.js';
import type { SignedManifest } from '../../store/types.js';

/** Is a manifest of name@version created at `createdAt` older than one held here? */
export async function supersededHere(index: StoreIndex, name: string, version: string, createdAt: string): Promise<boolean> {
  return isSuperseded(await index.listManifests(), name, version, createdAt);
}

/** The same against a list already read (a catalog sync checks many entries against one listing). */
export function isSuperseded(held: SignedManifest[], name: string, version: string, createdAt: string): boolean {
  const t = Date.parse(createdAt);
  return held.some((o) => o.manifest.runtime.name === name && o.manifest.runtime.version === version && Date.parse(o.manifest.createdAt) > t);
}

/**
 * Delete from the index every manifest superseded here, except those `busy(id)` (a download still running:
 * it ends by itself, finding the newer one installed, and the next round drops it). Returns the ids dropped.
 */
export async function dropSuperseded(index: StoreIndex, busy: (id: string) => boolean): Promise<SignedManifest[]> {
  const dropped: SignedManifest[] = [];
  const held = await index.listManifests();
  const installed = new Set((await index.listInstalls()).map((r) => r.manifestId));
  for (const sm of held) {
    const { name, version } = sm.manifest.runtime;
    if (busy(sm.id) || installed.has(sm.id) || !isSuperseded(held, name, version, sm.manifest.createdAt)) continue;
    await index.deleteManifest(sm.id);
    dropped.push(sm);
  }
  return dropped;
}
