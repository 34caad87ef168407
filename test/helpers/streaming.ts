// Publishing into one store and delivering chunks to another as a Download does, without a network: for the
// tests of the streaming install.
import type { ExecutionContext } from 'ava';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { RuntimesDir } from '../../src/runtime/install.js';
import { DEFAULT_LIMITS } from '../../src/runtime/types.js';
import { Store } from '../../src/store/store.js';
import { readPackage, StripGuessError } from '../../src/runtime/canonical.js';
import { TreeIngest } from '../../src/store/ingest.js';
import { buildManifest, publicKeyOf, signManifest } from '../../src/store/manifest.js';
import type { SignedManifest } from '../../src/store/types.js';
import type { LiveChunkSource } from '../../src/agent/install/chunk-source.js';
import { listAll } from './agent.js';

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

/**
 * What a Download does per chunk: receive (verify, store) the bytes as a peer sends them, then hand them on.
 * Returns the decoded bytes handed on, and whether they were the receiver's own (and so may be freed).
 */
export async function deliver(from: Store, to: Store, feed: LiveChunkSource, id: string): Promise<{ raw: Buffer; own: boolean }> {
  const stored = await from.chunks.getStored(id);
  const { raw, own } = await to.chunks.receive(id, stored.codec, Buffer.from(stored.data), stored.size);
  feed.arrived(id, raw, own);
  return { raw, own };
}

/**
 * Two hosts in `dir`: a publisher's store holding `pkg` as published, and a receiver's empty store and runtimes
 * dir (separate data dirs, as on two hosts), closed when the test ends.
 */
export async function publisherAndReceiver(t: ExecutionContext, dir: string, pkg: string) {
  const pubStore = await Store.open(path.join(dir, 'pub'));
  t.teardown(() => pubStore.close());
  const { sm } = await publishInto(pubStore, pkg);
  const store = await Store.open(path.join(dir, 'data'));
  t.teardown(() => store.close());
  await fs.mkdir(path.join(dir, 'runtimes'));
  const runtimes = new RuntimesDir(path.join(dir, 'runtimes'));
  return { pubStore, store, sm, runtimes, ctx: { store, runtimes, limits: DEFAULT_LIMITS } };
}

/** What is in a runtimes dir besides the agent's own (empty) staging and trash dirs. */
export async function leftovers(runtimesDir: string): Promise<string[]> {
  return (await listAll(runtimesDir)).filter((p) => !/^\.joblet-agent(\/(staging|trash))?$/.test(p));
}
