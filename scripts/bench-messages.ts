/**
 * Benchmark: the CPU cost of one small message between two libp2p nodes on loopback (TCP + Noise + Yamux), for the
 * agent's node (src/agent/swarm/p2p-node.ts) against stock libp2p-noise and js-yamux with the same muxer tuning,
 * measured in the same run, rounds interleaved.
 *
 *   node dist/scripts/bench-messages.js [--messages 20000] [--rounds 3]
 *
 * A message is what a downloading host pushes for every chunk it stores to every peer subscribed to it: a
 * `have1` frame (about 100 bytes) on its own stream, each sent in a tick of its own as in a real fleet. A host
 * of a 16-host fleet sends and receives about 1,400 of them per 100 chunks, plus gossip and chunk requests,
 * next to some 270 data frames of 256 KiB: small messages are most of its messages.
 *
 * Both nodes live in this process, so the CPU time printed per message is the sender's and the receiver's
 * together (process.cpuUsage, user and system).
 */
import '../src/agent/polyfill.js';

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Libp2p } from 'libp2p';

import { createP2PNode } from '../src/agent/swarm/p2p-node.js';
import { serveHave, subscribeHave } from '../src/protocol/have.js';
import { createStockLibp2pNode } from './stock-node.js';

const FLEET_KEY = Buffer.alloc(32, 7);
const MANIFEST = `sha256:${'ab'.repeat(32)}`;

function option(flag: string, fallback: number): number {
  const at = process.argv.indexOf(flag);
  if (at < 0) return fallback;
  const n = Number(process.argv[at + 1]);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag} needs a positive whole number, got ${process.argv[at + 1]}`);
  return n;
}

async function agentNode(dir: string, name: string): Promise<Libp2p> {
  let fellBack = '';
  const node = await createP2PNode({
    peerKeyPath: join(dir, `${name}.key`), fleetKey: FLEET_KEY, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false,
    onNoiseFallback: () => { fellBack = 'noise'; }, onYamuxFallback: () => { fellBack = 'yamux'; },
  });
  if (fellBack) throw new Error(`the agent's ${fellBack} changes were not installed`);
  return node;
}

/** Send `count` have1 messages from `a` to `b`, one per tick; CPU microseconds per message, both ends together. */
async function measure(a: Libp2p, b: Libp2p, count: number): Promise<{ userUs: number; systemUs: number }> {
  let push: ((index: number) => void) | undefined;
  await serveHave(a, { subscribe: async (_m, onIndex) => { push = onIndex; return { bits: '', unsubscribe() {} }; } });
  await b.dial(a.getMultiaddrs()[0]!);
  let got = 0;
  let allIn!: () => void;
  const done = new Promise<void>((resolve) => (allIn = resolve));
  const sub = await subscribeHave(b, a.peerId, MANIFEST, () => {}, () => { if (++got === count) allIn(); });
  for (let i = 0; i < 50 && push === undefined; i++) await new Promise((r) => setTimeout(r, 20));
  if (push === undefined) throw new Error('the have subscription did not reach the serving node');
  const before = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    push(i % 4096);
    await new Promise((r) => setImmediate(r));
  }
  await done;
  const used = process.cpuUsage(before);
  sub.close();
  return { userUs: used.user / count, systemUs: used.system / count };
}

async function main(): Promise<void> {
  const count = option('--messages', 20_000);
  const rounds = option('--rounds', 3);
  const dir = await mkdtemp(join(tmpdir(), 'bench-messages-'));
  const results: Record<'stock' | 'agent', number[]> = { stock: [], agent: [] };
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const kind of ['stock', 'agent'] as const) {
        const a = kind === 'stock' ? await createStockLibp2pNode(FLEET_KEY) : await agentNode(dir, `a${round}`);
        const b = kind === 'stock' ? await createStockLibp2pNode(FLEET_KEY) : await agentNode(dir, `b${round}`);
        try {
          const r = await measure(a, b, count);
          results[kind].push(r.userUs + r.systemUs);
          console.log(`round ${round}  ${kind.padEnd(5)}  ${count} messages: ${(r.userUs + r.systemUs).toFixed(1)} us CPU each (user ${r.userUs.toFixed(1)}, system ${r.systemUs.toFixed(1)})`);
        } finally {
          await a.stop();
          await b.stop();
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const s = median(results.stock);
  const g = median(results.agent);
  console.log(`median CPU per message: stock libp2p ${s.toFixed(1)} us, agent ${g.toFixed(1)} us; agent / stock = ${(g / s).toFixed(2)}`);
}

main().catch((err: unknown) => {
  console.error(`bench-messages: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
