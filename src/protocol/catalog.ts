/**
 * '/joblet-agent/catalog/1': what a peer has published and installed, and the manifests themselves.
 * This is the anti-entropy half of the swarm: gossip tells peers about news as it happens, and a
 * catalog listing on every new connection (and now and then) repairs whatever gossip missed, so an
 * agent that joins late or was offline catches up.
 */
import type { Libp2p, PeerId } from '@libp2p/interface';
import { callRpc, serveRpc } from './rpc.js';
import type { SignedManifest } from '../store/types.js';
import type { SignedRemoval } from './removal.js';
import type { ManifestNote } from './host-notes.js';

export const CATALOG_PROTOCOL = '/joblet-agent/catalog/1';

export interface CatalogEntry {
  id: string;
  name: string;
  version: string;
  createdAt: string;
}

export interface CatalogListing {
  manifests: CatalogEntry[];
  removals: SignedRemoval[];
  /** Manifest ids installed on the answering host, for the fleet view. */
  installed: string[];
  zone: string | null;
  arch: string;
  /** Manifests the host failed to install / skips, with why (see host-notes.ts; absent from older agents). */
  failed?: ManifestNote[];
  skipped?: ManifestNote[];
}

export interface CatalogProvider {
  listing(): Promise<CatalogListing>;
  manifest(id: string): Promise<SignedManifest | undefined>;
}

const LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: 32 * 1024 * 1024 };
const ID_RE = /^sha256:[0-9a-f]{64}$/;

export async function serveCatalog(node: Pick<Libp2p, 'handle'>, provider: CatalogProvider): Promise<void> {
  await serveRpc(node, CATALOG_PROTOCOL, LIMITS, async (req) => {
    const h = req.header as { t?: unknown; id?: unknown };
    if (h.t === 'list') {
      return { header: { t: 'list' }, payload: Buffer.from(JSON.stringify(await provider.listing())) };
    }
    if (h.t === 'get' && typeof h.id === 'string' && ID_RE.test(h.id)) {
      const sm = await provider.manifest(h.id);
      return sm ? { header: { t: 'manifest' }, payload: Buffer.from(JSON.stringify(sm)) } : { header: { t: 'miss' } };
    }
    throw new Error('unknown catalog request');
  });
}

/** A peer's listing, checked for shape only: manifests and removals are verified by the caller. */
export async function fetchListing(node: Pick<Libp2p, 'dialProtocol'>, peer: PeerId): Promise<CatalogListing> {
  const reply = await callRpc(node, peer, CATALOG_PROTOCOL, { t: 'list' }, LIMITS);
  const v = JSON.parse(reply.payload.toString('utf8')) as CatalogListing;
  const entryOk = (e: CatalogEntry) =>
    typeof e === 'object' && e !== null && ID_RE.test(String(e.id)) && typeof e.name === 'string' &&
    typeof e.version === 'string' && typeof e.createdAt === 'string';
  if (
    typeof v !== 'object' || v === null || !Array.isArray(v.manifests) || !v.manifests.every(entryOk) ||
    !Array.isArray(v.removals) || !Array.isArray(v.installed) || !v.installed.every((i) => ID_RE.test(String(i))) ||
    !(v.zone === null || typeof v.zone === 'string') || typeof v.arch !== 'string'
  ) {
    throw new Error(`peer ${peer.toString()} sent a malformed catalog listing`);
  }
  return v;
}

/** The raw signed manifest as the peer sent it (unverified), or undefined when it does not have it. */
export async function fetchManifest(node: Pick<Libp2p, 'dialProtocol'>, peer: PeerId, id: string): Promise<unknown> {
  const reply = await callRpc(node, peer, CATALOG_PROTOCOL, { t: 'get', id }, LIMITS);
  const h = reply.header as { t?: unknown };
  if (h.t === 'miss') return undefined;
  if (h.t !== 'manifest') throw new Error(`peer ${peer.toString()} answered a manifest request with "${String(h.t)}"`);
  return JSON.parse(reply.payload.toString('utf8'));
}
