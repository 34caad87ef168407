// The swarm side of the daemon: a libp2p node in the fleet, announcements on gossipsub, anti-entropy
// with every new peer, and the downloads that bring published runtimes to this host.
import type { KeyObject } from 'node:crypto';
import os from 'node:os';
import type { PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { machineArch } from '../../runtime/runtime-yml.js';
import type { Store } from '../../store/store.js';
import { manifestChunks, verifySignedManifest } from '../../store/manifest.js';
import { CorruptChunkError, type ChunkRef, type SignedManifest } from '../../store/types.js';
import { registerChunkServer, ChunkClient, type ChunkServer } from '../../protocol/chunk-exchange.js';
import type { RateLimiter } from '../../protocol/rate-limit.js';
import { serveCatalog, fetchDigest, fetchListing, fetchManifest, catalogDigest, MAX_LISTED_MANIFESTS, MAX_LISTED_REMOVALS, type CatalogListing } from '../../protocol/catalog.js';
import { serveHave } from '../../protocol/have.js';
import { encodeHaveBits } from '../../protocol/messages.js';
import { removalCovers, verifyRemoval, label, signRemoval, type SignedRemoval, type Removal } from '../../protocol/removal.js';
import { createP2PNode, type P2PNode } from './p2p-node.js';
import { Download, type DownloadHost } from './download.js';
import { ownCluster, parseCluster, localZone, peerZone, RttFloor } from './nearness.js';
import { announcementValidator, isTrustedKey, parseAnnouncement, MAX_INSTALLED_IDS, type Announcement } from './announcements.js';
import { FleetMap } from './fleet-map.js';
import { BoundedSet, WorkQueue } from './limits.js';
import { installManifest, type InstallContext } from '../install/install-manifest.js';
import { localSkipReason, unmarkNotForThisHost } from '../install/no-install.js';
import { encodeNotes, noteText } from '../../protocol/host-notes.js';
import { dropSuperseded, isSuperseded, supersededHere } from './superseded.js';
import { LiveChunkSource } from '../install/chunk-source.js';
import { fetchMissingChunks, missingChunks } from './refetch.js';
import type { Mutex } from '../mutex.js';
import { log, errorText, printable } from '../log.js';
import { UserError } from '../errors.js';
import { metrics } from '../metrics.js';
import type { Admission, DiskBudget } from './disk-budget.js';
import { diskFullCode } from './disk-full.js';
import { localProgress, manifestProgress, parseProgress, progressFromNotes, progressSignature, wireProgress, type HostProgress } from './fleet-state.js';

export const ANNOUNCE_TOPIC = '/joblet-agent/announce/1';
/** Connections an agent keeps up by dialing peers it learned of; more may come in. */
const TARGET_PEERS = 12;
/**
 * Maintenance rounds (RTTs, connection top-up, a catalog check with one peer, retries) come every
 * MAINTENANCE_MIN_MS while something changes, and back off, doubling, to MAINTENANCE_MAX_MS while nothing does:
 * an idle fleet costs next to nothing, and any event (a connection, an announcement, a publish) brings the
 * short cadence back at once. Gossip and the sync on every new connection carry news promptly; these rounds
 * only repair what they missed.
 */
const MAINTENANCE_MIN_MS = 5_000;
const MAINTENANCE_MAX_MS = 60_000;
/** A host re-announces its state this often even when nothing changed, so the others can expire departed hosts. */
const STATE_EVERY_MS = 60_000;
/** A host not heard from for this long is forgotten (3 missed state announcements). */
const FLEET_TTL_MS = 3 * STATE_EVERY_MS;
/** A peer's RTT is measured when it connects and then refreshed this often. */
const RTT_REFRESH_MS = 2 * 60_000;
const BAN_MS = 10 * 60_000;
/**
 * Manifest fetches one announcing peer may have queued or running. A peer announcing manifests it never
 * delivers stalls each fetch until its timeout; with this share it delays nobody else's.
 */
const MAX_FETCHES_PER_PEER = 2;
/** Unknown manifests learned from one listing per round; the rest come with the next round (digests differ). */
const MAX_NEW_PER_SYNC = 16;

export interface SwarmOptions {
  peerKeyPath: string;
  fleetKey: Buffer;
  listen: string[];
  bootstrap: string[];
  mdns: boolean;
  zone: string | null;
  trust: string[];
  publisherKey: KeyObject | null;
  maxUploads: number;
  store: Store;
  install: InstallContext;
  mutex: Mutex;
  /** Host-wide bandwidth caps (see rate-limit.ts), shared by every peer. */
  uploadLimit?: RateLimiter;
  downloadLimit?: RateLimiter;
  /** The disk budget and watermarks: downloads are admitted by it, and wait on it when space runs out. */
  budget?: DiskBudget;
  /** TEST ONLY, from JOBLET_AGENT_TEST_FAULT: serve corrupt chunks, or serve each chunk after a delay. */
  fault?: { corrupt?: boolean; delayMs?: number };
}

/** A removal kept as a tombstone; `signature` is null for a local-only removal on a non-publisher. */
interface Tombstone { removal: Removal; signature: string | null }

/** One host of the fleet as this agent sees it (itself included), for `wait` and `info`. */
export interface FleetHostView {
  peerId: string;
  self: boolean;
  arch: string;
  zone: string | null;
  /** When this agent last heard from the host (ms since the epoch; now for itself). */
  seenAt: number;
  installed: string[];
  failed: Map<string, string>;
  skipped: Map<string, string>;
}

export class Swarm implements DownloadHost {
  readonly store: Store;
  /** The implicit zone this host announces when it has no --zone: its network prefix, or null. */
  private cluster: string | null = null;
  private readonly rttFloor = new RttFloor();
  private outlierCache: { at: number; set: Set<string> } | null = null;
  private readonly downloads = new Map<string, Download>();
  private readonly recent: ReturnType<Download['status']>[] = [];
  private readonly clients = new Map<string, ChunkClient>();
  private readonly banned = new Map<string, number>();
  private readonly rtt = new Map<string, { ms: number; at: number }>();
  private readonly fleet = new FleetMap(FLEET_TTL_MS);
  private readonly skipped = new Map<string, string>();
  private readonly untrustedLogged = new BoundedSet<string>(1024);
  /** Manifest ids a peer offered that failed verification: never fetched again (verification is deterministic). */
  private readonly refused = new BoundedSet<string>(4096);
  /** Announcements being handled: a few at once, a bounded backlog, the rest dropped (anti-entropy repairs). */
  private readonly gossipWork = new WorkQueue(4, 256, (err) => log.warn('announcement_ignored', { error: errorText(err) }));
  /** Manifest fetches (up to MAX_MANIFEST_BYTES each): two at once, one per id, a bounded backlog. */
  private readonly manifestFetches = new WorkQueue(2, 64);
  /** Manifest fetches queued or running per announcing peer: one peer cannot fill the queue for the others. */
  private readonly fetchesByPeer = new Map<string, number>();
  private readonly gossipRejected = { count: 0 };
  private maintaining = false;
  /** The peer the last maintenance round checked catalogs with (see nextSyncPeer). */
  private lastSyncPeer = '';
  /** Downloads whose space check is running (consider() may be called twice at once). */
  private readonly admitting = new Set<string>();
  /** The maintenance round running, if any: stop() waits for it, so it never touches a closed store. */
  private maintenanceRun: Promise<void> | null = null;
  private maintenanceTimer: NodeJS.Timeout | undefined;
  private maintenanceDueAt = 0;
  private maintenanceDelay = MAINTENANCE_MIN_MS;
  /** Something happened since the last maintenance round: the next one keeps the short cadence. */
  private eventful = true;
  private digestCache: { value: string; at: number } | undefined;
  /** Manifests whose install failed: retried with a growing delay, not every maintenance round. */
  private readonly failures = new Map<string, { count: number; retryAt: number; error: string }>();
  private stateTimer: NodeJS.Timeout | null = null;
  private readonly chunkWatchers = new Map<string, Set<() => void>>();
  /** Per manifest id: the have subscribers that asked to hear which chunks this host is fetching (have.ts). */
  private readonly fetchWatchers = new Map<string, Set<(index: number) => void>>();
  private tombstones: Tombstone[] = [];
  private timers: NodeJS.Timeout[] = [];
  private chunkServer!: ChunkServer;
  private stopping = false;
  /** What the last state message said about downloads, failures and skips (see fleet-state.ts). */
  private lastProgressSig = '';
  /** An install or publish may have left chunks that no manifest references (see collectSuperseded): why the next maintenance round collects garbage, or null. */
  private gcDue: string | null = null;
  corruptChunksReceived = 0;

  private constructor(readonly node: P2PNode, private readonly opts: SwarmOptions) {
    this.store = opts.store;
  }

  /** The zone the zone rule uses: the --zone label, else the implicit one from this host's address. */
  get zone(): string | null { return localZone(this.opts.zone, this.cluster); }

  private updateCluster(): void {
    this.cluster = ownCluster(this.addresses(), this.node.getConnections().map((c) => c.remoteAddr.toString()));
  }

  static async start(opts: SwarmOptions): Promise<Swarm> {
    const node = await createP2PNode({
      peerKeyPath: opts.peerKeyPath, fleetKey: opts.fleetKey, listen: opts.listen, bootstrap: opts.bootstrap, mdns: opts.mdns,
      onNoiseFallback: () => log.warn('noise_writes_not_coalesced', {
        hint: 'this libp2p-noise release differs from the one src/agent/swarm/noise-writes.ts expects; connections work, at more CPU per byte',
      }),
      onYamuxFallback: () => log.warn('yamux_window_updates_per_frame', {
        hint: 'this js-yamux release differs from the one src/agent/swarm/yamux-window.ts expects; streams work, at a window update per data frame',
      }),
    });
    const swarm = new Swarm(node, opts);
    try {
      await swarm.init();
    } catch (err) {
      await Promise.resolve(node.stop()).catch(() => {});
      throw err;
    }
    return swarm;
  }

  private async init(): Promise<void> {
    this.updateCluster();
    if (this.opts.budget) {
      this.opts.budget.onEvicted = (ids) => {
        this.digestCache = undefined; // the catalog no longer lists them
        for (const id of ids) void unmarkNotForThisHost(this.store.index, id).catch(() => {});
      };
    }
    this.tombstones = (await this.store.index.getMeta<Tombstone[]>('tombstones')) ?? [];
    // A kill between storing a tombstone and removing what it covers leaves both; finish that removal now.
    const late = await this.removeCovered((name, version, createdAt) => this.isTombstoned(name, version, createdAt));
    if (late.out.length) log.info('removed', { runtimes: late.out.map((x) => `${x.name}@${x.version}`), reason: 'a removal stored before the last stop' });
    const fault = this.opts.fault;
    this.chunkServer = await registerChunkServer(this.node, this.store.chunks, {
      maxConcurrentUploads: this.opts.maxUploads,
      uploadLimit: this.opts.uploadLimit,
      faultHook: fault && (fault.corrupt || fault.delayMs) ? async (_id, data) => {
        if (fault.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
        if (!fault.corrupt) return data;
        const bad = Buffer.from(data);
        bad[bad.length >> 1] ^= 0xff;
        return bad;
      } : undefined,
    });
    await serveCatalog(this.node, {
      listing: () => this.listing(), manifest: (id) => this.store.index.getManifest(id), digest: () => this.catalogDigest(),
    });
    await serveHave(this.node, {
      subscribe: (id, onIndex, onFetching) => this.subscribeLocal(id, onIndex, onFetching),
      peerFetching: (peer, id, index) => this.downloads.get(id)?.peerFetching(peer, index),
    });

    const pubsub = this.node.services.pubsub;
    // Validated before delivery and before relaying: a rejected message goes no further than this host.
    pubsub.topicValidators.set(ANNOUNCE_TOPIC, announcementValidator(() => this.trusted(), this.gossipRejected));
    pubsub.subscribe(ANNOUNCE_TOPIC);
    pubsub.addEventListener('gossipsub:message', (evt) => {
      const { msg, msgId, propagationSource } = evt.detail;
      if (msg.topic !== ANNOUNCE_TOPIC || msg.type !== 'signed') return;
      let ann: Announcement;
      try {
        ann = parseAnnouncement(msg.data, msg.from.toString(), this.trusted());
      } catch {
        return; // the validator let it through only if it parses; nothing to do otherwise
      }
      // State is cheap to apply (no queue); only news keeps maintenance on its short cadence.
      if (ann.t === 'state') {
        if (this.fleet.set(ann.host, ann)) this.nudge();
      } else {
        this.nudge();
        this.gossipWork.push(msgId, () => this.onAnnouncement(ann, msg.from, propagationSource));
      }
    });
    this.node.addEventListener('peer:identify', (evt) => {
      this.nudge();
      void this.syncWith(evt.detail.peerId, false);
    });
    this.node.addEventListener('peer:disconnect', (evt) => {
      const peer = evt.detail.toString();
      this.nudge();
      this.clients.get(peer)?.close().catch(() => {});
      this.clients.delete(peer);
      for (const d of this.downloads.values()) d.peerGone(peer);
    });
    this.scheduleMaintenance(MAINTENANCE_MIN_MS);
    this.timers.push(setInterval(() => void this.announceState(), STATE_EVERY_MS));
    // Resume what was being downloaded before a restart, and anything published while we were away.
    for (const sm of await this.store.index.listManifests()) void this.consider(sm);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.opts.budget?.stop();
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.maintenanceTimer);
    if (this.stateTimer) clearTimeout(this.stateTimer);
    for (const d of this.downloads.values()) d.stop();
    for (const c of this.clients.values()) await c.close().catch(() => {});
    await this.chunkServer.close().catch(() => {});
    await this.node.stop();
    // A round caught mid-way ends quickly now that the node is down (seen in the soak: "Database is not open").
    await this.maintenanceRun;
  }

  get peerId(): string { return this.node.peerId.toString(); }

  addresses(): string[] {
    return this.node.getMultiaddrs().map((a) => a.toString());
  }

  trusted(): string[] {
    return this.opts.trust;
  }

  // ---- announcements -------------------------------------------------------------------------------

  private async publishGossip(msg: object): Promise<void> {
    try {
      await this.node.services.pubsub.publish(ANNOUNCE_TOPIC, Buffer.from(JSON.stringify(msg)));
    } catch (err) {
      log.warn('announce_failed', { error: errorText(err) });
    }
  }

  /** Called by the daemon after a local publish. */
  async announcePublished(sm: SignedManifest): Promise<void> {
    this.digestCache = undefined;
    this.gcDue = `published ${sm.manifest.runtime.name}@${sm.manifest.runtime.version}`; // a --force publish replaced a manifest
    this.nudge();
    await this.publishGossip({
      t: 'published', id: sm.id, name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, publisher: sm.manifest.publisher,
    });
    // Installed here already, or skipped (architecture, --no-install): returns at once, and records a skip so
    // that status, the CI gate and this state message name it.
    await this.consider(sm);
    await this.announceState();
  }

  async announceState(): Promise<void> {
    if (this.stopping) return;
    const installed = (await this.store.index.listInstalls()).map((r) => r.manifestId).slice(0, MAX_INSTALLED_IDS);
    const progress = this.localProgress();
    this.lastProgressSig = progressSignature(progress);
    await this.publishGossip({ t: 'state', host: this.peerId, installed, zone: this.opts.zone, cluster: this.cluster, arch: machineArch(), ...wireProgress(progress) });
  }

  /** A failure or a skip to tell the fleet about (the CI gate waits on it): one state message soon, however many happen at once. */
  private announceStateSoon(): void {
    if (this.stateTimer || this.stopping) return;
    this.stateTimer = setTimeout(() => {
      this.stateTimer = null;
      void this.announceState();
    }, 500);
  }

  /** A validated `published` or `removed` announcement (state is handled inline, see init). */
  private async onAnnouncement(ann: Announcement, author: PeerId, via: PeerId): Promise<void> {
    if (ann.t === 'published') {
      await this.learnManifest(ann.id, [author, via]);
    } else if (ann.t === 'removed') {
      await this.applyRemoval(ann.removal, true);
    }
  }

  // ---- anti-entropy ---------------------------------------------------------------------------------

  private async listing(): Promise<CatalogListing & { peers: { id: string; addrs: string[] }[] }> {
    // Newest first, so that a catalog over the listing bounds still carries what matters.
    const manifests = (await this.store.index.listManifests())
      .sort((a, b) => Date.parse(b.manifest.createdAt) - Date.parse(a.manifest.createdAt)).slice(0, MAX_LISTED_MANIFESTS)
      .map((sm) => ({
        id: sm.id, name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, createdAt: sm.manifest.createdAt,
        publisher: sm.manifest.publisher,
      }));
    const removals = this.signedRemovals().slice(-MAX_LISTED_REMOVALS);
    const installed = (await this.store.index.listInstalls()).map((r) => r.manifestId).slice(0, MAX_INSTALLED_IDS);
    // A sample of our peers and their listen addresses, so that agents bootstrapped to one host find the others.
    const peers: { id: string; addrs: string[] }[] = [];
    for (const p of this.node.getPeers().sort(() => Math.random() - 0.5).slice(0, 16)) {
      const stored = await this.node.peerStore.get(p).catch(() => null);
      const addrs = stored?.addresses.map((a) => a.multiaddr.toString()) ?? [];
      if (addrs.length) peers.push({ id: p.toString(), addrs });
    }
    // Failures and skips with why (host-notes.ts), for a peer that missed our state gossip.
    const progress = this.localProgress();
    const failed = encodeNotes(progress.failed.map((f) => [f.id, f.error]));
    const skipped = encodeNotes(progress.skipReasons);
    return { manifests, removals, installed, zone: this.opts.zone, cluster: this.cluster, arch: machineArch(), peers, failed, skipped };
  }

  private signedRemovals(): SignedRemoval[] {
    return this.tombstones.filter((t) => t.signature !== null).map((t) => ({ removal: t.removal, signature: t.signature! }));
  }

  /** This agent's catalog digest (see CatalogProvider.digest), cached until the catalog changes here. */
  private async catalogDigest(): Promise<string> {
    const now = Date.now();
    // The TTL only guards against a change made without passing through this class (none today).
    if (this.digestCache !== undefined && now - this.digestCache.at < 30_000) return this.digestCache.value;
    const ids = (await this.store.index.listManifests()).map((sm) => sm.id);
    const value = catalogDigest(ids, this.signedRemovals());
    this.digestCache = { value, at: now };
    return value;
  }

  /**
   * Catch up with one peer: its removals, its manifests, its installed set, its peers. With `digestFirst`
   * (maintenance rounds) the peer's digest is compared with ours first, and the listing is fetched only when
   * they differ. Returns true when the peer told us something new.
   */
  private async syncWith(peer: PeerId, digestFirst: boolean): Promise<boolean> {
    if (this.stopping) return false;
    try {
      if (digestFirst && (await fetchDigest(this.node, peer)) === (await this.catalogDigest())) {
        this.fleet.touch(peer.toString());
        return false;
      }
    } catch {
      return false; // not an agent yet, or gone; a later round retries
    }
    let listing: CatalogListing & { peers?: unknown };
    try {
      listing = await fetchListing(this.node, peer);
    } catch {
      return false;
    }
    let news = this.fleet.set(peer.toString(), { installed: listing.installed, zone: listing.zone, cluster: parseCluster(listing.cluster), arch: listing.arch,
      progress: progressFromNotes(this.fleet.get(peer.toString())?.progress, listing.failed, listing.skipped) });
    const tombstonesBefore = this.tombstones.length;
    for (const r of listing.removals) {
      const key = `removal:${String((r as Partial<SignedRemoval>)?.signature)}`;
      if (this.refused.has(key) || this.tombstones.some((t) => t.signature !== null && t.signature === r.signature)) continue;
      try {
        await this.applyRemoval(verifyRemoval(r, this.trusted()), false);
      } catch (err) {
        this.refused.add(key);
        log.warn('removal_ignored', { peer: peer.toString(), error: errorText(err) });
      }
    }
    let asked = 0;
    // Manifests held here: a peer's older manifest of a name@version held here in a newer one is not fetched
    // (superseded.ts).
    const held = await this.store.index.listManifests();
    for (const e of listing.manifests) {
      if (asked >= MAX_NEW_PER_SYNC) break;
      if (this.isTombstoned(e.name, e.version, e.createdAt) || this.refused.has(e.id)) continue;
      if (isSuperseded(held, e.name, e.version, e.createdAt)) continue;
      // A listed publisher we do not trust: its manifest would be refused after the fetch, so do not fetch.
      if (e.publisher !== undefined && !isTrustedKey(e.publisher, this.trusted())) {
        if (!this.untrustedLogged.has(e.id)) {
          this.untrustedLogged.add(e.id);
          log.warn('manifest_untrusted', { manifestId: e.id, name: printable(e.name), version: printable(e.version), peer: peer.toString(), publisher: printable(e.publisher, 80), hint: 'add the key with --trust if this publisher is yours' });
        }
        continue;
      }
      if (await this.learnManifest(e.id, [peer])) asked++;
    }
    if (Array.isArray(listing.peers)) await this.meetPeers(listing.peers);
    // Catalogs that differ only by what we refuse (an untrusted publisher's runtimes) are no news: such a
    // mismatch must not keep maintenance on its short cadence for ever.
    news ||= asked > 0 || this.tombstones.length !== tombstonesBefore;
    return news;
  }

  private async meetPeers(list: unknown[]): Promise<void> {
    const connected = new Set(this.node.getPeers().map((p) => p.toString()));
    for (const entry of list.slice(0, 32)) {
      if (connected.size >= TARGET_PEERS) return;
      const e = entry as { id?: unknown; addrs?: unknown };
      if (typeof e.id !== 'string' || !Array.isArray(e.addrs) || e.id === this.peerId || connected.has(e.id)) continue;
      try {
        const id = peerIdFromString(e.id);
        const addrs = e.addrs.filter((a): a is string => typeof a === 'string').slice(0, 8).map((a) => multiaddr(a));
        await this.node.peerStore.merge(id, { multiaddrs: addrs });
        connected.add(e.id);
        void this.node.dial(id).catch(() => {});
      } catch {
        // a malformed entry; skip it
      }
    }
  }

  /** Something happened: keep (or bring back) the short maintenance cadence. */
  private nudge(): void {
    this.eventful = true;
    this.maintenanceDelay = MAINTENANCE_MIN_MS;
    if (this.maintenanceDueAt - Date.now() > MAINTENANCE_MIN_MS) this.scheduleMaintenance(MAINTENANCE_MIN_MS);
  }

  private scheduleMaintenance(delayMs: number): void {
    if (this.stopping) return;
    clearTimeout(this.maintenanceTimer);
    this.maintenanceDueAt = Date.now() + delayMs;
    this.maintenanceTimer = setTimeout(() => { this.maintenanceRun = this.maintain(); }, delayMs);
    this.maintenanceTimer.unref?.();
  }

  /**
   * The connected peers in turn, by id: news that only one peer's catalog holds (a removal or manifest that gossip
   * did not deliver here) is found within one sweep of rounds. A random pick left a peer unchecked for many rounds
   * now and then (with two peers, one in eight chance over three rounds).
   */
  private nextSyncPeer(peers: PeerId[]): PeerId {
    const sorted = [...peers].sort((x, y) => (x.toString() < y.toString() ? -1 : 1));
    const next = sorted.find((p) => p.toString() > this.lastSyncPeer) ?? sorted[0]!;
    this.lastSyncPeer = next.toString();
    return next;
  }

  /**
   * One maintenance round: RTTs of new (or long unmeasured) peers, a top-up of connections, a catalog check
   * with the next peer in turn, downloads to start or retry. Never runs twice at once; schedules the next round,
   * later and later while nothing changes (see MAINTENANCE_MIN_MS).
   */
  private async maintain(): Promise<void> {
    if (this.stopping || this.maintaining) return;
    this.maintaining = true;
    const eventfulBefore = this.eventful;
    this.eventful = false;
    let changed = eventfulBefore;
    try {
      await this.topUpConnections();
      this.updateCluster();
      const now = Date.now();
      const peers = this.node.getPeers();
      for (const p of peers) this.fleet.touch(p.toString(), now);
      this.fleet.expire(now);
      await Promise.all(peers.filter((p) => now - (this.rtt.get(p.toString())?.at ?? 0) > RTT_REFRESH_MS).map(async (p) => {
        try {
          const ms = await this.node.services.ping.ping(p, { signal: AbortSignal.timeout(3000) });
          this.rtt.set(p.toString(), { ms, at: Date.now() });
          this.rttFloor.note(p.toString(), ms);
        } catch { /* unreachable for now */ }
      }));
      for (const id of this.rtt.keys()) if (!peers.some((p) => p.toString() === id)) this.rtt.delete(id);
      if (peers.length > 0 && (await this.syncWith(this.nextSyncPeer(peers), true))) changed = true;
      if (await this.collectSuperseded()) changed = true;
      for (const sm of await this.store.index.listManifests()) void this.consider(sm);
      if (this.downloads.size > 0) changed = true;
      // Download progress (in PROGRESS_STEP steps), failures and skips reach the fleet's dashboards.
      if (progressSignature(this.localProgress()) !== this.lastProgressSig) await this.announceState();
    } catch (err) {
      log.warn('maintenance_failed', { error: errorText(err) });
    } finally {
      this.maintaining = false;
      this.maintenanceDelay = changed || this.eventful ? MAINTENANCE_MIN_MS : Math.min(MAINTENANCE_MAX_MS, this.maintenanceDelay * 2);
      // A failed install is retried when its delay is up, not a whole backoff later.
      const retryIn = Math.min(...[...this.failures.values()].map((f) => f.retryAt - Date.now()), Infinity);
      this.scheduleMaintenance(Math.max(1000, Math.min(this.maintenanceDelay, retryIn)));
    }
  }

  /**
   * Drop the manifests superseded here (superseded.ts) and collect the chunks that installs, publishes and
   * drops left unreferenced. Returns true when a manifest was dropped (the catalog changed).
   */
  private async collectSuperseded(): Promise<boolean> {
    return this.opts.mutex.run(async () => {
      const dropped = await dropSuperseded(this.store.index, (id) => this.downloads.has(id));
      if (dropped.length === 0 && this.gcDue === null) return false;
      const reason = dropped.length ? 'superseded manifests dropped' : this.gcDue!;
      this.gcDue = null;
      this.digestCache = undefined;
      const gc = await this.store.gc({ chunkGraceMs: 0 });
      // Counted as GC whichever runs first, this or the tidy that the publish or install runs after the lock.
      this.opts.budget?.freed(gc.removed, gc.bytes, reason);
      if (dropped.length) {
        log.info('superseded_dropped', { manifests: dropped.map((sm) => `${sm.manifest.runtime.name}@${sm.manifest.runtime.version} ${sm.id}`), freedBytes: gc.bytes });
      }
      return dropped.length > 0;
    });
  }

  private localProgress(): HostProgress {
    const downloads = [...this.downloads.values()].map((d) => {
      const st = d.status();
      return { id: st.manifestId, bytesHave: st.bytesHave, bytesTotal: st.bytesTotal };
    });
    return localProgress(downloads, this.failures, this.skipped, os.hostname());
  }

  /**
   * Below TARGET_PEERS connections, dial again: the bootstrap addresses, then peers we know addresses of.
   * Without this, a host whose connections all dropped (a restart of its peers, a network blip) would stay
   * alone for ever, since nobody else dials it either.
   */
  private async topUpConnections(): Promise<void> {
    const connected = new Set(this.node.getPeers().map((p) => p.toString()));
    if (connected.size >= TARGET_PEERS) return;
    const dials: Promise<unknown>[] = [];
    for (const addr of this.opts.bootstrap) {
      const id = /\/p2p\/([^/]+)$/.exec(addr)?.[1];
      if (id !== undefined && (connected.has(id) || id === this.peerId)) continue;
      dials.push(this.node.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) }));
    }
    const now = Date.now();
    const known = (await this.node.peerStore.all()).filter((p) => {
      const id = p.id.toString();
      return id !== this.peerId && !connected.has(id) && p.addresses.length > 0 && (this.banned.get(id) ?? 0) < now;
    });
    for (const p of known.sort(() => Math.random() - 0.5).slice(0, Math.max(0, TARGET_PEERS - connected.size))) {
      dials.push(this.node.dial(p.id, { signal: AbortSignal.timeout(5000) }));
    }
    await Promise.allSettled(dials);
  }

  // ---- manifests and downloads ----------------------------------------------------------------------

  /**
   * Fetch manifest `id` from one of `from` unless it is known here, through the bounded manifest-fetch queue.
   * Returns true when a fetch was queued.
   */
  private async learnManifest(id: string, from: PeerId[]): Promise<boolean> {
    if (this.refused.has(id)) return false;
    const known = await this.store.index.getManifest(id);
    if (known) {
      void this.consider(known);
      return false;
    }
    // The author and the relay are often the same peer: ask each once.
    from = from.filter((p, i) => from.findIndex((q) => q.equals(p)) === i);
    const source = from[0]?.toString() ?? '';
    const mine = this.fetchesByPeer.get(source) ?? 0;
    if (mine >= MAX_FETCHES_PER_PEER) {
      this.manifestFetches.dropped++;
      return false;
    }
    const queued = this.manifestFetches.push(id, async () => {
      try {
        await this.fetchAndKeepManifest(id, from);
      } finally {
        const left = (this.fetchesByPeer.get(source) ?? 1) - 1;
        if (left > 0) this.fetchesByPeer.set(source, left);
        else this.fetchesByPeer.delete(source);
      }
    });
    if (queued) this.fetchesByPeer.set(source, mine + 1);
    return queued;
  }

  private async fetchAndKeepManifest(id: string, from: PeerId[]): Promise<void> {
    if (this.stopping || (await this.store.index.getManifest(id))) return;
    for (const peer of from) {
      let raw: unknown;
      try {
        raw = await fetchManifest(this.node, peer, id);
      } catch {
        continue;
      }
      if (raw === undefined) continue;
      let sm: SignedManifest;
      try {
        // Trust first: a key lookup costs nothing, the hash and signature of a large manifest do.
        const publisher = (raw as { manifest?: { publisher?: unknown } } | null)?.manifest?.publisher;
        if (!isTrustedKey(publisher, this.trusted())) throw new Error(`it is signed by ${printable(String(publisher), 80)}, which is not a trusted publisher`);
        sm = verifySignedManifest(raw, this.trusted());
      } catch (err) {
        this.refused.add(id);
        if (!this.untrustedLogged.has(id)) {
          this.untrustedLogged.add(id);
          log.warn('manifest_ignored', { manifestId: id, peer: peer.toString(), error: errorText(err),
            hint: 'if this host should install it, add its publisher key to trust in the config and restart' });
        }
        return;
      }
      if (sm.id !== id) return;
      const { name, version } = sm.manifest.runtime;
      if (this.isTombstoned(name, version, sm.manifest.createdAt)) return;
      // An older manifest of a name@version held here in a newer one: see superseded.ts.
      if (await supersededHere(this.store.index, name, version, sm.manifest.createdAt)) return;
      await this.store.index.putManifest(sm);
      this.digestCache = undefined;
      // A removal that arrived while this one was checked and stored may have listed the manifests before it
      // landed: it would then stay for ever (the removal is not applied twice). Looked at again after the put.
      if (this.isTombstoned(name, version, sm.manifest.createdAt)) {
        await this.store.index.deleteManifest(id);
        this.digestCache = undefined;
        return;
      }
      this.nudge();
      log.info('learned', { name, version, manifestId: id, peer: peer.toString() });
      void this.consider(sm); // runs the whole download: do not hold up the caller
      return;
    }
  }

  /** Manifests whose chunks GC must keep: installed here, in transfer, waiting to resume. */
  async protectedManifests(): Promise<Set<string>> {
    const ids = new Set((await this.store.index.listInstalls()).map((r) => r.manifestId));
    for (const id of this.downloads.keys()) ids.add(id);
    for (const id of this.opts.budget?.waitingIds() ?? []) ids.add(id);
    return ids;
  }

  /**
   * Does the download of `sm` fit in the disk budget and on the disks, after GC? If not, it is refused with one
   * sentence (log, status, metrics) and waits: the budget calls consider() again when space returns.
   */
  private async admit(sm: SignedManifest, missing: ChunkRef[], replacesId: string | null): Promise<boolean> {
    const budget = this.opts.budget;
    if (!budget) return true;
    this.admitting.add(sm.id);
    try {
      const protect = await this.protectedManifests();
      protect.add(sm.id);
      let reservedBytes = 0;
      for (const d of this.downloads.values()) {
        const st = d.status();
        reservedBytes += Math.max(0, st.bytesTotal - st.bytesHave);
      }
      const replaces = replacesId === null ? null : (await this.store.index.getManifest(replacesId)) ?? null;
      const verdict = await budget.admit(sm, missing, { protect, reservedBytes, replaces });
      if (verdict.ok) return true;
      const { name, version } = sm.manifest.runtime;
      metrics.downloadRefused(verdict.kind);
      log.warn('download_refused', { name, version, manifestId: sm.id, kind: verdict.kind, reason: verdict.sentence });
      budget.wait(sm, verdict.kind, verdict.sentence, verdict.retryWhen, () => void this.consider(sm));
      return false;
    } catch (err) {
      log.warn('space_check_failed', { manifestId: sm.id, error: errorText(err) });
      return true; // the disk itself will say no if it has to
    } finally {
      this.admitting.delete(sm.id);
    }
  }

  /**
   * The disk (or quota) filled during the download or the install of `sm`: a local condition, not a peer's
   * fault. The transfer has stopped, its temp files and staging dir are gone, the verified chunks stay; GC
   * frees what it can, and the download resumes by itself once the space it still needs is there.
   */
  private async waitForSpace(sm: SignedManifest, err: unknown, d: Download): Promise<void> {
    const budget = this.opts.budget!;
    const { name, version } = sm.manifest.runtime;
    const code = diskFullCode(err)!;
    metrics.diskFullStops++;
    await budget.tidy(await this.protectedManifests(), `disk full, for ${name}@${version}`);
    const refs = manifestChunks(sm.manifest);
    const have = await Promise.all(refs.map((c) => this.store.chunks.has(c.id)));
    const installed = await this.store.index.getInstall(name, version);
    const replaces = installed && installed.manifestId !== sm.id ? (await this.store.index.getManifest(installed.manifestId)) ?? null : null;
    const protect = await this.protectedManifests();
    protect.add(sm.id);
    const verdict = await budget.admit(sm, refs.filter((_, i) => !have[i]), { protect, reservedBytes: 0, replaces })
      .catch((): Admission => ({ ok: false, kind: 'space', sentence: '', retryWhen: { storeShrinks: true } }));
    const st = d.status();
    const sentence = `${name}@${version} stopped: the disk is full (${code}: ${errorText(err)}); ` +
      `${have.filter(Boolean).length} of ${refs.length} chunks are kept, nothing half-written is left, and it resumes by itself when space returns`;
    log.error('disk_full', { name, version, manifestId: sm.id, code, chunksHave: st.chunksHave, chunks: st.chunks, reason: sentence,
      hint: `free space on the filesystems holding ${this.store.dataDir} and ${this.opts.install.runtimes.root}, or lower what other programs keep there` });
    // Space may already be back (GC freed enough): then the next check retries at once.
    budget.wait(sm, 'disk-full', sentence, verdict.ok ? { path: this.store.chunks.dir, availAtLeast: 0 } : verdict.retryWhen, () => void this.consider(sm));
  }

  /** Start downloading `sm` unless it is installed, superseded, removed or not for this machine. */
  private async consider(sm: SignedManifest): Promise<void> {
    if (this.stopping || this.downloads.has(sm.id)) return;
    if ((this.failures.get(sm.id)?.retryAt ?? 0) > Date.now()) return;
    // Refused for space, or stopped by a full disk: the budget calls consider() again when space returns.
    if (this.opts.budget?.isWaiting(sm.id) || this.admitting.has(sm.id)) return;
    const { name, version } = sm.manifest.runtime;
    if (this.isTombstoned(name, version, sm.manifest.createdAt)) return;
    const skip = await localSkipReason(this.store.index, sm);
    if (skip !== null) {
      if (!this.skipped.has(sm.id)) {
        this.skipped.set(sm.id, skip);
        log.info('skipped', { name, version, manifestId: sm.id, reason: skip });
        this.announceStateSoon();
      }
      return;
    }
    const installed = await this.store.index.getInstall(name, version);
    if (installed) {
      if (installed.manifestId === sm.id) return;
      const current = await this.store.index.getManifest(installed.manifestId);
      if (current && Date.parse(current.manifest.createdAt) >= Date.parse(sm.manifest.createdAt)) return;
    }
    if (this.downloads.has(sm.id)) return;
    const refs = manifestChunks(sm.manifest);
    const have = await Promise.all(refs.map((c) => this.store.chunks.has(c.id)));
    if (this.downloads.has(sm.id) || this.stopping) return;
    if (!(await this.admit(sm, refs.filter((_, i) => !have[i]), installed?.manifestId ?? null))) return;
    if (this.downloads.has(sm.id) || this.stopping) return;
    // The install runs alongside the download and takes each chunk as it arrives (one pass from wire to tree).
    const feed = new LiveChunkSource(this.store.chunks, refs, (i) => have[i]!);
    metrics.manifestLearned(sm.id);
    const d = new Download(this, sm, have, feed);
    this.downloads.set(sm.id, d);
    log.info('download_started', { name, version, manifestId: sm.id, chunks: refs.length, resumedChunks: d.resumedChunks });
    try {
      let installError: unknown = null;
      const installing = installManifest(this.opts.install, sm, {
        source: feed,
        lock: (fn) => this.opts.mutex.run(fn),
        stillWanted: () => !this.isTombstoned(name, version, sm.manifest.createdAt),
      }).catch((err: unknown) => {
        installError = err;
        // A full disk stops the download too: more chunks would not fit either.
        if (diskFullCode(err) !== null) d.halt(err);
        return null;
      });
      try {
        // A failed install does not stop the download: its chunks serve the fleet, and the retry reads them here.
        await d.run();
        // Every chunk is here; what is left is the extraction's backlog and the rename. The gap between this and
        // `installed` is the install's tail, which the fleet benchmarks look for.
        log.info('download_finished', { name, version, manifestId: sm.id, ms: Date.now() - d.startedAt,
          chunksExtracted: feed.delivered, chunks: refs.length, readBackChunks: feed.readBack, installWaitedMs: Math.round(feed.waitedMs),
          installReadBackMs: Math.round(feed.readBackMs), installPlaceMs: Math.round(feed.placeMs),
          installListMs: feed.listMs === null ? null : Math.round(feed.listMs),
          installContentFromMs: feed.contentFromMs === null ? null : Math.round(feed.contentFromMs) });
      } catch (err) {
        feed.close(); // stopped: the install gives up too
        // Its staging dir is gone before a full disk is reported: nothing half-written stays behind.
        if (diskFullCode(err) !== null) await installing;
        throw err;
      }
      const record = await installing;
      if (installError !== null) throw installError;
      this.failures.delete(sm.id);
      if (record) {
        this.gcDue = `installed ${name}@${version}`; // it may have replaced an older manifest of the same name@version
        metrics.installFinished(sm.id, 'installed');
        const st = d.status();
        log.info('installed', { name, version, manifestId: sm.id, path: record.path, chunks: st.fetchedChunks, bytes: st.fetchedBytes,
          peers: st.sources.length, ms: Date.now() - d.startedAt });
        await this.announceState();
        // A replaced version's chunks are garbage now; over the budget or the high watermark, GC evicts more.
        await this.opts.budget?.tidy(await this.protectedManifests(), `installed ${name}@${version}`);
      }
    } catch (err) {
      if (err instanceof CorruptChunkError) {
        // A chunk went bad on disk after it was verified on arrival: drop it so the retry fetches it again.
        await this.store.chunks.delete(err.chunkId).catch(() => {});
      }
      if (!this.stopping && this.isTombstoned(name, version, sm.manifest.createdAt)) {
        // A removal stopped it (applyRemoval): nothing failed, nothing to retry or report as a failure.
        this.failures.delete(sm.id);
        log.info('download_cancelled', { name, version, manifestId: sm.id, reason: 'removed' });
      } else if (!this.stopping && diskFullCode(err) !== null && this.opts.budget) {
        await this.waitForSpace(sm, err, d);
      } else if (!this.stopping) {
        const count = (this.failures.get(sm.id)?.count ?? 0) + 1;
        const delayMs = Math.min(10 * 60_000, 5_000 * 2 ** (count - 1));
        this.failures.set(sm.id, { count, retryAt: Date.now() + delayMs, error: errorText(err) });
        metrics.installFinished(sm.id, 'failed');
        log.error('install_failed', { name, version, manifestId: sm.id, error: errorText(err), retryInS: Math.round(delayMs / 1000),
          hint: `retried automatically; if it keeps failing, check free space and permissions of ${this.opts.install.runtimes.root} and the data dir` });
        this.announceStateSoon();
      }
    } finally {
      this.downloads.delete(sm.id);
      this.recent.unshift({ ...d.status(), finishedAt: new Date().toISOString() } as ReturnType<Download['status']>);
      this.recent.length = Math.min(this.recent.length, 10);
    }
  }

  private readonly refetches = new Map<string, Promise<number>>();

  /**
   * Fetch the chunks of `sm` that the store lacks, without installing anything (a repair; a chunk file that
   * failed verification and was dropped). Returns how many are still missing once no peer sent one for `idleMs`.
   */
  fetchChunks(sm: SignedManifest, idleMs = 60_000): Promise<number> {
    let p = this.refetches.get(sm.id);
    if (!p) {
      p = (async () => {
        // A download of the same manifest (with its install) fetches the same chunks: let it, then look.
        for (const until = Date.now() + idleMs; this.downloads.has(sm.id) && Date.now() < until;) await new Promise((r) => setTimeout(r, 500));
        if (this.stopping || this.downloads.has(sm.id)) return (await missingChunks(this, sm)).length;
        return fetchMissingChunks(this, sm, idleMs, {
          started: (d) => this.downloads.set(sm.id, d),
          ended: (d) => { if (this.downloads.get(sm.id) === d) this.downloads.delete(sm.id); },
        });
      })().finally(() => this.refetches.delete(sm.id));
      this.refetches.set(sm.id, p);
    }
    return p;
  }

  // ---- what Download needs --------------------------------------------------------------------------

  /** Connected peers we have not banned. */
  usablePeers(): PeerId[] {
    const now = Date.now();
    return this.node.getPeers().filter((p) => (this.banned.get(p.toString()) ?? 0) < now);
  }

  /**
   * Peer ids of the hosts known to be in this agent's zone (by label, or by announced cluster without one),
   * this one included, sorted. Every member computes the same list from the same announcements.
   */
  zoneMembers(): string[] {
    const zone = this.zone;
    const members = [...this.fleet.entries()].filter(([, h]) => zone !== null && peerZone(this.opts.zone, h) === zone).map(([p]) => p);
    return [...members, this.peerId].sort();
  }

  /** Does `peer` announce `manifestId` installed (so it holds every chunk)? */
  hasInstalled(peer: string, manifestId: string): boolean {
    return this.fleet.get(peer)?.installed.has(manifestId) ?? false;
  }

  /**
   * A peer's RTT and zone as this host sees it. Without a label, a peer that announces this host's cluster
   * but whose RTT floor is far above the rest of the cluster's counts as far (nearness.ts).
   */
  peerInfo(peer: string): { rttMs?: number; zone?: string | null } {
    const zone = peerZone(this.opts.zone, this.fleet.get(peer));
    if (this.opts.zone === null && zone !== null && zone === this.cluster && this.rttOutliers().has(peer)) {
      return { rttMs: this.rtt.get(peer)?.ms, zone: `${zone}~far` };
    }
    return { rttMs: this.rtt.get(peer)?.ms, zone };
  }

  /** Same-cluster peers far off by RTT; recomputed at most once a second (peerInfo runs inside sorts). */
  private rttOutliers(): Set<string> {
    const now = Date.now();
    if (!this.outlierCache || now - this.outlierCache.at > 1000) {
      const same = [...this.fleet.entries()].filter(([, h]) => h.cluster !== null && h.cluster === this.cluster).map(([p]) => p);
      this.outlierCache = { at: now, set: this.rttFloor.outliers(same) };
    }
    return this.outlierCache.set;
  }

  /** Same zone first, then lowest RTT (unknown last). */
  rankByNearness(peers: PeerId[]): PeerId[] {
    const key = (p: PeerId) => {
      const info = this.peerInfo(p.toString());
      const zoneScore = this.zone && info.zone === this.zone ? 0 : 1;
      return [zoneScore, info.rttMs ?? Number.MAX_SAFE_INTEGER] as const;
    };
    return [...peers].sort((a, b) => {
      const [za, ra] = key(a);
      const [zb, rb] = key(b);
      return za - zb || ra - rb;
    });
  }

  clientFor(peer: string): ChunkClient {
    let c = this.clients.get(peer);
    if (!c) {
      c = new ChunkClient(this.node, peerIdFromString(peer), { maxInFlight: 4, downloadLimit: this.opts.downloadLimit });
      this.clients.set(peer, c);
    }
    return c;
  }

  /** A peer sent bytes that do not hash to the chunk id: drop it and avoid it for a while. */
  peerSentCorrupt(peer: string, err: Error): void {
    this.corruptChunksReceived++;
    if ((this.banned.get(peer) ?? 0) < Date.now()) log.warn('corrupt_chunk', { peer, error: err.message, hint: 'the peer sent a corrupt chunk; it is dropped and avoided for 10 min: check that host\'s disk and memory' });
    this.banned.set(peer, Date.now() + BAN_MS);
    for (const d of this.downloads.values()) d.ban(peer);
    this.clients.get(peer)?.close().catch(() => {});
    this.clients.delete(peer);
    void this.node.hangUp(peerIdFromString(peer)).catch(() => {});
    // The dropped peer may have been the only one: find others now, not a backed-off round later.
    this.nudge();
  }

  /** A chunk was stored: tell the peers subscribed to a manifest that contains it. */
  chunkStored(id: string): void {
    for (const notify of this.chunkWatchers.get(id) ?? []) notify();
  }

  /**
   * A download of `manifestId` has just asked a source for chunk `index`, which only that source holds: tell the
   * subscribers that asked for such hints (have.ts), so they ask the same source for other chunks first.
   */
  chunkFetching(manifestId: string, index: number): void {
    for (const notify of this.fetchWatchers.get(manifestId) ?? []) notify(index);
  }

  private async subscribeLocal(manifestId: string, onIndex: (index: number) => void, onFetching?: (index: number) => void) {
    const download = this.downloads.get(manifestId);
    const sm = download?.sm ?? (await this.store.index.getManifest(manifestId));
    if (!sm) return null;
    const chunks = manifestChunks(sm.manifest);
    // Watch first, then look, so a chunk stored meanwhile is not missed (a duplicate have1 is harmless).
    const unwatch = chunks.map((c, i) => this.watchChunk(c.id, () => onIndex(i)));
    if (onFetching !== undefined) unwatch.push(this.watchFetching(manifestId, onFetching));
    // A running download knows what it holds; otherwise the store is asked, one stat per chunk.
    const held = download
      ? chunks.flatMap((_, i) => (download.holds(i) ? [i] : []))
      : (await Promise.all(chunks.map((c) => this.store.chunks.has(c.id)))).flatMap((h, i) => (h ? [i] : []));
    const unsubscribe = () => unwatch.forEach((u) => u());
    if (held.length === chunks.length) unsubscribe(); // complete here: nothing more to tell
    return { bits: encodeHaveBits(chunks.length, held), unsubscribe };
  }

  private watchFetching(manifestId: string, fn: (index: number) => void): () => void {
    let set = this.fetchWatchers.get(manifestId);
    if (!set) {
      set = new Set();
      this.fetchWatchers.set(manifestId, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.fetchWatchers.delete(manifestId);
    };
  }

  private watchChunk(id: string, fn: () => void): () => void {
    let set = this.chunkWatchers.get(id);
    if (!set) {
      set = new Set();
      this.chunkWatchers.set(id, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.chunkWatchers.delete(id);
    };
  }

  // ---- removals -------------------------------------------------------------------------------------

  private isTombstoned(name: string, version: string, createdAt: string): boolean {
    return this.tombstones.some((t) => removalCovers(t.removal, name, version, createdAt));
  }

  /**
   * `remove NAME[@VERSION]` from the CLI. On a publisher it is signed and sent to the fleet; elsewhere it
   * only applies here, and the local tombstone keeps the swarm from bringing the runtime back.
   */
  async removeRuntime(name: string, version: string | null): Promise<{ removed: { name: string; version: string; path: string }[]; signed: boolean; freedBytes: number }> {
    const known = (await this.store.index.listManifests()).some((sm) =>
      sm.manifest.runtime.name === name && (version === null || sm.manifest.runtime.version === version));
    if (!known) throw new UserError(`${label({ name, version })} is not installed here, and this agent knows no manifest of it`);
    const key = this.opts.publisherKey;
    const tomb: Tombstone = key
      ? signRemoval(name, version, key)
      : { removal: { name, version, createdAt: new Date().toISOString(), publisher: 'local' }, signature: null };
    const { out: removed, freedBytes } = await this.applyRemoval(tomb, false);
    if (tomb.signature) await this.publishGossip({ t: 'removed', removal: tomb });
    await this.announceState();
    return { removed, signed: tomb.signature !== null, freedBytes };
  }

  private async applyRemoval(t: Tombstone | SignedRemoval, fromGossip: boolean) {
    const r = t.removal;
    const tomb: Tombstone = { removal: r, signature: t.signature };
    const dup = this.tombstones.some((x) => x.removal.name === r.name && x.removal.version === r.version && x.removal.createdAt === r.createdAt);
    if (!dup) {
      await this.opts.mutex.run(async () => {
        this.tombstones.push(tomb);
        this.digestCache = undefined;
        await this.store.index.putMeta('tombstones', this.tombstones);
      });
    }
    const done = await this.removeCovered((name, version, createdAt) => removalCovers(r, name, version, createdAt));
    const removed = done.out;
    if (removed.length) log.info('removed', { runtimes: removed.map((x) => `${x.name}@${x.version}`), removal: label(r), fromFleet: fromGossip });
    if (removed.length && fromGossip) await this.announceState();
    return done;
  }

  /** Remove the manifests `covers` matches, their installs, downloads and chunks (under the mutex). */
  private removeCovered(covers: (name: string, version: string, createdAt: string) => boolean) {
    return this.opts.mutex.run(async () => {
      const out: { name: string; version: string; path: string }[] = [];
      for (const sm of await this.store.index.listManifests()) {
        const { name, version } = sm.manifest.runtime;
        if (!covers(name, version, sm.manifest.createdAt)) continue;
        this.downloads.get(sm.id)?.stop();
        const inst = await this.store.index.getInstall(name, version);
        if (inst && inst.manifestId === sm.id) {
          await this.opts.install.runtimes.remove(name, version);
          await this.store.index.deleteInstall(name, version);
          out.push({ name, version, path: inst.path });
        }
        await this.store.index.deleteManifest(sm.id);
        this.opts.budget?.forget(sm.id);
        await unmarkNotForThisHost(this.store.index, sm.id);
        this.digestCache = undefined;
      }
      const gc = out.length ? await this.store.gc({ chunkGraceMs: 0 }) : { removed: 0, bytes: 0 };
      this.opts.budget?.freed(gc.removed, gc.bytes, `removed ${out.map((o) => `${o.name}@${o.version}`).join(', ')}`);
      return { out, freedBytes: gc.bytes };
    });
  }

  // ---- visibility -----------------------------------------------------------------------------------

  /**
   * Every host this agent has heard from, and itself. Its own skips are worked out from the index rather
   * than taken from the maintenance round, so a `wait` right after a publish sees them at once.
   */
  async fleetHosts(): Promise<FleetHostView[]> {
    const skipped = new Map<string, string>();
    for (const sm of await this.store.index.listManifests()) {
      const reason = await localSkipReason(this.store.index, sm);
      if (reason !== null) skipped.set(sm.id, reason);
    }
    const self: FleetHostView = {
      peerId: this.peerId, self: true, arch: machineArch(), zone: this.zone, seenAt: Date.now(),
      installed: (await this.store.index.listInstalls()).map((r) => r.manifestId),
      failed: new Map([...this.failures].map(([id, f]) => [id, f.error])),
      skipped,
    };
    const others = [...this.fleet.entries()].filter(([p]) => p !== this.peerId).map(([peerId, h]): FleetHostView => {
      // A peer's texts reach the operator's terminal: one bounded line each, no control characters.
      const skipped = new Map((h.progress?.skipped ?? []).map((id) => [id, noteText(h.progress?.skipReasons.get(id) ?? 'skipped by the host')]));
      return {
        peerId, self: false, arch: h.arch, zone: h.zone, seenAt: h.seenAt, installed: [...h.installed],
        failed: new Map((h.progress?.failed ?? []).map((f) => [f.id, noteText(f.error)])), skipped,
      };
    });
    return [self, ...others];
  }

  async status() {
    const now = Date.now();
    const peers = this.node.getConnections().map((c) => ({
      peerId: c.remotePeer.toString(),
      address: c.remoteAddr.toString(),
      direction: c.direction,
      rttMs: this.rtt.get(c.remotePeer.toString())?.ms ?? null,
      zone: this.fleet.get(c.remotePeer.toString())?.zone ?? null,
      cluster: this.fleet.get(c.remotePeer.toString())?.cluster ?? null,
      banned: (this.banned.get(c.remotePeer.toString()) ?? 0) > now,
    }));
    const installedHere = new Set((await this.store.index.listInstalls()).map((r) => r.manifestId));
    const selfProgress = this.localProgress();
    const progressOf = (): [string, HostProgress | undefined][] =>
      [[this.peerId, selfProgress], ...[...this.fleet.entries()].map(([p, h]) => [p, h.progress] as [string, HostProgress | undefined])];
    const fleet = (await this.store.index.listManifests()).map((sm) => {
      const hosts = [...this.fleet.entries()].filter(([, h]) => h.installed.has(sm.id)).map(([p]) => p);
      if (installedHere.has(sm.id)) hosts.unshift(this.peerId);
      return {
        name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, manifestId: sm.id,
        publisher: sm.manifest.publisher, createdAt: sm.manifest.createdAt, installedHere: installedHere.has(sm.id),
        architectures: sm.manifest.runtime.architectures ?? null,
        skippedHere: this.skipped.get(sm.id) ?? null, hosts, ...manifestProgress(sm.id, progressOf()),
        waitingForSpaceHere: this.opts.budget?.waitingFor(sm.id) ?? null,
      };
    });
    const uploads = this.chunkServer.stats();
    return {
      peers,
      /** The zone the zone rule uses here, and where it comes from. */
      nearness: { zone: this.zone, from: this.opts.zone !== null ? 'label' : this.cluster !== null ? 'address' : null },
      transfers: [...this.downloads.values()].map((d) => d.status()),
      recentTransfers: this.recent,
      fleet,
      uploads: { active: uploads.activeUploads, bytesServed: uploads.bytesServed, chunksServed: uploads.chunksServed, slowReaderDrops: uploads.slowReaderDrops,
        // Chunks served from the last ones written, kept in memory (recent-chunks.ts), and read from their files.
        fromMemory: this.store.chunks.recent.hits, fromDisk: this.store.chunks.recent.misses },
      corruptChunksReceived: this.corruptChunksReceived,
      fleetHostsSeen: this.fleet.size + 1,
      gossip: { rejected: this.gossipRejected.count, dropped: this.gossipWork.dropped + this.manifestFetches.dropped },
      hosts: [
        { peerId: this.peerId, hostname: selfProgress.hostname, zone: this.zone, arch: machineArch(), seenAt: new Date(now).toISOString(), self: true },
        ...[...this.fleet.entries()].map(([peerId, h]) => ({
          peerId, hostname: h.progress?.hostname ?? null, zone: h.zone, arch: h.arch, seenAt: new Date(h.seenAt).toISOString(), self: false,
        })),
      ],
    };
  }
}
