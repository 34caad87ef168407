// What this agent knows of the other hosts of the fleet: what each has installed, its zone and architecture.
//
// Entries come from a host's own signed `state` announcements and from catalog listings it answered
// directly, so nobody can speak for another host. The map is bounded (the stalest entry makes room) and a host
// not heard from for a while is forgotten, so a departed host stops holding zone duties and being counted as
// a source, and a member minting identities cannot grow it without limit.
import { ZONE_RE } from '../config.js';
import { parseCluster } from './nearness.js';
import type { HostProgress } from './fleet-state.js';

/** Hosts remembered at once; far above the peers a host is ever told about in a listing or a minute of gossip. */
export const MAX_FLEET_HOSTS = 4096;

const ARCH_RE = /^[a-z0-9_]{1,16}$/;

/** A zone label as accepted from the config or a peer (ZONE_RE), or null when it is not one. */
export function sanitizeZone(zone: unknown): string | null {
  return typeof zone === 'string' && ZONE_RE.test(zone) ? zone : null;
}

export interface FleetHost {
  installed: ReadonlySet<string>;
  zone: string | null;
  /** The implicit zone the host announces (its network prefix, nearness.ts), or null. */
  cluster: string | null;
  /** What it is downloading, what failed and what it skipped (fleet-state.ts), as last announced. */
  progress?: HostProgress;
  arch: string;
  seenAt: number;
}

export class FleetMap {
  private readonly hosts = new Map<string, FleetHost>();

  constructor(
    /** A host not heard from for this long (and not connected) is forgotten. */
    private readonly ttlMs: number,
    private readonly maxHosts = MAX_FLEET_HOSTS,
  ) {}

  get size(): number {
    return this.hosts.size;
  }

  /** Record what `host` says of itself now. Returns true when that is news (a new host, or a change). */
  set(host: string, info: { installed: Iterable<string>; zone: string | null; cluster?: string | null; arch: string; progress?: HostProgress }, now = Date.now()): boolean {
    const before = this.hosts.get(host);
    const next: FleetHost = {
      installed: new Set(info.installed),
      zone: sanitizeZone(info.zone),
      cluster: parseCluster(info.cluster),
      // A catalog listing carries no progress: keep what the host last announced.
      progress: info.progress ?? before?.progress,
      arch: typeof info.arch === 'string' && ARCH_RE.test(info.arch) ? info.arch : 'unknown',
      seenAt: now,
    };
    // Re-inserting keeps the Map in least-recently-heard order, so the first key is always the stalest.
    this.hosts.delete(host);
    this.hosts.set(host, next);
    while (this.hosts.size > this.maxHosts) this.hosts.delete(this.hosts.keys().next().value!);
    return before === undefined || before.zone !== next.zone || before.cluster !== next.cluster || before.installed.size !== next.installed.size ||
      [...next.installed].some((id) => !before.installed.has(id));
  }

  /** The host is connected to us: it is alive whatever it last announced, keep it. */
  touch(host: string, now = Date.now()): void {
    const h = this.hosts.get(host);
    if (h === undefined) return;
    this.hosts.delete(host);
    this.hosts.set(host, { ...h, seenAt: now });
  }

  get(host: string): FleetHost | undefined {
    return this.hosts.get(host);
  }

  entries(): IterableIterator<[string, FleetHost]> {
    return this.hosts.entries();
  }

  /** Forget hosts not heard from within the TTL. Returns how many were dropped. */
  expire(now = Date.now()): number {
    let dropped = 0;
    // Stalest first: stop at the first one still fresh.
    for (const [host, h] of this.hosts) {
      if (now - h.seenAt <= this.ttlMs) break;
      this.hosts.delete(host);
      dropped++;
    }
    return dropped;
  }
}
