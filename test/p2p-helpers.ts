/** Shared setup for the p2p tests: in-process libp2p nodes on 127.0.0.1 with temp dirs cleaned up. */
import '../src/agent/polyfill.js';

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { tcp } from '@libp2p/tcp';
import type { ExecutionContext } from 'ava';
import { createLibp2p, type Libp2p } from 'libp2p';

import { fleetPrologue } from '../src/agent/swarm/fleet-key.js';
import { createP2PNode, DEFAULT_MUXER_TUNING as tuning, generateFleetKey, type P2PNode } from '../src/agent/swarm/p2p-node.js';

export async function tempDir(t: ExecutionContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export function newFleetKey(): Buffer {
  return Buffer.from(generateFleetKey(), 'hex');
}

/** A started node listening on an ephemeral loopback port, stopped at teardown. */
export async function startNode(t: ExecutionContext, dir: string, name: string, fleetKey: Buffer): Promise<P2PNode> {
  const node = await createP2PNode({
    peerKeyPath: join(dir, `${name}.key`),
    fleetKey,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    mdns: false,
  });
  t.teardown(() => node.stop());
  return node;
}

/**
 * A libp2p node with stock libp2p-noise and js-yamux (none of the agent's changes to them), in the agent's fleet
 * and with its muxer tuning: js-yamux assumes the remote's initial window equals its own setting.
 */
export async function stockLibp2pNode(t: ExecutionContext, fleetKey: Buffer): Promise<Libp2p> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise({ prologueBytes: fleetPrologue(fleetKey) })],
    streamMuxers: [yamux({
      maxMessageSize: tuning.maxMessageSize,
      streamOptions: {
        initialStreamWindowSize: tuning.initialStreamWindowSize, maxStreamWindowSize: tuning.maxStreamWindowSize,
        maxReadBufferLength: tuning.maxStreamWindowSize + tuning.maxMessageSize,
      },
    })],
  });
  t.teardown(() => node.stop());
  return node;
}
