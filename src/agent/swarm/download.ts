// One manifest being downloaded: have-subscriptions to a bounded set of peers feed the scheduler,
// which decides which chunk to ask which peer for; every chunk is verified by the store on arrival.
import type { PeerId } from '@libp2p/interface';
import { CorruptChunkError, type ChunkRef, type SignedManifest } from '../../store/types.js';
import { manifestChunks } from '../../store/manifest.js';
import { ChunkBusyError, ChunkMissError, ChunkTimeoutError } from '../../protocol/chunk-exchange.js';
import { subscribeHave, type HaveSubscription } from '../../protocol/have.js';
import { DownloadScheduler } from './scheduler.js';
import type { LiveChunkSource } from '../install/chunk-source.js';
import type { Store } from '../../store/store.js';
import type { ChunkClient } from '../../protocol/chunk-exchange.js';
import type { P2PNode } from './p2p-node.js';
import { log } from '../log.js';
import { metrics } from '../metrics.js';
import { diskFullCode } from './disk-full.js';

/** Sources per download: the nearest few plus some random ones, whatever the fleet size. */
const NEAR_SOURCES = 8;
const RANDOM_SOURCES = 4;
const TICK_MS = 200;
/** Hosts with the runtime installed hold every chunk: this many stay subscribed whatever their distance. */
const COMPLETE_SOURCES = 2;
/** No chunk for this long: the sources may lack what is missing, so every connected peer is asked. */
const STALL_MS = 5_000;
/** With zones: no chunk for this long and anyone may fetch across zones (see mayUseFarPeer). */
const FAR_FALLBACK_MS = 3_000;
/** A source that answers `miss` for this many chunks its `have` claimed is not asked again by this download. */
const MAX_FALSE_CLAIMS = 4;

/** What a download needs from the swarm around it (the Swarm implements it; the dependency points one way). */
export interface DownloadHost {
  readonly node: P2PNode;
  readonly store: Store;
  readonly zone: string | null;
  readonly peerId: string;
  zoneMembers(): string[];
  usablePeers(): PeerId[];
  hasInstalled(peer: string, manifestId: string): boolean;
  peerInfo(peer: string): { rttMs?: number; zone?: string | null };
  rankByNearness(peers: PeerId[]): PeerId[];
  clientFor(peer: string): ChunkClient;
  peerSentCorrupt(peer: string, err: Error): void;
  chunkStored(id: string): void;
  /** This download has just asked for chunk `index` of `manifestId`, which only its source holds. */
  chunkFetching(manifestId: string, index: number): void;
}

export interface SourceStats { peer: string; bytes: number; chunks: number }

export class Download {
  readonly startedAt = Date.now();
  readonly sched: DownloadScheduler;
  private readonly subs = new Map<string, HaveSubscription>();
  private readonly sources = new Map<string, SourceStats>();
  private wake: (() => void) | null = null;
  private stopped = false;
  /** Why the download stopped itself: a full disk here (see halt). */
  private haltedBy: unknown = null;
  /** Chunks already on disk when this download started (a restart resumes from them). */
  readonly resumedChunks: number;
  fetchedChunks = 0;
  fetchedBytes = 0;
  duplicateChunks = 0;
  /** Ids this download has stored or is storing, so an endgame duplicate is never counted twice. */
  private readonly stored = new Set<string>();
  /** Ids whose chunk file is in the store (found there at the start, or written by this download). */
  private readonly inStore = new Set<string>();
  /** The manifest's chunks in install order (manifestChunks builds a new array per call). */
  private readonly chunks: readonly ChunkRef[];
  private lastPeerScan = 0;
  private lastProgressAt = Date.now();
  private errors = 0;
  private readonly errorLoggedAt = new Map<string, number>();
  /** Per source: `miss` answers for chunks it claimed to hold. */
  private readonly falseClaims = new Map<string, number>();
  private zoneMembers: string[] = [];
  private zoneMembersAt = 0;
  /**
   * The current request token of each (peer, chunk index). A request that outlived its assignment (the
   * peer was dropped and the chunk given to it again) must not report busy/failed for the new one.
   */
  private readonly tokens = new Map<string, number>();
  private nextToken = 1;

  /**
   * `feed`, when given, receives every chunk as it is verified and tells the scheduler which chunk of the
   * entry list the install waits for, so that it is asked for first.
   */
  constructor(private readonly swarm: DownloadHost, readonly sm: SignedManifest, have: boolean[], private readonly feed?: LiveChunkSource) {
    this.chunks = manifestChunks(sm.manifest);
    this.sched = new DownloadScheduler(this.chunks, have, {
      firstNeeded: feed ? () => (feed.cursor === undefined ? undefined : { from: feed.cursor, to: sm.manifest.entries.chunks.length }) : undefined,
      localZone: swarm.zone,
      mayUseFarPeer: swarm.zone ? (index, now, nearHolder) => this.mayUseFarPeer(index, now, nearHolder) : undefined,
    });
    this.resumedChunks = have.filter(Boolean).length;
    this.chunks.forEach((c, i) => { if (have[i]) this.inStore.add(c.id); });
  }

  /**
   * Whether chunk `index` is in the store, as this download knows it: what a peer's have subscription is told
   * while the download runs, without a stat per chunk of the manifest for every subscriber. A chunk only counts
   * once its file is written, so a peer asking for it is never answered `miss`.
   */
  holds(index: number): boolean {
    const ref = this.chunks[index];
    return ref !== undefined && this.inStore.has(ref.id);
  }

  get id(): string { return this.sm.id; }

  /**
   * With --zone: a chunk that no peer of this zone holds is fetched across zones only by the zone member at
   * position i mod n of the sorted member list (this host included); the others then get it from that
   * member. When the download has stalled (nothing in flight, no chunk for a while: a member may be gone
   * or stuck), anyone may fetch anything from anywhere.
   */
  private mayUseFarPeer(index: number, now: number, nearHolder: boolean): boolean {
    // Only a real stall opens far fetches to everyone: a far fetch in flight over a busy uplink can take
    // seconds, and that is the uplink doing its job, not a stall.
    if (this.sched.inFlight() === 0 && now - this.lastProgressAt > FAR_FALLBACK_MS) return true;
    if (nearHolder) return false;
    if (now - this.zoneMembersAt > 2000) {
      this.zoneMembers = this.swarm.zoneMembers();
      this.zoneMembersAt = now;
    }
    return this.zoneMembers[index % this.zoneMembers.length] === this.swarm.peerId;
  }


  /** Resolves when every chunk is in the store; rejects only when stopped. */
  async run(): Promise<void> {
    while (!this.sched.isDone()) {
      if (this.stopped) throw this.haltedBy ?? new Error('download stopped');
      const now = Date.now();
      if (now - this.lastPeerScan > 2000 || this.subs.size === 0) {
        this.lastPeerScan = now;
        this.refreshSources();
      }
      for (const a of this.sched.next(now)) {
        const token = this.nextToken++;
        this.tokens.set(`${a.peer}#${a.index}`, token);
        // A chunk only its source holds (at first: the publisher, for every host at once) is news for the other
        // downloaders: they then ask that source for other chunks first (scheduler.peerFetching). It goes both
        // ways, to the peers subscribed here and to those this download subscribes to: each host picks its own
        // sources, so the two sets differ.
        if (this.sched.holders(a.index) === 1) {
          this.swarm.chunkFetching(this.sm.id, a.index);
          for (const sub of this.subs.values()) sub.hint(a.index);
        }
        void this.fetch(a.peer, a.index, token);
      }
      // One timer per wait, cleared when something wakes the loop earlier (a chunk, a `have`): otherwise every
      // early wake-up left a timer behind, hundreds a second on a busy host.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, TICK_MS);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = null;
    }
    this.closeSubs();
  }

  stop(): void {
    this.stopped = true;
    this.closeSubs();
    this.wake?.();
  }

  /**
   * Stop for a reason of this host (the disk is full): run() rejects with `err`. Nothing is charged to a
   * peer, and no chunk is asked for again: another peer's copy would not fit either.
   */
  halt(err: unknown): void {
    if (this.haltedBy === null) this.haltedBy = err;
    this.stop();
  }

  peerGone(peer: string): void {
    this.subs.get(peer)?.close();
    this.subs.delete(peer);
    this.sched.removePeer(peer);
    this.wake?.();
  }

  /** `peer` says it is fetching chunk `index`: only changes how rare it ranks for the next pick, so no wake-up. */
  peerFetching(peer: string, index: number): void {
    if (Number.isInteger(index) && index >= 0 && index < this.chunks.length) this.sched.peerFetching(peer, index, Date.now());
  }

  ban(peer: string): void {
    this.sched.ban(peer);
    this.subs.get(peer)?.close();
    this.subs.delete(peer);
  }

  status() {
    const st = this.sched.stats();
    const secs = Math.max(0.001, (Date.now() - this.startedAt) / 1000);
    return {
      manifestId: this.sm.id,
      name: this.sm.manifest.runtime.name,
      version: this.sm.manifest.runtime.version,
      chunks: st.total,
      chunksHave: st.have,
      bytesHave: st.bytesHave,
      bytesTotal: st.bytesTotal,
      rateBps: Math.round(this.fetchedBytes / secs),
      resumedChunks: this.resumedChunks,
      fetchedChunks: this.fetchedChunks,
      fetchedBytes: this.fetchedBytes,
      duplicateChunks: this.duplicateChunks,
      errors: this.errors,
      inFlight: this.sched.inFlight(),
      // How far the streaming install has got (chunks handed to it), and how many it had to read back from disk.
      installedChunks: this.feed ? this.feed.delivered : null,
      readBackChunks: this.feed ? this.feed.readBack : null,
      startedAt: new Date(this.startedAt).toISOString(),
      // With each source's current request window: 1 where its answers are slow (its link is the bottleneck).
      sources: [...this.sources.values()].sort((a, b) => b.bytes - a.bytes)
        .map((s) => ({ ...s, window: st.peers.find((p) => p.peer === s.peer)?.window ?? null })),
    };
  }

  private closeSubs(): void {
    for (const s of this.subs.values()) s.close();
    this.subs.clear();
  }

  /**
   * Subscribe to a bounded set of connected peers: a couple of hosts that have the whole runtime, then the
   * nearest plus a few random ones. Without the complete holders, a download whose other sources all lack
   * the same chunks would wait for ever; the stall rule is the last resort for the same case.
   */
  private refreshSources(): void {
    // RTTs are measured and zones learned over time: keep the scheduler's view of current sources fresh.
    for (const key of this.subs.keys()) this.sched.setPeerInfo(key, this.swarm.peerInfo(key));
    const candidates = this.swarm.usablePeers().filter((p) => !this.subs.has(p.toString()));
    if (candidates.length === 0) return;
    const complete = (peer: string) => this.swarm.hasInstalled(peer, this.sm.id);
    const completeNow = [...this.subs.keys()].filter(complete).length;
    const chosen = candidates.filter((p) => complete(p.toString())).slice(0, Math.max(0, COMPLETE_SOURCES - completeNow));
    const stalled = Date.now() - this.lastProgressAt > STALL_MS;
    const want = stalled ? candidates.length : NEAR_SOURCES + RANDOM_SOURCES - this.subs.size - chosen.length;
    if (want > 0) {
      const ranked = this.swarm.rankByNearness(candidates.filter((p) => !chosen.includes(p)));
      const near = ranked.slice(0, Math.min(want, NEAR_SOURCES));
      const rest = ranked.slice(near.length).sort(() => Math.random() - 0.5).slice(0, Math.max(0, want - near.length));
      chosen.push(...near, ...rest);
    }
    for (const peer of chosen) void this.subscribe(peer);
  }

  private async subscribe(peer: PeerId): Promise<void> {
    const key = peer.toString();
    if (this.subs.has(key) || this.stopped) return;
    try {
      const sub = await subscribeHave(this.swarm.node, peer, this.sm.id,
        (has) => {
          const bits = new Uint8Array(Math.ceil(this.chunks.length / 8));
          for (let i = 0; i < this.chunks.length; i++) if (has(i)) bits[i >> 3] |= 0x80 >> (i & 7);
          this.sched.setPeerHave(key, bits);
          this.sched.setPeerInfo(key, this.swarm.peerInfo(key));
          this.wake?.();
        },
        (index) => {
          if (index >= this.chunks.length) return;
          this.sched.peerHas(key, index);
          // A chunk this host already holds changes nothing the scheduler would pick now.
          if (this.sched.wants(index)) this.wake?.();
        },
        (index) => this.peerFetching(key, index));
      if (this.stopped) { sub.close(); return; }
      this.subs.set(key, sub);
      void sub.ended.then(() => {
        if (this.subs.get(key) === sub) this.subs.delete(key);
      });
    } catch {
      // The peer may not speak the protocol yet or went away; the next scan tries again.
    }
  }

  /** Fetch errors other than busy/miss, logged at most once per peer per minute so a stall is visible. */
  private noteError(peer: string, err: unknown): void {
    this.errors++;
    const now = Date.now();
    if ((this.errorLoggedAt.get(peer) ?? 0) > now - 60_000) return;
    this.errorLoggedAt.set(peer, now);
    log.warn('fetch_failed', { name: this.sm.manifest.runtime.name, version: this.sm.manifest.runtime.version, peer, error: (err as Error).message });
  }

  /**
   * Every `miss` here is for a chunk the peer's `have` claimed (the scheduler only asks holders). A chunk can
   * vanish legitimately (GC) now and then; a source that keeps doing it is lying, and is dropped for this download.
   */
  private countFalseClaim(peer: string): void {
    const n = (this.falseClaims.get(peer) ?? 0) + 1;
    this.falseClaims.set(peer, n);
    if (n !== MAX_FALSE_CLAIMS) return;
    log.warn('source_dropped', { name: this.sm.manifest.runtime.name, version: this.sm.manifest.runtime.version, peer, reason: `answered miss for ${n} chunks it claimed to hold` });
    this.ban(peer);
  }

  private async fetch(peer: string, index: number, token: number): Promise<void> {
    const ref = this.chunks[index]!;
    const key = `${peer}#${index}`;
    const started = performance.now();
    try {
      if (this.stored.has(ref.id)) {
        // An endgame duplicate, or the same chunk twice in this manifest: already stored.
        this.sched.delivered(peer, index, 0, 1);
        this.duplicateChunks++;
        return;
      }
      const client = this.swarm.clientFor(peer);
      const got = await client.fetch(ref.id);
      if (got.size !== ref.size) throw new CorruptChunkError(ref.id, `peer sent ${got.size} bytes, manifest says ${ref.size}`);
      if (this.stored.has(ref.id)) {
        this.duplicateChunks++; // the other copy arrived first
      } else {
        this.stored.add(ref.id);
        try {
          // Verifies the bytes against the id; a chunk another download stored meanwhile is not rewritten.
          const { raw, own } = await this.swarm.store.chunks.receive(ref.id, got.codec, got.data, got.size);
          this.inStore.add(ref.id);
          this.feed?.arrived(ref.id, raw, own);
        } catch (err) {
          this.stored.delete(ref.id);
          throw err;
        }
        this.fetchedChunks++;
        this.fetchedBytes += got.data.length;
        metrics.chunkReceived(got.data.length, this.swarm.zone !== null && this.swarm.peerInfo(peer).zone === this.swarm.zone);
        this.lastProgressAt = Date.now();
        const s = this.sources.get(peer) ?? { peer, bytes: 0, chunks: 0 };
        s.bytes += got.data.length;
        s.chunks++;
        this.sources.set(peer, s);
        this.swarm.chunkStored(ref.id);
      }
      this.sched.delivered(peer, index, got.data.length, Math.max(1, performance.now() - started));
    } catch (err) {
      if (diskFullCode(err) !== null) {
        // This host's disk, not the peer: stop here rather than fetch the chunk again and again.
        this.halt(err);
      } else if (err instanceof CorruptChunkError) {
        this.swarm.peerSentCorrupt(peer, err);
      } else if (this.tokens.get(key) !== token) {
        // stale: this request was superseded; its failure says nothing about the current one
      } else if (err instanceof ChunkBusyError) {
        this.sched.busy(peer, index, Date.now());
      } else if (err instanceof ChunkMissError) {
        this.sched.failed(peer, index, Date.now(), 'miss');
        this.countFalseClaim(peer);
      } else if (err instanceof ChunkTimeoutError) {
        this.sched.failed(peer, index, Date.now(), 'timeout');
        this.noteError(peer, err);
      } else {
        this.sched.failed(peer, index, Date.now(), 'error');
        this.noteError(peer, err);
      }
    } finally {
      if (this.tokens.get(key) === token) this.tokens.delete(key);
      this.wake?.();
    }
  }
}
