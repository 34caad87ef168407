// Publishing into one store and delivering chunks to another as a Download does, without a network: for the
// tests of the streaming install.
import { generateKeyPairSync } from 'node:crypto';
import { readPackage, StripGuessError } from '../../src/runtime/canonical.js';
import { TreeIngest } from '../../src/store/ingest.js';
import { buildManifest, publicKeyOf, signManifest } from '../../src/store/manifest.js';
import type { Store } from '../../src/store/store.js';
import type { SignedManifest } from '../../src/store/types.js';
import type { LiveChunkSource } from '../../src/agent/install/chunk-source.js';

export const { privateKey } = generateKeyPairSync('ed25519');

/** Publishes `pkg` into `store` (as `joblet-agent publish` cuts it), signed with `privateKey`. */
export async function publishInto(store: Store, pkg: string, strip: 'auto' | 'none' = 'auto'): Promise<{ sm: SignedManifest; created: string[] }> {
  const ingest = new TreeIngest(store.chunks);
  let info;
  try {
    info = await readPackage(pkg, ingest, { strip });
  } catch (err) {
    await ingest.abort();
    if (err instanceof StripGuessError) return publishInto(store, pkg, 'none');
    throw err;
  }
  const tree = await ingest.finish();
  const sm = signManifest(buildManifest(info.meta, tree, publicKeyOf(privateKey)), privateKey);
  return { sm, created: tree.createdIds };
}

/** What a Download does per chunk: receive (verify, store) the bytes as a peer sends them, then hand them on. */
export async function deliver(from: Store, to: Store, feed: LiveChunkSource, id: string): Promise<void> {
  const stored = await from.chunks.getStored(id);
  const { raw } = await to.chunks.receive(id, stored.codec, Buffer.from(stored.data), stored.size);
  feed.arrived(id, raw);
}
