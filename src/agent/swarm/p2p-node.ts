import '../polyfill.js';

import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

import { bootstrap } from '@libp2p/bootstrap';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { identify, type Identify } from '@libp2p/identify';
import type { PrivateKey } from '@libp2p/interface';
import { mdns } from '@libp2p/mdns';
import { ping, type Ping } from '@libp2p/ping';
import { tcp } from '@libp2p/tcp';
import { createLibp2p, type Libp2p, type Libp2pOptions } from 'libp2p';
import { fleetPrologue } from './fleet-key.js';
import { MAX_GOSSIP_BYTES } from './announcements.js';
import { noiseWithCoalescedWrites } from './noise-writes.js';
import { pendingHandshakeGate } from './pending-gate.js';
import { yamuxWithLazyWindowUpdates } from './yamux-window.js';

export type P2PServices = {
  identify: Identify;
  ping: Ping;
  pubsub: GossipSub;
};

export type P2PNode = Libp2p<P2PServices>;

/**
 * Yamux settings for bulk chunk transfer. A stream moves at most one receive window per round trip, so on a
 * real LAN/WAN link the stock 256 KiB initial window (grown only after several fast round trips) throttles the
 * first chunks of every stream; starting at 1 MiB covers a whole average chunk. Larger muxer frames (256 KiB
 * instead of 64 KiB) mean fewer frame headers and events per chunk. On loopback (no RTT) scripts/bench-exchange.ts
 * shows the tuned and stock settings within run-to-run noise of each other; compare them there with --muxer.
 */
export interface MuxerTuning {
  /** Largest yamux data frame this node sends. */
  maxMessageSize: number;
  /** Initial per-stream receive window (yamux minimum is 256 KiB). */
  initialStreamWindowSize: number;
  /** Upper bound the receive window grows to. */
  maxStreamWindowSize: number;
}

export const DEFAULT_MUXER_TUNING: MuxerTuning = {
  maxMessageSize: 256 * 1024,
  initialStreamWindowSize: 1024 * 1024,
  // A paused reader can still be sent a whole window, which it must buffer: with a dozen sources per
  // download, 16 MiB windows could pin ~200 MB. 4 MiB still allows 4 GB/s at 1 ms RTT.
  maxStreamWindowSize: 4 * 1024 * 1024,
};

export interface P2PNodeOptions {
  /** Where the node's Ed25519 identity is kept (protobuf bytes, mode 0600). Created if missing. */
  peerKeyPath: string;
  /** The 32-byte fleet secret: only nodes holding the same key can complete a connection. */
  fleetKey: Buffer;
  /** Multiaddrs to listen on, e.g. '/ip4/0.0.0.0/tcp/4001'. */
  listen: string[];
  /** Multiaddrs including '/p2p/<peer id>' to dial at start. */
  bootstrap: string[];
  /** Discover fleet peers on the local network by mDNS. */
  mdns: boolean;
  /** Override the muxer settings; only benchmarks need this. */
  muxer?: Partial<MuxerTuning>;
  /**
   * BENCHMARKS ONLY: false leaves the fleet key out of the Noise handshake, so that
   * scripts/bench-exchange.ts can measure what fleet membership costs. The daemon never sets it.
   */
  fleetPrologue?: boolean;
  /** Told once if libp2p-noise's internals changed and connections fall back to its own many-piece writes. */
  onNoiseFallback?: () => void;
  /** Told once if js-yamux's internals changed and streams fall back to a window update per data frame. */
  onYamuxFallback?: () => void;
}

export { fleetPrologue, generateFleetKey, fleetKeyFromFile } from './fleet-key.js';

/**
 * Load the node's identity key, or create an Ed25519 key there if the file does not exist, so the PeerId
 * (which other agents and bootstrap lists refer to) survives restarts.
 */
export async function loadOrCreatePeerKey(path: string): Promise<PrivateKey> {
  let bytes: Buffer | undefined;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(`cannot read peer key file ${path}: ${(err as Error).message}`);
    }
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes);
    } catch (err) {
      throw new Error(`peer key file ${path} does not hold a libp2p private key: ${(err as Error).message}`);
    }
  }
  const key = await generateKeyPair('Ed25519');
  await mkdir(dirname(path), { recursive: true });
  // Write beside the target and rename, so a crash never leaves a truncated identity behind.
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new Error(`cannot write peer key file ${path}: ${(err as Error).message}`);
  }
  return key;
}

/** A gossip message's author and sequence number: what StrictSign's message id is made of, without hashing. */
export function fastMessageId(msg: { from?: Uint8Array; seqno?: Uint8Array }): string {
  return `${Buffer.from(msg.from ?? new Uint8Array()).toString('base64')}/${Buffer.from(msg.seqno ?? new Uint8Array()).toString('hex')}`;
}

/** Start a libp2p node for the fleet: TCP + Noise (fleet prologue) + Yamux, identify, ping, gossipsub. */
export async function createP2PNode(opts: P2PNodeOptions): Promise<P2PNode> {
  const privateKey = await loadOrCreatePeerKey(opts.peerKeyPath);
  const tuning = { ...DEFAULT_MUXER_TUNING, ...opts.muxer };

  const peerDiscovery: NonNullable<Libp2pOptions['peerDiscovery']> = [];
  if (opts.bootstrap.length > 0) peerDiscovery.push(bootstrap({ list: opts.bootstrap }));
  if (opts.mdns) peerDiscovery.push(mdns());

  return createLibp2p({
    privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [
      noiseWithCoalescedWrites(opts.fleetPrologue === false ? {} : { prologueBytes: fleetPrologue(opts.fleetKey) }, opts.onNoiseFallback),
    ],
    streamMuxers: [
      yamuxWithLazyWindowUpdates({
        maxMessageSize: tuning.maxMessageSize,
        streamOptions: {
          initialStreamWindowSize: tuning.initialStreamWindowSize,
          maxStreamWindowSize: tuning.maxStreamWindowSize,
          // A paused reader still receives up to one full window from the remote; the read buffer must hold it,
          // or pausing (our read backpressure) would reset the stream.
          maxReadBufferLength: tuning.maxStreamWindowSize + tuning.maxMessageSize,
        },
      }, opts.onYamuxFallback),
    ],
    peerDiscovery,
    connectionManager: {
      // A bounded peer set per agent (the scheduler keeps the nearest plus some random peers); the margin
      // absorbs inbound connections from agents that chose us.
      maxConnections: 64,
      maxParallelDials: 50,
      dialTimeout: 10_000,
      // Handshakes not yet done: a Noise handshake on a LAN takes milliseconds, on a loaded host well under a
      // second, so 5 s is generous and an idle connect is closed after that. The global cap is above what one
      // address may hold (see pending-gate.ts), so a stranger at one address cannot fill it.
      inboundUpgradeTimeout: 5_000,
      maxIncomingPendingConnections: 32,
    },
    connectionGater: pendingHandshakeGate().gater,
    // libp2p's connection monitor pings every connection every 10 s, a fixed cost per peer even when idle, and
    // by default aborts one whose ping times out, which a link saturated by chunk uploads makes happen (measured
    // at 16 hosts: every connection of the publisher aborted mid-transfer). The swarm measures RTTs itself when
    // it needs them; dead peers are found by TCP, by yamux and by our request timeouts.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        // An agent alone in its fleet still publishes its announcements; that is not an error.
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // Announcements are rare (a publish, an install, a removal, a state refresh a minute). floodPublish (the
        // default) sends our own messages to every topic peer at once, so news never waits for a heartbeat; the
        // heartbeat only keeps the mesh and lazy gossip. Once a second is the default, for busy chains; a quiet
        // fleet does with one every 5 s (the message caches count heartbeats: 15 s kept, the last 10 s gossiped).
        heartbeatInterval: 5_000,
        mcacheLength: 3,
        mcacheGossip: 2,
        // Gossipsub verifies a message's signature before it looks the message up in its seen cache, so every
        // copy a host receives (flood publish plus mesh forwarding: about one per mesh peer) cost an ed25519
        // verification; in the fleet simulator that was 5.5 % of a receiving host's main thread. With a fast
        // id the later copies are dropped unverified. Only a message whose signature passed enters the fast-id
        // cache, so a forged copy cannot shadow the real one.
        fastMsgIdFn: fastMessageId,
        // IDONTWANT saves forwarding a large message to a peer that has it; announcements are small, and the
        // control message costs a peer as much as the message it would spare.
        idontwantMinDataSize: MAX_GOSSIP_BYTES + 1,
      }),
    },
  });
}
