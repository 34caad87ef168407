// Hostile input for tests: hand-crafted archives (what GNU tar would never make but an attacker or a broken tool
// could), and hostile fleet peers.
import fs from 'node:fs/promises';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { join } from 'node:path';
import type { PeerId, Stream } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { createP2PNode, type P2PNode } from '../../src/agent/swarm/p2p-node.js';
import { CHUNK_PROTOCOL } from '../../src/protocol/chunk-exchange.js';
import { encodeFrameHead } from '../../src/protocol/frames.js';

export type EvilEntry = Partial<tar.Header> & { name: string; body?: string };

const GOOD_YML = 'name: evil\nversion: "1.0"\n';

/** Write a tar (gzipped when the name ends in gz) holding the given entries, in order. */
export async function writeTar(file: string, entries: EvilEntry[], gzip = file.endsWith('gz')): Promise<void> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => { chunks.push(c as Buffer); });
  const ended = new Promise<void>((r) => pack.on('end', () => r()));
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      pack.entry({ ...header, mode: header.mode ?? 0o644, mtime: header.mtime ?? new Date(0) } as tar.Header, body ?? '', (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await ended;
  const raw = Buffer.concat(chunks);
  await fs.writeFile(file, gzip ? zlib.gzipSync(raw) : raw);
}

export function yml(text = GOOD_YML): EvilEntry {
  return { name: 'runtime.yml', body: text };
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile peers: libp2p nodes holding the fleet key that break the protocols on purpose.


export interface EvilPeer {
  node: P2PNode;
  /**
   * Open `streams` chunk streams to `target` and pipeline a `get` for each id on every one of them, then never
   * read an answer: the streams are paused, so the muxer grants the server no window beyond the first.
   */
  requestAndNeverRead(target: PeerId, ids: string[], streams?: number): Promise<Stream[]>;
  stop(): Promise<void>;
}

/** A fleet member (right fleet key, its own identity) whose chunk client never reads what it asked for. */
export async function startEvilPeer(dir: string, fleetKey: Buffer, dialTo?: Multiaddr): Promise<EvilPeer> {
  const node = await createP2PNode({
    peerKeyPath: join(dir, `evil-${Math.random().toString(36).slice(2)}.key`),
    fleetKey,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [],
    mdns: false,
    // The same muxer settings as the agents: js-yamux assumes both ends start from the same stream window.
  });
  if (dialTo !== undefined) await node.dial(dialTo);
  return {
    node,
    requestAndNeverRead: async (target, ids, streams = 1) => {
      const out: Stream[] = [];
      for (let s = 0; s < streams; s++) {
        const stream = await node.dialProtocol(target, CHUNK_PROTOCOL);
        stream.pause();
        ids.forEach((id, i) => stream.send(encodeFrameHead({ t: 'get', rid: s * 1000 + i + 1, id }, 0)));
        out.push(stream);
      }
      return out;
    },
    stop: async () => { await node.stop(); },
  };
}
