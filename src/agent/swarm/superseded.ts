// Manifests superseded here: an older manifest of a name@version whose newer manifest is installed (a
// `publish --force` replaced it). Such a manifest will never be installed again, so keeping it only holds
// its chunks on disk for ever and offers it to every peer in the catalog, from where the hosts that had
// dropped it learn it again (found by the soak: every forced republish left its predecessor on every host).
// The swarm drops them in its maintenance rounds, never learns them again, and then collects the chunks.
import type { StoreIndex } from '../../store/index-db.js';
import type { SignedManifest } from '../../store/types.js';

/** Is a manifest of name@version created at `createdAt` older than the one installed here? */
export async function supersededHere(index: StoreIndex, name: string, version: string, createdAt: string): Promise<boolean> {
  const installed = await index.getInstall(name, version);
  if (!installed) return false;
  const current = await index.getManifest(installed.manifestId);
  return current !== undefined && Date.parse(current.manifest.createdAt) > Date.parse(createdAt);
}

/**
 * Delete from the index every manifest superseded here, except those `busy(id)` (a download still running:
 * it ends by itself, finding the newer one installed, and the next round drops it). Returns the ids dropped.
 */
export async function dropSuperseded(index: StoreIndex, busy: (id: string) => boolean): Promise<SignedManifest[]> {
  const dropped: SignedManifest[] = [];
  for (const sm of await index.listManifests()) {
    const { name, version } = sm.manifest.runtime;
    if (busy(sm.id) || !(await supersededHere(index, name, version, sm.manifest.createdAt))) continue;
    await index.deleteManifest(sm.id);
    dropped.push(sm);
  }
  return dropped;
}
