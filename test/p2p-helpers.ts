/** Shared setup for the p2p tests: in-process libp2p nodes on 127.0.0.1 with temp dirs cleaned up. */
import '../src/agent/polyfill.js';

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { ExecutionContext } from 'ava';

import { createP2PNode, generateFleetKey, type P2PNode } from '../src/agent/swarm/p2p-node.js';

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
