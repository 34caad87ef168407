// The swarm side of the daemon: a libp2p node in the fleet, announcements on gossipsub, anti-entropy
// with every new peer, and the downloads that bring published runtimes to this host.
import type { KeyObject } from 'node:crypto';
import type { PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { machineArch } from '../../runtime/runtime-yml.js';
import type { Store } from '../../store/store.js';
import { manifestChunks, verifySignedManifest } from '../../store/manifest.js';
import { CorruptChunkError, type SignedManifest } from '../../store/types.js';
import { registerChunkServer, ChunkClient, type ChunkServer } from '../../protocol/chunk-exchange.js';
import type { RateLimiter } from '../../protocol/rate-limit.js';
import { serveCatalog, fetchListing, fetchManifest, type CatalogListing } from '../../protocol/catalog.js';
import { serveHave } from '../../protocol/have.js';
import { encodeHaveBits } from '../../protocol/messages.js';
import { removalCovers, verifyRemoval, label, signRemoval, type SignedRemoval, type Removal } from '../../protocol/removal.js';
import { createP2PNode, type P2PNode } from './p2p-node.js';
import { Download, type DownloadHost } from './download.js';
import { installManifest, type InstallContext } from '../install/install-manifest.js';
import { localSkipReason, unmarkNotForThisHost } from '../install/no-install.js';
import { decodeNotes, encodeNotes } from '../../protocol/host-notes.js';
import type { Mutex } from '../mutex.js';
import { log } from '../log.js';
import { UserError } from '../errors.js';

export const ANNOUNCE_TOPIC = '/joblet-agent/announce/1';
/** Connections an agent keeps up by dialing peers it learned of; more may come in. */
const TARGET_PEERS = 12;
const MAINTENANCE_MS = 5_000;
const STATE_EVERY_MS = 30_000;
const BAN_MS = 10 * 60_000;
const MAX_GOSSIP_BYTES = 64 * 1024;

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
  /** TEST ONLY, from JOBLET_AGENT_TEST_FAULT: serve corrupt chunks, or serve each chunk after a delay. */
  fault?: { corrupt?: boolean; delayMs?: number };
}

/** A removal kept as a tombstone; `signature` is null for a local-only removal on a non-publisher. */
interface Tombstone { removal: Removal; signature: string | null }

interface FleetHost {
  installed: string[]; zone: string | null; arch: string; seenAt: number;
  /** Manifest id -> why the host failed to install it / why it skips it, as the host announced. */
  failed: Map<string, string>; skipped: Map<string, string>;
}

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
  readonly zone: string | null;
  private readonly downloads = new Map<string, Download>();
  private readonly recent: ReturnType<Download['status']>[] = [];
  private readonly clients = new Map<string, ChunkClient>();
  private readonly banned = new Map<string, number>();
  private readonly rtt = new Map<string, number>();
  private readonly fleet = new Map<string, FleetHost>();
  private readonly skipped = new Map<string, string>();
  private readonly untrustedLogged = new Set<string>();
  /** Manifests whose install failed: retried with a growing delay, not every maintenance round. */
  private readonly failures = new Map<string, { count: number; retryAt: number; error: string }>();
  private stateTimer: NodeJS.Timeout | null = null;
  private readonly chunkWatchers = new Map<string, Set<() => void>>();
  private tombstones: Tombstone[] = [];
  private timers: NodeJS.Timeout[] = [];
  private chunkServer!: ChunkServer;
  private stopping = false;
  corruptChunksReceived = 0;

  private constructor(readonly node: P2PNode, private readonly opts: SwarmOptions) {
    this.store = opts.store;
    this.zone = opts.zone;
  }

  static async start(opts: SwarmOptions): Promise<Swarm> {
    const node = await createP2PNode({
      peerKeyPath: opts.peerKeyPath, fleetKey: opts.fleetKey, listen: opts.listen, bootstrap: opts.bootstrap, mdns: opts.mdns,
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
    this.tombstones = (await this.store.index.getMeta<Tombstone[]>('tombstones')) ?? [];
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
    await serveCatalog(this.node, { listing: () => this.listing(), manifest: (id) => this.store.index.getManifest(id) });
    await serveHave(this.node, { subscribe: (id, onIndex) => this.subscribeLocal(id, onIndex) });

    const pubsub = this.node.services.pubsub;
    pubsub.subscribe(ANNOUNCE_TOPIC);
    pubsub.addEventListener('gossipsub:message', (evt) => {
      const { msg, propagationSource } = evt.detail;
      if (msg.topic !== ANNOUNCE_TOPIC || msg.data.length > MAX_GOSSIP_BYTES) return;
      const author = msg.type === 'signed' ? msg.from : propagationSource;
      void this.onAnnouncement(msg.data, author, propagationSource).catch((err) =>
        log(`ignoring an announcement from ${author.toString()}: ${(err as Error).message}`));
    });
    this.node.addEventListener('peer:identify', (evt) => {
      void this.syncWith(evt.detail.peerId);
    });
    this.node.addEventListener('peer:disconnect', (evt) => {
      const peer = evt.detail.toString();
      this.clients.get(peer)?.close().catch(() => {});
      this.clients.delete(peer);
      for (const d of this.downloads.values()) d.peerGone(peer);
    });
    this.timers.push(setInterval(() => void this.maintain(), MAINTENANCE_MS));
    this.timers.push(setInterval(() => void this.announceState(), STATE_EVERY_MS));
    // Resume what was being downloaded before a restart, and anything published while we were away.
    for (const sm of await this.store.index.listManifests()) void this.consider(sm);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const t of this.timers) clearInterval(t);
    if (this.stateTimer) clearTimeout(this.stateTimer);
    for (const d of this.downloads.values()) d.stop();
    for (const c of this.clients.values()) await c.close().catch(() => {});
    await this.chunkServer.close().catch(() => {});
    await this.node.stop();
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
      log(`could not send an announcement: ${(err as Error).message}`);
    }
  }

  /** Called by the daemon after a local publish. */
  async announcePublished(sm: SignedManifest): Promise<void> {
    await this.publishGossip({ t: 'published', id: sm.id, name: sm.manifest.runtime.name, version: sm.manifest.runtime.version });
    await this.announceState();
  }

  async announceState(): Promise<void> {
    if (this.stopping) return;
    const installed = (await this.store.index.listInstalls()).map((r) => r.manifestId);
    await this.publishGossip({ t: 'state', installed, zone: this.zone, arch: machineArch(), ...(await this.notes()) });
  }

  /** A failure or a skip to tell the fleet about: one state message soon, however many happen at once. */
  private announceStateSoon(): void {
    if (this.stateTimer || this.stopping) return;
    this.stateTimer = setTimeout(() => {
      this.stateTimer = null;
      void this.announceState();
    }, 500);
  }

  /** Our failed and skipped manifests, for the state gossip and the catalog listing (bounded there). */
  private async notes() {
    const known = new Set((await this.store.index.listManifests()).map((sm) => sm.id));
    const failed = [...this.failures].filter(([id]) => known.has(id)).map(([id, f]) => [id, f.error] as [string, string]);
    const skipped = [...this.skipped].filter(([id]) => known.has(id));
    return { failed: encodeNotes(failed), skipped: encodeNotes(skipped) };
  }

  private async onAnnouncement(data: Uint8Array, author: PeerId, via: PeerId): Promise<void> {
    const msg = JSON.parse(Buffer.from(data).toString('utf8')) as Record<string, unknown>;
    if (msg.t === 'published' && typeof msg.id === 'string') {
      await this.learnManifest(msg.id, [author, via]);
    } else if (msg.t === 'state' && Array.isArray(msg.installed)) {
      this.fleet.set(author.toString(), {
        installed: msg.installed.filter((x): x is string => typeof x === 'string').slice(0, 10_000),
        zone: typeof msg.zone === 'string' ? msg.zone : null,
        arch: typeof msg.arch === 'string' ? msg.arch : 'unknown',
        seenAt: Date.now(),
        failed: decodeNotes(msg.failed),
        skipped: decodeNotes(msg.skipped),
      });
    } else if (msg.t === 'removed') {
      await this.applyRemoval(verifyRemoval(msg.removal, this.trusted()), true);
    }
  }

  // ---- anti-entropy ---------------------------------------------------------------------------------

  private async listing(): Promise<CatalogListing & { peers: { id: string; addrs: string[] }[] }> {
    const manifests = (await this.store.index.listManifests()).map((sm) => ({
      id: sm.id, name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, createdAt: sm.manifest.createdAt,
    }));
    const removals = this.tombstones.filter((t) => t.signature !== null)
      .map((t) => ({ removal: t.removal, signature: t.signature! }));
    const installed = (await this.store.index.listInstalls()).map((r) => r.manifestId);
    // A sample of our peers and their listen addresses, so that agents bootstrapped to one host find the others.
    const peers: { id: string; addrs: string[] }[] = [];
    for (const p of this.node.getPeers().sort(() => Math.random() - 0.5).slice(0, 16)) {
      const stored = await this.node.peerStore.get(p).catch(() => null);
      const addrs = stored?.addresses.map((a) => a.multiaddr.toString()) ?? [];
      if (addrs.length) peers.push({ id: p.toString(), addrs });
    }
    return { manifests, removals, installed, zone: this.zone, arch: machineArch(), peers, ...(await this.notes()) };
  }

  /** Catch up with one peer: its removals, its manifests, its installed set, its peers. */
  private async syncWith(peer: PeerId): Promise<void> {
    if (this.stopping) return;
    let listing: CatalogListing & { peers?: unknown };
    try {
      listing = await fetchListing(this.node, peer);
    } catch {
      return; // not an agent yet, or gone; the next maintenance round retries
    }
    this.fleet.set(peer.toString(), {
      installed: listing.installed, zone: listing.zone, arch: listing.arch, seenAt: Date.now(),
      failed: decodeNotes(listing.failed), skipped: decodeNotes(listing.skipped),
    });
    for (const r of listing.removals) {
      try {
        await this.applyRemoval(verifyRemoval(r, this.trusted()), false);
      } catch (err) {
        log(`ignoring a removal from ${peer.toString()}: ${(err as Error).message}`);
      }
    }
    for (const e of listing.manifests) {
      if (this.isTombstoned(e.name, e.version, e.createdAt)) continue;
      await this.learnManifest(e.id, [peer]);
    }
    if (Array.isArray(listing.peers)) await this.meetPeers(listing.peers);
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

  /** Every few seconds: RTTs, a top-up of connections, a catalog sync with one random peer, downloads to start. */
  private async maintain(): Promise<void> {
    if (this.stopping) return;
    await this.topUpConnections();
    const peers = this.node.getPeers();
    await Promise.all(peers.map(async (p) => {
      try {
        this.rtt.set(p.toString(), await this.node.services.ping.ping(p, { signal: AbortSignal.timeout(3000) }));
      } catch { /* unreachable for now */ }
    }));
    if (peers.length > 0) {
      await this.syncWith(peers[Math.floor(Math.random() * peers.length)]);
    }
    for (const sm of await this.store.index.listManifests()) void this.consider(sm);
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

  private async learnManifest(id: string, from: PeerId[]): Promise<void> {
    const known = await this.store.index.getManifest(id);
    if (known) {
      void this.consider(known);
      return;
    }
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
        sm = verifySignedManifest(raw, this.trusted());
      } catch (err) {
        if (!this.untrustedLogged.has(id)) {
          this.untrustedLogged.add(id);
          log(`ignoring manifest ${id} from ${peer.toString()}: ${(err as Error).message}`);
        }
        return;
      }
      if (sm.id !== id) return;
      const { name, version } = sm.manifest.runtime;
      if (this.isTombstoned(name, version, sm.manifest.createdAt)) return;
      await this.store.index.putManifest(sm);
      log(`learned ${name}@${version} (${id}) from ${peer.toString()}`);
      void this.consider(sm); // runs the whole download: do not hold up the caller
      return;
    }
  }

  /** Start downloading `sm` unless it is installed, superseded, removed or not for this machine. */
  private async consider(sm: SignedManifest): Promise<void> {
    if (this.stopping || this.downloads.has(sm.id)) return;
    if ((this.failures.get(sm.id)?.retryAt ?? 0) > Date.now()) return;
    const { name, version } = sm.manifest.runtime;
    if (this.isTombstoned(name, version, sm.manifest.createdAt)) return;
    const skip = await localSkipReason(this.store.index, sm);
    if (skip !== null) {
      if (!this.skipped.has(sm.id)) {
        this.skipped.set(sm.id, skip);
        log(`skipping ${name}@${version}: ${skip}`);
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
    const have = await Promise.all(manifestChunks(sm.manifest).map((c) => this.store.chunks.has(c.id)));
    if (this.downloads.has(sm.id) || this.stopping) return;
    const d = new Download(this, sm, have);
    this.downloads.set(sm.id, d);
    log(`downloading ${name}@${version} (${manifestChunks(sm.manifest).length} chunks, ${d.resumedChunks} already here)`);
    try {
      await d.run();
      const record = await this.opts.mutex.run(async () => {
        if (this.isTombstoned(name, version, sm.manifest.createdAt)) return null;
        return installManifest(this.opts.install, sm);
      });
      this.failures.delete(sm.id);
      if (record) {
        const st = d.status();
        log(`installed ${name}@${version} at ${record.path}: fetched ${st.fetchedChunks} chunks from ${st.sources.length} peers`);
        await this.announceState();
      }
    } catch (err) {
      if (err instanceof CorruptChunkError) {
        // A chunk went bad on disk after it was verified on arrival: drop it so the retry fetches it again.
        await this.store.chunks.delete(err.chunkId).catch(() => {});
      }
      if (!this.stopping) {
        const count = (this.failures.get(sm.id)?.count ?? 0) + 1;
        const delayMs = Math.min(10 * 60_000, 5_000 * 2 ** (count - 1));
        this.failures.set(sm.id, { count, retryAt: Date.now() + delayMs, error: (err as Error).message });
        log(`could not install ${name}@${version}: ${(err as Error).message}; retrying in ${Math.round(delayMs / 1000)} s`);
        this.announceStateSoon();
      }
    } finally {
      this.downloads.delete(sm.id);
      this.recent.unshift({ ...d.status(), finishedAt: new Date().toISOString() } as ReturnType<Download['status']>);
      this.recent.length = Math.min(this.recent.length, 10);
    }
  }

  // ---- what Download needs --------------------------------------------------------------------------

  /** Connected peers we have not banned. */
  usablePeers(): PeerId[] {
    const now = Date.now();
    return this.node.getPeers().filter((p) => (this.banned.get(p.toString()) ?? 0) < now);
  }

  /** Peer ids of the hosts known to be in this agent's zone, this one included, sorted. */
  zoneMembers(): string[] {
    const members = [...this.fleet].filter(([, h]) => h.zone !== null && h.zone === this.zone).map(([p]) => p);
    return [...members, this.peerId].sort();
  }

  /** Does `peer` announce `manifestId` installed (so it holds every chunk)? */
  hasInstalled(peer: string, manifestId: string): boolean {
    return this.fleet.get(peer)?.installed.includes(manifestId) ?? false;
  }

  peerInfo(peer: string): { rttMs?: number; zone?: string | null } {
    return { rttMs: this.rtt.get(peer), zone: this.fleet.get(peer)?.zone ?? null };
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
    if ((this.banned.get(peer) ?? 0) < Date.now()) log(`peer ${peer} sent a corrupt chunk (${err.message}); dropping and avoiding it`);
    this.banned.set(peer, Date.now() + BAN_MS);
    for (const d of this.downloads.values()) d.ban(peer);
    this.clients.get(peer)?.close().catch(() => {});
    this.clients.delete(peer);
    void this.node.hangUp(peerIdFromString(peer)).catch(() => {});
  }

  /** A chunk was stored: tell the peers subscribed to a manifest that contains it. */
  chunkStored(id: string): void {
    for (const notify of this.chunkWatchers.get(id) ?? []) notify();
  }

  private async subscribeLocal(manifestId: string, onIndex: (index: number) => void) {
    const sm = this.downloads.get(manifestId)?.sm ?? (await this.store.index.getManifest(manifestId));
    if (!sm) return null;
    const chunks = manifestChunks(sm.manifest);
    // Watch first, then look, so a chunk stored meanwhile is not missed (a duplicate have1 is harmless).
    const unwatch = chunks.map((c, i) => this.watchChunk(c.id, () => onIndex(i)));
    const held = (await Promise.all(chunks.map((c) => this.store.chunks.has(c.id)))).flatMap((h, i) => (h ? [i] : []));
    const unsubscribe = () => unwatch.forEach((u) => u());
    if (held.length === chunks.length) unsubscribe(); // complete here: nothing more to tell
    return { bits: encodeHaveBits(chunks.length, held), unsubscribe };
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
    const done = await this.opts.mutex.run(async () => {
      if (!dup) {
        this.tombstones.push(tomb);
        await this.store.index.putMeta('tombstones', this.tombstones);
      }
      const out: { name: string; version: string; path: string }[] = [];
      for (const sm of await this.store.index.listManifests()) {
        const { name, version } = sm.manifest.runtime;
        if (!removalCovers(r, name, version, sm.manifest.createdAt)) continue;
        this.downloads.get(sm.id)?.stop();
        const inst = await this.store.index.getInstall(name, version);
        if (inst && inst.manifestId === sm.id) {
          await this.opts.install.runtimes.remove(name, version);
          await this.store.index.deleteInstall(name, version);
          out.push({ name, version, path: inst.path });
        }
        await this.store.index.deleteManifest(sm.id);
        await unmarkNotForThisHost(this.store.index, sm.id);
      }
      const freedBytes = out.length ? (await this.store.gc({ chunkGraceMs: 0 })).bytes : 0;
      return { out, freedBytes };
    });
    const removed = done.out;
    if (removed.length) log(`removed ${removed.map((x) => `${x.name}@${x.version}`).join(', ')} (${fromGossip ? 'removal from the fleet' : 'removal'} of ${label(r)})`);
    if (removed.length && fromGossip) await this.announceState();
    return done;
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
    const others = [...this.fleet].filter(([p]) => p !== this.peerId).map(([peerId, h]): FleetHostView => ({ peerId, self: false, ...h }));
    return [self, ...others];
  }

  async status() {
    const now = Date.now();
    const peers = this.node.getConnections().map((c) => ({
      peerId: c.remotePeer.toString(),
      address: c.remoteAddr.toString(),
      direction: c.direction,
      rttMs: this.rtt.get(c.remotePeer.toString()) ?? null,
      zone: this.fleet.get(c.remotePeer.toString())?.zone ?? null,
      banned: (this.banned.get(c.remotePeer.toString()) ?? 0) > now,
    }));
    const installedHere = new Set((await this.store.index.listInstalls()).map((r) => r.manifestId));
    const fleet = (await this.store.index.listManifests()).map((sm) => {
      const hosts = [...this.fleet].filter(([, h]) => h.installed.includes(sm.id)).map(([p]) => p);
      if (installedHere.has(sm.id)) hosts.unshift(this.peerId);
      return {
        name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, manifestId: sm.id,
        publisher: sm.manifest.publisher, createdAt: sm.manifest.createdAt, installedHere: installedHere.has(sm.id),
        skippedHere: this.skipped.get(sm.id) ?? null, hosts,
      };
    });
    const uploads = this.chunkServer.stats();
    return {
      peers,
      transfers: [...this.downloads.values()].map((d) => d.status()),
      recentTransfers: this.recent,
      fleet,
      uploads: { active: uploads.activeUploads, bytesServed: uploads.bytesServed, chunksServed: uploads.chunksServed },
      corruptChunksReceived: this.corruptChunksReceived,
      fleetHostsSeen: this.fleet.size + 1,
    };
  }
}
