/**
 * The decisions of the swarm downloader: which chunk to ask for next, and from which peer.
 *
 * Pure logic: no I/O, no timers, no libp2p. The caller feeds in what peers hold and how requests ended,
 * passes the current time in, and issues the requests `next()` returns. That keeps every policy (rarest first,
 * nearest holder, caps, per-source windows, busy backoff, endgame) deterministic under an injected random
 * source and testable without a network.
 *
 * Costs: `next()` is O(missing chunks x open peers); every other call is O(1) apart from `setPeerHave` and
 * `removePeer`/`ban`, which are O(chunks) for that one peer.
 */
import type { ChunkRef } from '../../store/types.js';

export interface PeerInfo {
  rttMs?: number;
  zone?: string | null;
}

export interface Assignment {
  peer: string;
  index: number;
}

export interface SchedulerOptions {
  /** Requests outstanding to one peer at once, at most (see latencyTargetMs for what is allowed below it). */
  maxInFlightPerPeer: number;
  /**
   * Deliveries from a peer that take longer than this (request to last byte), and timeouts, halve the requests
   * this host keeps outstanding to it, down to one; quicker ones (under half of it) let it grow back by one, up
   * to maxInFlightPerPeer. A new peer starts at one. 0 = always maxInFlightPerPeer. See PeerState.window for why.
   */
  latencyTargetMs: number;
  /** Requests outstanding in total (endgame duplicates count). */
  maxInFlightTotal: number;
  /** Enter endgame when at most this many chunks are missing and all of them are in flight; 0 disables it. */
  endgameRemaining: number;
  /** After a peer answers 'busy' (or a request to it fails), do not ask it again for this long. */
  busyBackoffMs: number;
  /**
   * How long a peer's news that it is fetching a chunk counts, unless its `have` of the chunk comes first (see
   * peerFetching). The requester's own timeout, so a fetch that fails stops counting when it would have ended.
   */
  fetchHintMs: number;
  /** This host's zone label; holders in the same zone are preferred. */
  localZone?: string | null;
  /**
   * With a localZone: may chunk `index` be fetched from a peer in another zone now? `nearHolder` tells
   * whether a connected peer of this zone holds it (busy or not). Lets the hosts of one zone split the far
   * fetches between them, so each chunk crosses a scarce uplink about once and then spreads inside the
   * zone. Absent = always.
   */
  mayUseFarPeer?: (index: number, now: number, nearHolder: boolean) => boolean;
  /**
   * Chunks the install cannot do without, [from, to), or undefined when there are none: the entry list's,
   * without which nothing can be extracted. They are asked for ahead of everything else, rarest first, a few at
   * once from any holder; one that a single peer holds, only while nothing else of the list is on its way. While
   * any of them is on its way nothing else is asked for. Absent or undefined = pure rarest first.
   */
  firstNeeded?: () => { from: number; to: number } | undefined;
  /** Injectable for tests; must return values in [0, 1). */
  random?: () => number;
}

/** Why a request failed. A 'miss' means the peer does not hold the chunk after all. */
export type FailReason = 'miss' | 'timeout' | 'error';

export interface PeerStats {
  peer: string;
  inFlight: number;
  /** Chunks this peer supplied first (late duplicates are not counted). */
  delivered: number;
  /** Bytes received from this peer, duplicates included: it is traffic that happened. */
  bytes: number;
  /** Smoothed delivery rate in bytes per second, null until the first delivery. */
  rateBps: number | null;
  rttMs: number | null;
  zone: string | null;
  /** Requests this host may keep outstanding to the peer now, 1..maxInFlightPerPeer (see latencyTargetMs). */
  window: number;
  banned: boolean;
  /** False after removePeer; the counters are kept so a download's accounting adds up across reconnects. */
  connected: boolean;
}

export interface SchedulerStats {
  total: number;
  have: number;
  bytesHave: number;
  bytesTotal: number;
  peers: PeerStats[];
}

const DEFAULTS: Omit<SchedulerOptions, 'localZone' | 'random' | 'mayUseFarPeer' | 'firstNeeded'> = {
  maxInFlightPerPeer: 4,
  latencyTargetMs: 1000,
  maxInFlightTotal: 16,
  endgameRemaining: 8,
  busyBackoffMs: 500,
  fetchHintMs: 30_000,
};

/** Weight of the newest sample in the delivery-rate average: recent enough to follow a peer that slows down. */
const RATE_EWMA_WEIGHT = 0.3;
/** Rates within about this factor of each other rank equal, so RTT and chance can spread load between them. */
const RATE_BUCKET_FACTOR = 1.25;
/** RTT buckets per doubling: 1 ms and 2 ms differ, 50 ms and 55 ms do not. */
const RTT_BUCKETS_PER_DOUBLING = 4;
/** Floor on a delivery's duration so a sub-millisecond loopback transfer does not produce an infinite rate. */
const MIN_DELIVERY_MS = 0.05;
/** At most this many peers are asked for one chunk at once, endgame included. */
const MAX_REQUESTS_PER_CHUNK = 2;
/** Chunks one peer may be counted as fetching at once (twice the default maxInFlightTotal). */
const MAX_FETCHING_PER_PEER = 32;
/** How many of the install's first-needed chunks (the entry list) may be on their way at once, ahead of rarest first. */
const FIRST_NEEDED_WINDOW = 4;

interface PeerState {
  id: string;
  /** has[i] === 1 when the peer holds chunk i. */
  has: Uint8Array;
  inFlight: Set<number>;
  /**
   * Requests this host may keep outstanding to the peer now, 1..maxInFlightPerPeer. A peer's connection gets
   * its share of the peer's upload whether one request of ours waits there or four, so the extra ones add no
   * throughput once its link is the bottleneck, only delay: they wait behind each other, and behind the
   * megabytes TCP buffers for every other host the peer serves. At 16 hosts on 20 Mbit/s links the publisher had
   * 19 MB in its sockets' send queues and answered in 10.7 s (median); a chunk in flight that long still looks
   * held by the publisher alone to every other host, which asks for it too: the publisher sent 1.71 times the
   * package. So a slow answer shrinks the window, a quick one grows it (as TCP Vegas or LEDBAT do with delay).
   */
  window: number;
  /** The peer is not asked for anything before this time. */
  backoffUntil: number;
  /** Chunks the peer said it is fetching (not yet held), each with when that news expires. */
  fetching: Map<number, number>;
  /** Smoothed delivery rate, bytes per millisecond; null until measured. */
  rate: number | null;
  rttMs: number | null;
  zone: string | null;
  delivered: number;
  bytes: number;
  banned: boolean;
  /** False after removePeer, until something is heard from it again. */
  connected: boolean;
}

/** A peer that can take a request now, with its ranking precomputed for one `next()` call. */
interface OpenPeer {
  state: PeerState;
  /** 0 same zone, 1 zone unknown, 2 other zone (all 0 without a local zone). Lower is nearer. */
  zoneTier: number;
  /** Higher is faster. */
  rateBucket: number;
  /** Lower is nearer. */
  rttBucket: number;
}

export class DownloadScheduler {
  private readonly chunks: readonly ChunkRef[];
  private readonly opts: Omit<SchedulerOptions, 'random'> & { random: () => number };
  /** local[i] === 1 when this host holds chunk i. */
  private readonly local: Uint8Array;
  /** Non-banned peers that hold chunk i. */
  private readonly holderCount: Uint32Array;
  /** Connected peers that said they are fetching chunk i and do not hold it yet (see peerFetching). */
  private readonly fetchingCount: Uint32Array;
  /** Peers currently asked for chunk i, in request order. */
  private readonly servers: string[][];
  /** When chunk i was first requested in its current attempt; the endgame duplicates the oldest first. */
  private readonly requestedAt: Float64Array;
  /** Dense list of missing chunk indexes, with each one's position, for O(1) removal. */
  private readonly missingList: number[] = [];
  private readonly missingPos: Int32Array;
  /** Every peer ever heard of; removed ones stay (disconnected) so a banned peer that reconnects stays banned. */
  private readonly peers = new Map<string, PeerState>();
  private totalInFlight = 0;
  private bytesHave = 0;
  private readonly bytesTotal: number;

  constructor(
    chunks: readonly ChunkRef[],
    localHave: boolean[] | ((index: number) => boolean),
    opts: Partial<SchedulerOptions> = {},
  ) {
    this.opts = {
      maxInFlightPerPeer: opts.maxInFlightPerPeer ?? DEFAULTS.maxInFlightPerPeer,
      latencyTargetMs: opts.latencyTargetMs ?? DEFAULTS.latencyTargetMs,
      maxInFlightTotal: opts.maxInFlightTotal ?? DEFAULTS.maxInFlightTotal,
      endgameRemaining: opts.endgameRemaining ?? DEFAULTS.endgameRemaining,
      busyBackoffMs: opts.busyBackoffMs ?? DEFAULTS.busyBackoffMs,
      fetchHintMs: opts.fetchHintMs ?? DEFAULTS.fetchHintMs,
      localZone: opts.localZone ?? null,
      mayUseFarPeer: opts.mayUseFarPeer,
      firstNeeded: opts.firstNeeded,
      random: opts.random ?? Math.random,
    };
    requireInteger('maxInFlightPerPeer', this.opts.maxInFlightPerPeer, 1);
    requireInteger('maxInFlightTotal', this.opts.maxInFlightTotal, 1);
    requireInteger('endgameRemaining', this.opts.endgameRemaining, 0);
    if (!(this.opts.latencyTargetMs >= 0)) {
      throw new RangeError(`scheduler option latencyTargetMs must be a number >= 0, got ${this.opts.latencyTargetMs}`);
    }
    if (!(this.opts.fetchHintMs >= 0)) {
      throw new RangeError(`scheduler option fetchHintMs must be a number >= 0, got ${this.opts.fetchHintMs}`);
    }
    if (!(this.opts.busyBackoffMs >= 0)) {
      throw new RangeError(`scheduler option busyBackoffMs must be a number >= 0, got ${this.opts.busyBackoffMs}`);
    }

    const n = chunks.length;
    this.chunks = chunks;
    this.local = new Uint8Array(n);
    this.holderCount = new Uint32Array(n);
    this.fetchingCount = new Uint32Array(n);
    this.servers = Array.from({ length: n }, () => []);
    this.requestedAt = new Float64Array(n);
    this.missingPos = new Int32Array(n).fill(-1);
    const held = typeof localHave === 'function' ? localHave : (i: number) => localHave[i] === true;
    let bytesTotal = 0;
    for (let i = 0; i < n; i++) {
      const size = chunks[i]!.size;
      bytesTotal += size;
      if (held(i)) {
        this.local[i] = 1;
        this.bytesHave += size;
      } else {
        this.missingPos[i] = this.missingList.length;
        this.missingList.push(i);
      }
    }
    this.bytesTotal = bytesTotal;
  }

  // ---------------------------------------------------------------------------------------------------------
  // What peers hold and who they are

  /** Replace what `peer` holds with a bitfield (bit i, MSB-first within each byte, set = holds chunk i). */
  setPeerHave(peer: string, bits: Uint8Array): void {
    const state = this.peerState(peer);
    if (state.banned) return;
    const n = this.chunks.length;
    for (let i = 0; i < n; i++) {
      const now = bitAt(bits, i);
      if (now === state.has[i]) continue;
      state.has[i] = now;
      if (now === 1) {
        this.holderCount[i]!++;
        this.forgetFetching(state, i);
      } else {
        this.holderCount[i]!--;
      }
    }
  }

  /** Connected, unbanned peers known to hold chunk `index`. */
  holders(index: number): number {
    this.checkIndex(index);
    return this.holderCount[index]!;
  }

  /** True while chunk `index` is not here yet (news of it may change what next() picks). */
  wants(index: number): boolean {
    return index >= 0 && index < this.chunks.length && this.local[index] === 0;
  }

  /** `peer` gained chunk `index`. */
  peerHas(peer: string, index: number): void {
    this.checkIndex(index);
    const state = this.peerState(peer);
    if (state.banned) return;
    this.markHolder(state, index);
  }

  /**
   * `peer` is fetching chunk `index` now: until it holds it, or for fetchHintMs, the chunk ranks as held by one
   * more peer. Hosts that start together otherwise all see the publisher as the only holder of the same chunks,
   * and rarest first sends several of them to it for the same chunk while the others wait for their first copy.
   */
  peerFetching(peer: string, index: number, now: number): void {
    this.checkIndex(index);
    const state = this.peerState(peer);
    if (state.banned || state.has[index] === 1 || this.opts.fetchHintMs === 0) return;
    if (!state.fetching.has(index)) {
      // An honest peer announces only its own requests in flight; more than this is noise, or an attack on the
      // cost of next().
      if (state.fetching.size >= MAX_FETCHING_PER_PEER) return;
      this.fetchingCount[index]!++;
    }
    state.fetching.set(index, now + this.opts.fetchHintMs);
  }

  setPeerInfo(peer: string, info: PeerInfo): void {
    const state = this.peerState(peer);
    if (info.rttMs !== undefined) state.rttMs = Number.isFinite(info.rttMs) && info.rttMs >= 0 ? info.rttMs : null;
    if (info.zone !== undefined) state.zone = info.zone;
  }

  /**
   * The peer went away: forget what it holds and put its outstanding requests back to pending. Its counters
   * and measured rate are kept; any later setPeerHave/peerHas/setPeerInfo for it counts as a reconnect.
   */
  removePeer(peer: string): void {
    const state = this.peers.get(peer);
    if (state === undefined || !state.connected) return;
    this.dropPeerWork(state);
    state.connected = false;
  }

  /** The peer sent a corrupt chunk: never ask it again, and put its outstanding requests back to pending. */
  ban(peer: string): void {
    const state = this.peers.get(peer) ?? this.addPeer(peer);
    if (state.banned) return;
    this.dropPeerWork(state);
    state.banned = true;
  }

  // ---------------------------------------------------------------------------------------------------------
  // How requests ended

  /** The peer answered 'busy' (its upload cap): the chunk goes back to pending and the peer backs off. */
  busy(peer: string, index: number, now: number): void {
    this.checkIndex(index);
    const state = this.peers.get(peer);
    if (state === undefined) return;
    this.release(state, index);
    state.backoffUntil = Math.max(state.backoffUntil, now + this.opts.busyBackoffMs);
  }

  /**
   * A request failed. The chunk goes back to pending. A 'miss' clears the peer's have bit for it; an error or
   * timeout makes the peer back off like 'busy' (a broken stream would otherwise fail every retry at once).
   * A timeout, and a miss of a chunk the peer claimed to hold, also cost it rank: its measured rate halves, and
   * a peer never measured is ranked as the slowest (rate 0) until it delivers, so a source that never answers
   * or lies in its `have` stops being first choice. Both recover with the next good delivery.
   */
  failed(peer: string, index: number, now: number, reason: FailReason = 'error'): void {
    this.checkIndex(index);
    const state = this.peers.get(peer);
    if (state === undefined) return;
    this.release(state, index);
    const claimed = state.has[index] === 1;
    if (reason === 'miss') {
      if (claimed && !state.banned) {
        state.has[index] = 0;
        this.holderCount[index]!--;
      }
      if (!claimed) return;
    }
    state.backoffUntil = Math.max(state.backoffUntil, now + this.opts.busyBackoffMs);
    if (reason === 'timeout' || reason === 'miss') state.rate = state.rate === null ? 0 : state.rate / 2;
    // A request that timed out took longer than any slow answer: the window halves as for one.
    if (reason === 'timeout') this.shrinkWindow(state);
  }

  /**
   * Chunk `index` arrived from `peer`, verified and stored (`bytes` received in `ms` from request to last byte).
   * Returns the other requests for the same chunk (endgame duplicates, or a reassigned request after the peer
   * was removed): the caller should cancel or ignore them; their slots are already free here.
   * A chunk delivered twice is counted once.
   */
  delivered(peer: string, index: number, bytes: number, ms: number): Assignment[] {
    this.checkIndex(index);
    const state = this.peers.get(peer);
    const fresh = this.local[index] === 0;
    if (state !== undefined) {
      this.release(state, index);
      const sample = bytes / Math.max(ms, MIN_DELIVERY_MS);
      state.rate = state.rate === null ? sample : state.rate + RATE_EWMA_WEIGHT * (sample - state.rate);
      if (fresh && bytes > 0) this.adjustWindow(state, ms);
      state.bytes += bytes;
      if (fresh) state.delivered++;
      if (!state.banned && state.connected) this.markHolder(state, index);
    }
    if (!fresh) return [];

    this.local[index] = 1;
    this.bytesHave += this.chunks[index]!.size;
    this.removeMissing(index);
    const cancel: Assignment[] = [];
    for (const other of [...this.servers[index]!]) {
      const otherState = this.peers.get(other);
      if (otherState !== undefined) this.release(otherState, index);
      cancel.push({ peer: other, index });
    }
    return cancel;
  }

  // ---------------------------------------------------------------------------------------------------------
  // Deciding

  /** The requests to issue now: rarest chunks first, each from its nearest open holder, within the caps. */
  next(now: number): Assignment[] {
    const out: Assignment[] = [];
    let freeTotal = this.opts.maxInFlightTotal - this.totalInFlight;
    if (freeTotal <= 0 || this.missingList.length === 0) return out;
    const open = this.openPeers(now);
    if (open.length === 0) return out;

    const needed = this.opts.firstNeeded?.();
    if (needed !== undefined) {
      let held = false;
      let inFlight = 0;
      const wanted: number[] = [];
      for (let index = Math.max(0, needed.from); index < Math.min(needed.to, this.chunks.length); index++) {
        if (this.local[index] === 1) continue;
        if (this.servers[index]!.length > 0) {
          held = true;
          inFlight++;
        } else if (this.holderCount[index]! > 0) {
          wanted.push(index);
        }
      }
      // Rarest first, ties at random: the hosts that start together ask for different chunks of the list, and
      // pass them on to each other.
      for (let i = wanted.length - 1; i > 0; i--) {
        const j = this.randomInt(i + 1);
        [wanted[i], wanted[j]] = [wanted[j]!, wanted[i]!];
      }
      wanted.sort((a, b) => this.holderCount[a]! - this.holderCount[b]!);
      for (const index of wanted) {
        if (inFlight >= FIRST_NEEDED_WINDOW) break;
        // A chunk of the list that only one peer holds (at first the publisher, for every host) is asked for
        // only while nothing else of the list is on its way: each host then takes one chunk of the list from
        // it, not all of them. With a list of several chunks (tens of thousands of entries) the publisher
        // otherwise uploaded the whole list to every host before any content could flow.
        if (this.holderCount[index] === 1 && inFlight > 0) continue;
        if (freeTotal <= 0 || open.length === 0) return out;
        // None may be usable now (all busy, or only far ones the zone rule holds back): then content goes ahead.
        const holder = this.bestHolder(index, open, now);
        if (holder === undefined) continue;
        held = true;
        inFlight++;
        this.assign(holder.state, index, now);
        out.push({ peer: holder.state.id, index });
        freeTotal--;
        if (holder.state.inFlight.size >= holder.state.window) open.splice(open.indexOf(holder), 1);
      }
      // Nothing else while they are on their way: at the start every host asks the publisher, and a request for
      // the list queued behind content requests there waited for up to 20 s (measured at 16 hosts), while the
      // install could do nothing and the content that arrived meanwhile had to be read back.
      if (held) return out;
    }

    // Bucket the requestable chunks by how many peers hold them, or are fetching them; rarest bucket first.
    this.expireFetching(now);
    const buckets: number[][] = [];
    for (const index of this.missingList) {
      const holders = this.holderCount[index]!;
      if (holders === 0 || this.servers[index]!.length > 0) continue;
      (buckets[holders + this.fetchingCount[index]!] ??= []).push(index);
    }

    let pendingWithHolders = 0;
    for (const bucket of buckets) {
      if (bucket === undefined) continue;
      // Partial Fisher-Yates: draw chunks at random from the bucket, so equally rare chunks are spread across
      // the hosts downloading at the same time, and only as many draws as there are slots are paid for.
      let remaining = bucket.length;
      while (remaining > 0) {
        if (freeTotal <= 0 || open.length === 0) {
          pendingWithHolders += remaining;
          break;
        }
        const pick = this.randomInt(remaining);
        const index = bucket[pick]!;
        bucket[pick] = bucket[remaining - 1]!;
        remaining--;
        const holder = this.bestHolder(index, open, now);
        if (holder === undefined) {
          pendingWithHolders++;
          continue;
        }
        this.assign(holder.state, index, now);
        out.push({ peer: holder.state.id, index });
        freeTotal--;
        if (holder.state.inFlight.size >= holder.state.window) open.splice(open.indexOf(holder), 1);
      }
    }

    if (pendingWithHolders === 0 && this.missingList.length <= this.opts.endgameRemaining) {
      this.endgame(now, open, freeTotal, out);
    }
    return out;
  }

  isDone(): boolean {
    return this.missingList.length === 0;
  }

  missing(): number {
    return this.missingList.length;
  }

  /** Outstanding requests, endgame duplicates counted each. */
  inFlight(): number {
    return this.totalInFlight;
  }

  stats(): SchedulerStats {
    const peers: PeerStats[] = [];
    for (const state of this.peers.values()) {
      peers.push({
        peer: state.id,
        inFlight: state.inFlight.size,
        delivered: state.delivered,
        bytes: state.bytes,
        rateBps: state.rate === null ? null : state.rate * 1000,
        rttMs: state.rttMs,
        zone: state.zone,
        window: state.window,
        banned: state.banned,
        connected: state.connected,
      });
    }
    return {
      total: this.chunks.length,
      have: this.chunks.length - this.missingList.length,
      bytesHave: this.bytesHave,
      bytesTotal: this.bytesTotal,
      peers,
    };
  }

  // ---------------------------------------------------------------------------------------------------------
  // Internals

  /**
   * Every missing chunk is in flight and few remain: ask one more holder for each, oldest request first, so a
   * slow or stalled peer cannot hold the whole download hostage for its last chunks.
   */
  private endgame(now: number, open: OpenPeer[], freeTotal: number, out: Assignment[]): void {
    const inFlight = this.missingList
      .filter((index) => this.servers[index]!.length > 0 && this.servers[index]!.length < MAX_REQUESTS_PER_CHUNK)
      .sort((a, b) => this.requestedAt[a]! - this.requestedAt[b]!);
    for (const index of inFlight) {
      if (freeTotal <= 0 || open.length === 0) return;
      const holder = this.bestHolder(index, open, now, this.servers[index]);
      if (holder === undefined) continue;
      this.assign(holder.state, index, now);
      out.push({ peer: holder.state.id, index });
      freeTotal--;
      if (holder.state.inFlight.size >= holder.state.window) open.splice(open.indexOf(holder), 1);
    }
  }

  /** Peers that may take a request now (not banned, not backing off, under the per-peer cap), ranked. */
  private openPeers(now: number): OpenPeer[] {
    const live = [...this.peers.values()].filter((p) => !p.banned && p.connected);
    // Unmeasured peers rank as the median measured peer: good enough to be tried, not better than a proven one.
    // Demoted peers (rate 0: they timed out or lied before delivering anything) do not drag the neutral rate down.
    const neutralRate = median(live.map((p) => (p.rate === 0 ? null : p.rate)));
    const neutralRtt = median(live.map((p) => p.rttMs));
    const localZone = this.opts.localZone;
    const open: OpenPeer[] = [];
    for (const state of live) {
      if (state.backoffUntil > now || state.inFlight.size >= state.window) continue;
      const rate = state.rate ?? neutralRate;
      const rtt = state.rttMs ?? neutralRtt;
      open.push({
        state,
        zoneTier: localZone === null || localZone === undefined ? 0 : state.zone === null ? 1 : state.zone === localZone ? 0 : 2,
        rateBucket: rate === null ? 0 : Math.round(Math.log(Math.max(rate, 1e-9)) / Math.log(RATE_BUCKET_FACTOR)),
        rttBucket: rtt === null ? 0 : Math.round(Math.log2(1 + rtt) * RTT_BUCKETS_PER_DOUBLING),
      });
    }
    return open;
  }

  /**
   * The nearest open peer holding `index` and not already asked for it: same zone, then faster, then lower RTT,
   * then fewer requests outstanding; remaining ties are broken uniformly at random so equal peers share load.
   */
  private bestHolder(index: number, open: OpenPeer[], now: number, exclude?: readonly string[]): OpenPeer | undefined {
    let best: OpenPeer | undefined;
    let ties = 0;
    let farAllowed: boolean | undefined;
    for (const candidate of open) {
      if (candidate.state.has[index] !== 1) continue;
      if (exclude !== undefined && exclude.includes(candidate.state.id)) continue;
      if (candidate.zoneTier === 2) {
        farAllowed ??= this.opts.mayUseFarPeer?.(index, now, this.nearHolds(index)) ?? true;
        if (!farAllowed) continue;
      }
      const order = best === undefined ? -1 : compareNearness(candidate, best);
      if (order < 0) {
        best = candidate;
        ties = 1;
      } else if (order === 0) {
        ties++;
        if (this.randomInt(ties) === 0) best = candidate;
      }
    }
    return best;
  }

  /** Does a connected, unbanned peer of this host's zone hold chunk `index`? */
  private nearHolds(index: number): boolean {
    for (const p of this.peers.values()) {
      if (p.connected && !p.banned && p.has[index] === 1 && p.zone !== null && p.zone === this.opts.localZone) return true;
    }
    return false;
  }

  private assign(state: PeerState, index: number, now: number): void {
    const servers = this.servers[index]!;
    if (servers.length === 0) this.requestedAt[index] = now;
    servers.push(state.id);
    state.inFlight.add(index);
    this.totalInFlight++;
  }

  /** Forget the request for `index` to this peer, if there is one. */
  private release(state: PeerState, index: number): void {
    if (!state.inFlight.delete(index)) return;
    const servers = this.servers[index]!;
    servers.splice(servers.indexOf(state.id), 1);
    this.totalInFlight--;
  }

  /** Release every request to this peer and stop counting it as a holder. */
  private dropPeerWork(state: PeerState): void {
    for (const index of [...state.inFlight]) this.release(state, index);
    for (const index of [...state.fetching.keys()]) this.forgetFetching(state, index);
    if (state.banned) return;
    for (let i = 0; i < state.has.length; i++) {
      if (state.has[i] === 1) {
        state.has[i] = 0;
        this.holderCount[i]!--;
      }
    }
  }

  /** Multiplicative decrease on a slow delivery, additive increase on a quick one (see PeerState.window). */
  private adjustWindow(state: PeerState, ms: number): void {
    const target = this.opts.latencyTargetMs;
    if (ms > target) this.shrinkWindow(state);
    else if (target > 0 && ms < target / 2) state.window = Math.min(this.opts.maxInFlightPerPeer, state.window + 1);
  }

  /** Halve the peer's window, never below one request; latencyTargetMs 0 keeps the full per-peer cap. */
  private shrinkWindow(state: PeerState): void {
    if (this.opts.latencyTargetMs > 0) state.window = Math.max(1, Math.floor(state.window / 2));
  }

  private markHolder(state: PeerState, index: number): void {
    this.forgetFetching(state, index);
    if (state.has[index] === 1) return;
    state.has[index] = 1;
    this.holderCount[index]!++;
  }

  private forgetFetching(state: PeerState, index: number): void {
    if (state.fetching.delete(index)) this.fetchingCount[index]!--;
  }

  /** Drop the fetching news that has expired. */
  private expireFetching(now: number): void {
    for (const state of this.peers.values()) {
      for (const [index, until] of state.fetching) if (until <= now) this.forgetFetching(state, index);
    }
  }

  /** The state of a peer just heard from (reconnecting it if it had been removed). */
  private peerState(peer: string): PeerState {
    const state = this.peers.get(peer);
    if (state === undefined) return this.addPeer(peer);
    state.connected = true;
    return state;
  }

  private addPeer(peer: string): PeerState {
    const state: PeerState = {
      id: peer,
      has: new Uint8Array(this.chunks.length),
      inFlight: new Set(),
      // One request to start with, as TCP's slow start: at the start every host asks the publisher at once,
      // and four each put 60 chunks into its send buffers, the last of them 13 - 22 s behind the first (16 hosts,
      // 20 Mbit/s). Quick answers grow it to the cap within three deliveries.
      window: this.opts.latencyTargetMs > 0 ? 1 : this.opts.maxInFlightPerPeer,
      backoffUntil: -Infinity,
      fetching: new Map(),
      rate: null,
      rttMs: null,
      zone: null,
      delivered: 0,
      bytes: 0,
      banned: false,
      connected: true,
    };
    this.peers.set(peer, state);
    return state;
  }

  private removeMissing(index: number): void {
    const pos = this.missingPos[index]!;
    const last = this.missingList.pop()!;
    if (last !== index) {
      this.missingList[pos] = last;
      this.missingPos[last] = pos;
    }
    this.missingPos[index] = -1;
  }

  private randomInt(bound: number): number {
    return Math.min(bound - 1, Math.floor(this.opts.random() * bound));
  }

  private checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.chunks.length) {
      throw new RangeError(`chunk index ${index} is outside 0..${this.chunks.length - 1}`);
    }
  }
}

/** Negative when `a` is nearer than `b`. */
function compareNearness(a: OpenPeer, b: OpenPeer): number {
  return (
    a.zoneTier - b.zoneTier ||
    b.rateBucket - a.rateBucket ||
    a.rttBucket - b.rttBucket ||
    a.state.inFlight.size - b.state.inFlight.size
  );
}

function median(values: Array<number | null>): number | null {
  const known = values.filter((v): v is number => v !== null).sort((a, b) => a - b);
  if (known.length === 0) return null;
  const mid = known.length >> 1;
  return known.length % 2 === 1 ? known[mid]! : (known[mid - 1]! + known[mid]!) / 2;
}

function requireInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`scheduler option ${name} must be an integer >= ${min}, got ${value}`);
  }
}

function bitAt(bits: Uint8Array, index: number): 0 | 1 {
  const byte = index >> 3;
  return byte < bits.length && (bits[byte]! & (0x80 >> (index & 7))) !== 0 ? 1 : 0;
}

/** One bit per chunk, MSB-first within each byte: the layout of the protocol's 'have' message. */
export function encodeBitfield(have: boolean[]): Uint8Array {
  const bits = new Uint8Array(Math.ceil(have.length / 8));
  for (let i = 0; i < have.length; i++) {
    if (have[i]) bits[i >> 3]! |= 0x80 >> (i & 7);
  }
  return bits;
}

export function decodeBitfield(bits: Uint8Array, n: number): boolean[] {
  const have = new Array<boolean>(n);
  for (let i = 0; i < n; i++) have[i] = bitAt(bits, i) === 1;
  return have;
}
