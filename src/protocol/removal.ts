/**
 * Signed removals: `joblet-agent remove NAME[@VERSION]` on a publisher becomes a statement, signed with the
 * publisher key, that every agent applies and keeps as a tombstone, so anti-entropy does not bring the
 * runtime back. A later publish (newer createdAt) of the same name supersedes the tombstone.
 */
import crypto, { type KeyObject } from 'node:crypto';
import { canonicalJson, parsePublicKey, publicKeyOf } from '../store/manifest.js';
import { assertNotFromTheFuture } from '../store/clock.js';

export interface Removal {
  name: string;
  /** null = every version of `name`. */
  version: string | null;
  /** ISO 8601; manifests of the same name (and version) created before this are removed. */
  createdAt: string;
  publisher: string;
}

export interface SignedRemoval {
  removal: Removal;
  /** Ed25519 over canonicalJson(removal), base64. */
  signature: string;
}

const NAME_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;

export function signRemoval(name: string, version: string | null, key: KeyObject, now = new Date()): SignedRemoval {
  const removal: Removal = { name, version, createdAt: now.toISOString(), publisher: publicKeyOf(key) };
  return { removal, signature: crypto.sign(null, canonicalJson(removal), key).toString('base64') };
}

/** Validate shape, trust and signature; throws one sentence naming the problem. */
export function verifyRemoval(value: unknown, trusted: string[]): SignedRemoval {
  const v = value as SignedRemoval;
  const r = v?.removal;
  if (
    typeof v !== 'object' || v === null || typeof v.signature !== 'string' || typeof r !== 'object' || r === null ||
    typeof r.name !== 'string' || !NAME_RE.test(r.name) ||
    !(r.version === null || (typeof r.version === 'string' && r.version.length > 0 && r.version.length <= 128)) ||
    typeof r.createdAt !== 'string' || Number.isNaN(Date.parse(r.createdAt)) || typeof r.publisher !== 'string' ||
    Object.keys(r).length !== 4 || Object.keys(v).length !== 2
  ) {
    throw new Error('removal message is malformed');
  }
  if (!trusted.includes(r.publisher)) {
    throw new Error(`removal of ${label(r)} is signed by ${r.publisher}, which is not a trusted publisher`);
  }
  const ok = crypto.verify(null, canonicalJson(r), parsePublicKey(r.publisher), Buffer.from(v.signature, 'base64'));
  if (!ok) throw new Error(`removal of ${label(r)} has an invalid signature`);
  assertNotFromTheFuture(r.createdAt, `removal of ${label(r)}`);
  return { removal: { ...r }, signature: v.signature };
}

export function label(r: Pick<Removal, 'name' | 'version'>): string {
  return r.version === null ? r.name : `${r.name}@${r.version}`;
}

/** Does this removal cover a manifest of `name@version` created at `createdAt`? */
export function removalCovers(r: Removal, name: string, version: string, createdAt: string): boolean {
  return r.name === name && (r.version === null || r.version === version) && Date.parse(createdAt) <= Date.parse(r.createdAt);
}
