// The install record of a tree that is in place: written by a finished install or publish, and by the
// recovery at start for a commit a kill interrupted. The manifest the record replaces is forgotten (its
// chunks become garbage unless another manifest uses them).
//
// The size is the manifest's: the content stream holds each regular file's bytes once (a hardlink is an entry
// without content), and the tree in place was written or verified against that manifest. Walking the tree
// instead cost one lstat per entry (about 1 s of the main thread for 21,000 files).
import type { Store } from '../../store/store.js';
import type { InstallRecord, SignedManifest } from '../../store/types.js';

export async function recordInstall(store: Store, sm: SignedManifest, path: string): Promise<InstallRecord> {
  const { name, version } = sm.manifest.runtime;
  const previous = await store.index.getInstall(name, version);
  const record: InstallRecord = {
    name, version, manifestId: sm.id, path,
    sizeBytes: sm.manifest.content.size, installedAt: new Date().toISOString(),
  };
  await store.index.putInstall(record);
  if (previous && previous.manifestId !== sm.id) await store.index.deleteManifest(previous.manifestId);
  return record;
}
