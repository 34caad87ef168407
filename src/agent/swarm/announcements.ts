// The gossip announcements of the swarm, checked before anything acts on them or relays them.
//
// Gossipsub runs the topic validator on every message before it is delivered here and before it is forwarded:
// a message it rejects goes nowhere else and costs its sender gossipsub score. So every rule that a well-formed
// announcement from a fleet member obeys is checked there, cheap checks (size, shape, trust) before any
// signature is verified.
import { parseCluster } from './nearness.js';
import { parseProgress, type HostProgress } from './fleet-state.js';
import type { Message } from '@libp2p/gossipsub';
import { TopicValidatorResult } from '@libp2p/gossipsub';
import type { PeerId } from '@libp2p/interface';
import { verifyRemoval, type SignedRemoval } from '../../protocol/removal.js';
import { sanitizeZone } from './fleet-map.js';

/**
 * Largest announcement accepted: a state message with MAX_INSTALLED_IDS ids plus full progress lists
 * (fleet-state.ts: 64 downloads, failures and skip reasons) fits with room to spare.
 */
export const MAX_GOSSIP_BYTES = 128 * 1024;
/** Manifest ids one host may announce installed; far more runtimes than any host keeps. */
export const MAX_INSTALLED_IDS = 512;

const ID_RE = /^sha256:[0-9a-f]{64}$/;
const NAME_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;
const ARCH_RE = /^[a-z0-9_]{1,16}$/;

export interface PublishedAnnouncement { t: 'published'; id: string; name: string; version: string; publisher: string }
export interface StateAnnouncement { t: 'state'; host: string; installed: string[]; zone: string | null; cluster: string | null; arch: string; progress: HostProgress }
export interface RemovedAnnouncement { t: 'removed'; removal: SignedRemoval }
export type Announcement = PublishedAnnouncement | StateAnnouncement | RemovedAnnouncement;

/** The announcement is not one a fleet member would send; the text says which rule it broke. */
export class AnnouncementError extends Error {
  override name = 'AnnouncementError';
}

/** Publisher keys are compared the way the manifest check compares them. */
export function isTrustedKey(key: unknown, trusted: readonly string[]): boolean {
  if (typeof key !== 'string') return false;
  const k = key.trim().toLowerCase();
  return trusted.some((t) => t.trim().toLowerCase() === k);
}

/** Every required key present, nothing outside required + optional. */
function keysWithin(o: Record<string, unknown>, required: string[], optional: string[]): boolean {
  return required.every((k) => Object.hasOwn(o, k)) && Object.keys(o).every((k) => required.includes(k) || optional.includes(k));
}

function keysExactly(o: Record<string, unknown>, keys: string[]): boolean {
  const have = Object.keys(o);
  return have.length === keys.length && keys.every((k) => Object.hasOwn(o, k));
}

/**
 * Parse and check one announcement signed by `author` (gossipsub's StrictSign: the author's libp2p key signed
 * it). Trust is checked before signatures; a removal's signature is verified last.
 */
export function parseAnnouncement(data: Uint8Array, author: string, trusted: readonly string[]): Announcement {
  if (data.length > MAX_GOSSIP_BYTES) throw new AnnouncementError(`announcement of ${data.length} bytes exceeds ${MAX_GOSSIP_BYTES}`);
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(data).toString('utf8'));
  } catch {
    throw new AnnouncementError('announcement is not JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new AnnouncementError('announcement is not a JSON object');
  const o = v as Record<string, unknown>;
  switch (o.t) {
    case 'published': {
      if (!keysExactly(o, ['t', 'id', 'name', 'version', 'publisher']) || typeof o.id !== 'string' || !ID_RE.test(o.id) ||
        typeof o.name !== 'string' || !NAME_RE.test(o.name) || typeof o.version !== 'string' || o.version.length === 0 ||
        o.version.length > 128 || typeof o.publisher !== 'string') {
        throw new AnnouncementError("'published' announcement is malformed");
      }
      // Cheap and decisive: an untrusted publisher's manifest would be refused after a fetch of up to megabytes.
      if (!isTrustedKey(o.publisher, trusted)) throw new AnnouncementError(`'published' ${o.name}@${o.version} is by an untrusted publisher`);
      return { t: 'published', id: o.id, name: o.name, version: o.version, publisher: o.publisher };
    }
    case 'state': {
      if (!keysWithin(o, ['t', 'host', 'installed', 'zone', 'arch'], ['cluster', 'downloading', 'failed', 'skipped', 'skipReasons', 'hostname']) || typeof o.host !== 'string' ||
        !Array.isArray(o.installed) || o.installed.length > MAX_INSTALLED_IDS ||
        !o.installed.every((x) => typeof x === 'string' && ID_RE.test(x)) ||
        !(o.zone === null || typeof o.zone === 'string') || typeof o.arch !== 'string' || !ARCH_RE.test(o.arch)) {
        throw new AnnouncementError("'state' announcement is malformed");
      }
      // A host speaks only for itself: the libp2p key that signed the message must be the host it describes.
      if (o.host !== author) throw new AnnouncementError(`'state' of host ${o.host} was signed by ${author}`);
      const zone = o.zone === null ? null : sanitizeZone(o.zone);
      if (o.zone !== null && zone === null) throw new AnnouncementError("'state' announcement has an invalid zone");
      if (o.cluster !== undefined && o.cluster !== null && parseCluster(o.cluster) === null) throw new AnnouncementError("'state' announcement has an invalid cluster");
      return { t: 'state', host: o.host, installed: o.installed as string[], zone, cluster: parseCluster(o.cluster), arch: o.arch, progress: parseProgress(o) };
    }
    case 'removed': {
      if (!keysExactly(o, ['t', 'removal'])) throw new AnnouncementError("'removed' announcement is malformed");
      // verifyRemoval checks shape, then trust, then the signature.
      return { t: 'removed', removal: verifyRemoval(o.removal, [...trusted]) };
    }
    default:
      throw new AnnouncementError(`announcement has unknown kind ${JSON.stringify(o.t)}`);
  }
}

/**
 * The gossipsub topic validator: only signed, well-formed announcements from trusted sources are delivered
 * and relayed. Rejections are counted (per reason kind) for visibility; nothing is logged per message, since a
 * flood of bad messages must not become a flood of log lines.
 */
export function announcementValidator(trusted: () => readonly string[], rejected: { count: number }) {
  return (_from: PeerId, msg: Message): TopicValidatorResult => {
    if (msg.type !== 'signed') {
      rejected.count++;
      return TopicValidatorResult.Reject;
    }
    try {
      parseAnnouncement(msg.data, msg.from.toString(), trusted());
      return TopicValidatorResult.Accept;
    } catch {
      rejected.count++;
      return TopicValidatorResult.Reject;
    }
  };
}
