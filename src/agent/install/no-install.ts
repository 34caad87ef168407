// Manifests published on this host with `publish --no-install` (a build host): kept, signed, announced and
// served from here, never installed here. The mark lives in the index's meta so that it survives a
// restart; without it the swarm would see a manifest that is not installed and bring it in.
import type { StoreIndex } from '../../store/index-db.js';
import type { SignedManifest } from '../../store/types.js';
import { archAllowed, machineArch } from '../../runtime/runtime-yml.js';

const KEY = 'notForThisHost';

export const NO_INSTALL_REASON = 'published on this host with --no-install';

async function read(index: StoreIndex): Promise<string[]> {
  return (await index.getMeta<string[]>(KEY)) ?? [];
}

export async function isNotForThisHost(index: StoreIndex, manifestId: string): Promise<boolean> {
  return (await read(index)).includes(manifestId);
}

export async function markNotForThisHost(index: StoreIndex, manifestId: string): Promise<void> {
  const ids = await read(index);
  if (!ids.includes(manifestId)) await index.putMeta(KEY, [...ids, manifestId]);
}

/** A later plain publish (or a removal) of the same manifest lifts the mark. */
export async function unmarkNotForThisHost(index: StoreIndex, manifestId: string): Promise<void> {
  const ids = await read(index);
  if (ids.includes(manifestId)) await index.putMeta(KEY, ids.filter((x) => x !== manifestId));
}

/** Why this host does not install `sm` on purpose (its architecture, or --no-install), or null. */
export async function localSkipReason(index: StoreIndex, sm: SignedManifest): Promise<string | null> {
  if (!archAllowed(sm.manifest.runtime)) return `requires ${sm.manifest.runtime.architectures?.join(' or ')}, this machine is ${machineArch()}`;
  if (await isNotForThisHost(index, sm.id)) return NO_INSTALL_REASON;
  return null;
}
