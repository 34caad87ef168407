/** Shared setup for the p2p tests: in-process libp2p nodes on 127.0.0.1 with temp dirs cleaned up. */
import '../src/agent/polyfill.js';

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';
import type { Libp2p } from 'libp2p';

import { createStockLibp2pNode } from '../scripts/stock-node.js';
import { createP2PNode, generateFleetKey, type P2PNode } from '../src/agent/swarm/p2p-node.js';
import { ChunkStore } from '../src/store/chunk-store.js';

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

/** A stock libp2p node in the agent's fleet (scripts/stock-node.ts), stopped when the test ends. */
export async function stockLibp2pNode(t: ExecutionContext, fleetKey: Buffer): Promise<Libp2p> {
  const node = await createStockLibp2pNode(fleetKey);
  t.teardown(() => node.stop());
  return node;
}

/** Two connected nodes in one fleet, each with an empty chunk store of its own. */
export interface NodePair {
  server: P2PNode;
  client: P2PNode;
  serverStore: ChunkStore;
  clientStore: ChunkStore;
}

export async function connectedPair(t: ExecutionContext, name: string): Promise<NodePair> {
  const dir = await tempDir(t, `p2p-${name}`);
  const fleetKey = newFleetKey();
  const server = await startNode(t, dir, 'server', fleetKey);
  const client = await startNode(t, dir, 'client', fleetKey);
  await client.dial(server.getMultiaddrs()[0]!);
  const serverStore = new ChunkStore(join(dir, 'server-chunks'));
  const clientStore = new ChunkStore(join(dir, 'client-chunks'));
  await serverStore.init();
  await clientStore.init();
  return { server, client, serverStore, clientStore };
}
