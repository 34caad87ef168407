/**
 * '/joblet-agent/catalog/1': what a peer has published and installed, and the manifests themselves.
 * This is the anti-entropy half of the swarm: gossip tells peers about news as it happens, and a
 * catalog listing on every new connection (and now and then) repairs whatever gossip missed, so an
 * agent that joins late or was offline catches up.
 */
import { createHash } from 'node:crypto';
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
  /** The manifest's publisher key, so a receiver skips untrusted manifests without fetching them. */
  publisher?: string;
}

export interface CatalogListing {
  manifests: CatalogEntry[];
  removals: SignedRemoval[];
  /** Manifest ids installed on the answering host, for the fleet view. */
  installed: string[];
  zone: string | null;
  /** The implicit zone the host announces (its network prefix, see swarm/nearness.ts); absent from older agents. */
  cluster?: string | null;
  arch: string;
  /** Manifests the host failed to install / skips, with why (see host-notes.ts; absent from older agents). */
  failed?: ManifestNote[];
  skipped?: ManifestNote[];
}

export interface CatalogProvider {
  listing(): Promise<CatalogListing>;
  manifest(id: string): Promise<SignedManifest | undefined>;
  /**
   * A hash of what anti-entropy repairs (manifest ids and signed removals, see catalogDigest): two agents whose
   * digests agree have nothing to tell each other, and skip the listing.
   */
  digest(): Promise<string>;
}

/**
 * Bounds on what one listing may carry. They are far above a real fleet (a host keeps a handful of runtimes)
 * and keep a listing under MAX_LISTING_BYTES; a larger listing is refused whole, not parsed.
 */
export const MAX_LISTED_MANIFESTS = 2048;
export const MAX_LISTED_REMOVALS = 1024;
export const MAX_LISTED_INSTALLED = 512;
export const MAX_LISTING_BYTES = 1024 * 1024;
/**
 * Largest signed manifest accepted. A manifest lists every chunk (about 150 bytes each, ~1,000 for a 1 GiB
 * runtime); 16 MiB leaves room for per-entry metadata of trees of tens of thousands of files.
 */
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

/** Requests carry no payload. */
const REQUEST_LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: 0 };
const LIST_LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: MAX_LISTING_BYTES };
const MANIFEST_LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: MAX_MANIFEST_BYTES };
const DIGEST_LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: 0 };
const ID_RE = /^sha256:[0-9a-f]{64}$/;
const DIGEST_RE = /^[0-9a-f]{64}$/;

/** The digest of a catalog: order-independent, over manifest ids and the signed removals' identities. */
export function catalogDigest(manifestIds: Iterable<string>, removals: Iterable<SignedRemoval>): string {
  const ids = [...new Set(manifestIds)].sort();
  const rs = [...removals].map((r) => r.signature).sort();
  return createHash('sha256').update(JSON.stringify([ids, rs])).digest('hex');
}

export async function serveCatalog(node: Pick<Libp2p, 'handle'>, provider: CatalogProvider): Promise<void> {
  await serveRpc(node, CATALOG_PROTOCOL, REQUEST_LIMITS, async (req) => {
    const h = req.header as { t?: unknown; id?: unknown };
    if (h.t === 'digest') return { header: { t: 'digest', d: await provider.digest() } };
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
  const reply = await callRpc(node, peer, CATALOG_PROTOCOL, { t: 'list' }, LIST_LIMITS);
  const v = JSON.parse(reply.payload.toString('utf8')) as CatalogListing;
  const entryOk = (e: CatalogEntry) =>
    typeof e === 'object' && e !== null && ID_RE.test(String(e.id)) && typeof e.name === 'string' &&
    typeof e.version === 'string' && typeof e.createdAt === 'string' &&
    (e.publisher === undefined || typeof e.publisher === 'string');
  if (
    typeof v !== 'object' || v === null || !Array.isArray(v.manifests) || v.manifests.length > MAX_LISTED_MANIFESTS ||
    !v.manifests.every(entryOk) || !Array.isArray(v.removals) || v.removals.length > MAX_LISTED_REMOVALS ||
    !Array.isArray(v.installed) || v.installed.length > MAX_LISTED_INSTALLED || !v.installed.every((i) => ID_RE.test(String(i))) ||
    !(v.zone === null || typeof v.zone === 'string') || typeof v.arch !== 'string'
  ) {
    throw new Error(`peer ${peer.toString()} sent a malformed catalog listing`);
  }
  return v;
}

/** The raw signed manifest as the peer sent it (unverified), or undefined when it does not have it. */
export async function fetchManifest(node: Pick<Libp2p, 'dialProtocol'>, peer: PeerId, id: string): Promise<unknown> {
  const reply = await callRpc(node, peer, CATALOG_PROTOCOL, { t: 'get', id }, MANIFEST_LIMITS);
  const h = reply.header as { t?: unknown };
  if (h.t === 'miss') return undefined;
  if (h.t !== 'manifest') throw new Error(`peer ${peer.toString()} answered a manifest request with "${String(h.t)}"`);
  return JSON.parse(reply.payload.toString('utf8'));
}

/** The peer's catalog digest (see CatalogProvider.digest). */
export async function fetchDigest(node: Pick<Libp2p, 'dialProtocol'>, peer: PeerId): Promise<string> {
  const reply = await callRpc(node, peer, CATALOG_PROTOCOL, { t: 'digest' }, DIGEST_LIMITS);
  const h = reply.header as { t?: unknown; d?: unknown };
  if (h.t !== 'digest' || typeof h.d !== 'string' || !DIGEST_RE.test(h.d)) {
    throw new Error(`peer ${peer.toString()} sent a malformed catalog digest`);
  }
  return h.d;
}
