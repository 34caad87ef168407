// Nearness without labels: which peers count as "this host's zone" when the operator gave no --zone.
//
// The zone rule (download.ts, mayUseFarPeer) lets a chunk cross to a zone once: one designated member of the
// zone fetches it from afar, the others get it from that member. With labels the zones are the operator's.
// Without them an agent still knows things nobody told it:
//  * its own addresses and its peers' addresses: hosts of one rack or subnet share a network prefix
//    (an IPv4 /24, an IPv6 /64). Every agent announces the prefix it is reached on as its "cluster"; hosts
//    that announce the same cluster form an implicit zone. It has to be announced rather than guessed by each
//    observer, because the designated-member rule needs every member of a zone to agree on the member list.
//  * the round-trip time of each peer (pings every few seconds): a peer that announces this host's cluster
//    but answers far slower than the rest of the cluster (a prefix stretched over a WAN, a VPN) is treated
//    as far by this host. Only the floor of its RTT samples counts, so a peer whose link is merely busy
//    (queues full of chunks) is not pushed out.
//  * the delivery rate of each peer, which the scheduler already ranks holders by inside a zone tier.
// A fleet on one prefix is one implicit zone, which changes nothing (no peer is ever far); loopback,
// link-local and unspecified addresses give no cluster at all, so loopback test fleets behave as before.
// Labels stay the override: a host with --zone compares labels only.

/** An RTT at least this many times the cluster's typical one, and ... */
const RTT_OUTLIER_FACTOR = 4;
/** ... at least this many ms above it, marks a same-prefix peer as far (LAN RTTs are well under a ms). */
const RTT_OUTLIER_MIN_MS = 2;
/** RTT samples kept per peer; the floor of these is the peer's distance. */
const RTT_SAMPLES = 8;
/** A peer is judged only after this many samples: one slow answer from a loaded host proves nothing. */
const MIN_SAMPLES = 3;
/** A cluster label as announced: "net:" + prefix; anything else from a peer is ignored. */
const CLUSTER_RE = /^net:[0-9a-f.:]{1,45}\/(24|64)$/;

/**
 * The network prefix of an IP address, as "a.b.c.0/24" or "x:x:x:x::/64"; null for addresses that say
 * nothing about where a host is: loopback, link-local, unspecified, multicast, or not an IP address.
 */
export function addressPrefix(ip: string): string | null {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (v4) {
    const o = v4.slice(1).map(Number);
    if (o.some((x) => x > 255)) return null;
    if (o[0] === 127 || o[0] === 0 || (o[0] === 169 && o[1] === 254) || o[0]! >= 224) return null;
    return `${o[0]}.${o[1]}.${o[2]}.0/24`;
  }
  if (!ip.includes(':')) return null;
  const groups = expandIpv6(ip);
  if (groups === null) return null;
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) return addressPrefix(`${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`);
  if (groups.every((g) => g === 0)) return null; // ::
  if (groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1) return null; // ::1
  if ((groups[0]! & 0xffc0) === 0xfe80 || (groups[0]! & 0xff00) === 0xff00) return null; // link-local, multicast
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
}

/** Eight 16-bit groups of an IPv6 address, or null when it is not one (zone ids like %eth0 are dropped). */
function expandIpv6(ip: string): number[] | null {
  const bare = ip.split('%')[0]!.toLowerCase();
  const halves = bare.split('::');
  if (halves.length > 2) return null;
  const parse = (s: string) => (s === '' ? [] : s.split(':'));
  const head = parse(halves[0]!);
  const tail = halves.length === 2 ? parse(halves[1]!) : [];
  // A trailing dotted quad (::ffff:1.2.3.4) stands for two groups.
  const last = (tail.length ? tail : head).at(-1);
  if (last !== undefined && last.includes('.')) {
    const q = last.split('.').map(Number);
    if (q.length !== 4 || q.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return null;
    const list = tail.length ? tail : head;
    list.splice(list.length - 1, 1, ((q[0]! << 8) | q[1]!).toString(16), ((q[2]! << 8) | q[3]!).toString(16));
  }
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (!all.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return null;
  return all.map((g) => parseInt(g, 16));
}

/** The IP address in a multiaddr string ("/ip4/198.18.1.3/tcp/7946/p2p/..."), or null. */
export function multiaddrIp(ma: string): string | null {
  return /^\/ip[46]\/([^/]+)/.exec(ma)?.[1] ?? null;
}

/**
 * This host's cluster, from its own addresses: the prefix of the one it is reached on. With several
 * candidate prefixes (several interfaces, say a container bridge), the one most peers connect from wins, so
 * the hosts of a subnet agree; ties go to the lowest prefix, so the choice is stable. Null when no address
 * has a usable prefix (a loopback-only test fleet).
 */
export function ownCluster(ownAddrs: readonly string[], peerAddrs: readonly string[] = []): string | null {
  const mine = new Set<string>();
  for (const a of ownAddrs) {
    const p = addressPrefix(multiaddrIp(a) ?? a);
    if (p !== null) mine.add(p);
  }
  if (mine.size === 0) return null;
  const votes = new Map<string, number>();
  for (const a of peerAddrs) {
    const p = addressPrefix(multiaddrIp(a) ?? a);
    if (p !== null && mine.has(p)) votes.set(p, (votes.get(p) ?? 0) + 1);
  }
  const best = [...mine].sort((x, y) => (votes.get(y) ?? 0) - (votes.get(x) ?? 0) || (x < y ? -1 : x > y ? 1 : 0))[0]!;
  return `net:${best}`;
}

/** A cluster label from a peer's announcement, or null when absent or not one we would announce. */
export function parseCluster(v: unknown): string | null {
  return typeof v === 'string' && CLUSTER_RE.test(v) ? v : null;
}

/** This host's zone for the zone rule: the operator's label, else the implicit one (or none). */
export function localZone(label: string | null, cluster: string | null): string | null {
  return label ?? cluster;
}

/**
 * A peer's zone as this host sees it, from what the peer announced (`zone` = its --zone label, `cluster` =
 * its implicit zone). A labelled host compares labels only (the operator decided); an
 * unlabelled one compares clusters. Null = unknown (ranked between near and far, never held back).
 */
export function peerZone(localLabel: string | null, peer: { zone: string | null; cluster: string | null } | undefined): string | null {
  if (peer === undefined) return null;
  return localLabel !== null ? peer.zone : peer.cluster;
}

/** Keeps the last few RTT samples of each peer and says which same-cluster peers are RTT outliers. */
export class RttFloor {
  private readonly samples = new Map<string, number[]>();

  note(peer: string, ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    const list = this.samples.get(peer) ?? [];
    list.push(ms);
    if (list.length > RTT_SAMPLES) list.shift();
    this.samples.set(peer, list);
  }

  forget(peer: string): void {
    this.samples.delete(peer);
  }

  /** The lowest recent RTT: queueing behind bulk transfers only ever adds to it. */
  floor(peer: string): number | undefined {
    const list = this.samples.get(peer);
    return list && list.length ? Math.min(...list) : undefined;
  }

  /**
   * Of `peers` (those announcing this host's zone), the ones whose RTT floor is far above the median floor
   * of the group: RTT_OUTLIER_FACTOR times and RTT_OUTLIER_MIN_MS more. Only peers with MIN_SAMPLES samples
   * are judged, and only among three or more such peers, so a few slow answers cannot reshape a small zone.
   */
  outliers(peers: Iterable<string>): Set<string> {
    const floors = [...peers].filter((p) => (this.samples.get(p)?.length ?? 0) >= MIN_SAMPLES)
      .map((p) => [p, this.floor(p)!] as const);
    const out = new Set<string>();
    if (floors.length < 3) return out;
    const sorted = floors.map(([, f]) => f).sort((a, b) => a - b);
    const typical = sorted[(sorted.length - 1) >> 1]!; // lower median: the near majority sets the scale
    for (const [p, f] of floors) if (f >= typical * RTT_OUTLIER_FACTOR && f - typical >= RTT_OUTLIER_MIN_MS) out.add(p);
    return out;
  }
}
