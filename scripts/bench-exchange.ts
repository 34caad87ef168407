/**
 * Benchmark: chunk exchange over libp2p (TCP + Noise + Yamux) on loopback, against a plain node:net TCP copy of
 * the same bytes, measured in the same run.
 *
 *   node dist/scripts/bench-exchange.js [--mib 256] [--chunk-kib 1024] [--in-flight 4] [--repeat 3] [--muxer MSG:INIT:MAX]...
 *
 * --muxer adds a run with other yamux settings, in KiB: frame size, initial and maximum stream window.
 *
 * The sender and the receiver are separate child processes, so the receiver's RSS and CPU time are its own.
 * Chunks are derived from one random block (its first 8 bytes replaced by the chunk index), so the sender holds
 * one block (expanded from a seed) instead of the whole set and every chunk still has its own id. The receiver keeps nothing: it checks
 * each chunk's length and drops it, so both runs measure transport only (sha256 verification costs the same on
 * both paths, about 0.5 CPU s/GB here).
 */
import '../src/agent/polyfill.js';

import { spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { multiaddr } from '@multiformats/multiaddr';

import { createP2PNode, DEFAULT_MUXER_TUNING, type MuxerTuning } from '../src/agent/swarm/p2p-node.js';
import { ChunkClient, registerChunkServer, type ChunkSource, type StoredChunk } from '../src/protocol/chunk-exchange.js';

interface Settings {
  mib: number;
  chunkBytes: number;
  inFlight: number;
  repeat: number;
}

interface ReceiverResult {
  bytes: number;
  seconds: number;
  peakRssMiB: number;
  cpuSeconds: number;
}

const FLEET_KEY = Buffer.alloc(32, 7);
/** libp2p's stock yamux settings, to show what the tuning in p2p-node.ts buys. */
const STOCK_MUXER: MuxerTuning = {
  maxMessageSize: 64 * 1024,
  initialStreamWindowSize: 256 * 1024,
  maxStreamWindowSize: 16 * 1024 * 1024,
};

function parseSettings(argv: string[]): Settings {
  const value = (flag: string, fallback: number): number => {
    const at = argv.indexOf(flag);
    if (at < 0) return fallback;
    const n = Number(argv[at + 1]);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number`);
    return n;
  };
  return {
    mib: value('--mib', 256),
    chunkBytes: value('--chunk-kib', 1024) * 1024,
    inFlight: value('--in-flight', 4),
    repeat: value('--repeat', 3),
  };
}

/** A pseudo-random block from a 32-byte seed (AES-CTR keystream), identical in every process. */
function blockFromSeed(seedHex: string, bytes: number): Buffer {
  const cipher = createCipheriv('aes-256-ctr', Buffer.from(seedHex, 'hex'), Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(bytes)), cipher.final()]);
}

/** Chunk i of the synthetic set. */
function makeChunk(block: Buffer, index: number): Buffer {
  const chunk = Buffer.from(block);
  chunk.writeBigUInt64BE(BigInt(index), 0);
  return chunk;
}

function chunkId(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Samples RSS while `work` runs; returns its result with the peak RSS and CPU time of this process. */
async function measured(work: () => Promise<number>): Promise<ReceiverResult> {
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const bytes = await work();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { bytes, seconds, peakRssMiB: peak / 2 ** 20, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

// ---- child roles --------------------------------------------------------------------------------------------

async function senderLibp2p(seedHex: string, s: Settings, muxer: MuxerTuning, fleetPrologue: boolean): Promise<void> {
  const block = blockFromSeed(seedHex, s.chunkBytes);
  const count = Math.ceil((s.mib * 2 ** 20) / s.chunkBytes);
  const byId = new Map<string, number>();
  for (let i = 0; i < count; i++) byId.set(chunkId(makeChunk(block, i)), i);
  const source: ChunkSource = {
    getStored: async (id): Promise<StoredChunk> => {
      const i = byId.get(id);
      if (i === undefined) throw new Error(`no chunk ${id}`);
      return { codec: 'raw', data: makeChunk(block, i), size: s.chunkBytes };
    },
  };
  const dir = await mkdtemp(join(tmpdir(), 'bench-exchange-'));
  const node = await createP2PNode({ peerKeyPath: join(dir, 'peer.key'), fleetKey: FLEET_KEY, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false, muxer, fleetPrologue });
  await registerChunkServer(node, source, { maxConcurrentUploads: 64 });
  process.stdout.write(`${node.getMultiaddrs()[0]!.toString()}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => {
    void (async () => {
      await node.stop();
      await rm(dir, { recursive: true, force: true });
      process.exit(0);
    })();
  });
}

async function receiverLibp2p(addr: string, seedHex: string, s: Settings, muxer: MuxerTuning, fleetPrologue: boolean): Promise<void> {
  const block = blockFromSeed(seedHex, s.chunkBytes);
  const count = Math.ceil((s.mib * 2 ** 20) / s.chunkBytes);
  const ids = Array.from({ length: count }, (_, i) => chunkId(makeChunk(block, i)));
  const dir = await mkdtemp(join(tmpdir(), 'bench-exchange-'));
  const node = await createP2PNode({ peerKeyPath: join(dir, 'peer.key'), fleetKey: FLEET_KEY, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], mdns: false, muxer, fleetPrologue });
  const connection = await node.dial(multiaddr(addr));
  const client = new ChunkClient(node, connection.remotePeer, { maxInFlight: s.inFlight });
  // Warm-up chunk: opens the stream so the timing covers steady-state transfer only, as in the TCP run.
  await client.fetch(ids[0]!);
  const result = await measured(async () => {
    let bytes = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < ids.length) {
        const chunk = await client.fetch(ids[next++]!);
        if (chunk.data.length !== s.chunkBytes) throw new Error(`chunk of ${chunk.data.length} bytes`);
        bytes += chunk.data.length;
      }
    };
    await Promise.all(Array.from({ length: s.inFlight }, worker));
    return bytes;
  });
  await client.close();
  await node.stop();
  await rm(dir, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function senderTcp(seedHex: string, s: Settings): Promise<void> {
  const block = blockFromSeed(seedHex, s.chunkBytes);
  const count = Math.ceil((s.mib * 2 ** 20) / s.chunkBytes);
  const server = createServer((socket) => {
    void (async () => {
      for (let i = 0; i < count; i++) {
        if (!socket.write(makeChunk(block, i))) await new Promise((resolve) => socket.once('drain', resolve));
      }
      socket.end();
    })();
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

async function receiverTcp(port: string): Promise<void> {
  const result = await measured(
    () =>
      new Promise<number>((resolve, reject) => {
        let bytes = 0;
        const socket = connect(Number(port), '127.0.0.1');
        socket.on('data', (buf: Buffer) => (bytes += buf.length));
        socket.on('end', () => resolve(bytes));
        socket.on('error', reject);
      }),
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// ---- orchestration ------------------------------------------------------------------------------------------

const self = fileURLToPath(import.meta.url);

/** Run this script in a role; resolve with its first stdout line and a handle to end it. */
function child(args: string[]): Promise<{ line: string; done: Promise<string[]>; end: () => void }> {
  const proc = spawn(process.execPath, [self, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const rl = createInterface({ input: proc.stdout });
  const done = new Promise<string[]>((resolve, reject) => {
    proc.on('exit', (code) => (code === 0 ? resolve(lines) : reject(new Error(`${args[0]} exited with ${code}`))));
  });
  return new Promise((resolve, reject) => {
    rl.on('line', (line) => {
      lines.push(line);
      if (lines.length === 1) resolve({ line, done, end: () => proc.stdin.end() });
    });
    done.catch(reject);
  });
}

/** The run with the median rate: the machine may be shared, single runs are noisy. */
function median(results: ReceiverResult[]): ReceiverResult {
  const sorted = [...results].sort((a, b) => a.bytes / a.seconds - b.bytes / b.seconds);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function runPair(sender: string[], receiver: (first: string) => string[]): Promise<ReceiverResult> {
  const s = await child(sender);
  try {
    const r = await child(receiver(s.line));
    await r.done;
    return JSON.parse(r.line) as ReceiverResult;
  } finally {
    s.end();
    await s.done.catch(() => undefined);
  }
}

function show(label: string, r: ReceiverResult): number {
  const mbps = r.bytes / r.seconds / 1e6;
  const cpuPerGB = r.cpuSeconds / (r.bytes / 1e9);
  console.log(
    `${label.padEnd(34)} ${mbps.toFixed(0).padStart(6)} MB/s  ${r.seconds.toFixed(2)} s  receiver peak RSS ${r.peakRssMiB.toFixed(0)} MiB  receiver CPU ${cpuPerGB.toFixed(2)} s/GB`,
  );
  return mbps;
}

const NO_FLEET_KEY = 'tuned-without-fleet-key';

async function main(): Promise<void> {
  const [role, ...rest] = process.argv.slice(2);
  const s = parseSettings(process.argv);
  const muxerOf = (spec: string | undefined): MuxerTuning => {
    if (spec === 'stock') return STOCK_MUXER;
    if (spec === undefined || spec === 'tuned' || spec === NO_FLEET_KEY) return DEFAULT_MUXER_TUNING;
    const [msg, init, max] = spec.split(':').map((kib) => Number(kib) * 1024);
    return { maxMessageSize: msg!, initialStreamWindowSize: init!, maxStreamWindowSize: max! };
  };
  switch (role) {
    case 'send-libp2p':
      return senderLibp2p(rest[0]!, s, muxerOf(rest[1]), rest[1] !== NO_FLEET_KEY);
    case 'recv-libp2p':
      return receiverLibp2p(rest[0]!, rest[1]!, s, muxerOf(rest[2]), rest[2] !== NO_FLEET_KEY);
    case 'send-tcp':
      return senderTcp(rest[0]!, s);
    case 'recv-tcp':
      return receiverTcp(rest[0]!);
  }

  const seed = randomBytes(32).toString('hex');
  const flags = ['--mib', String(s.mib), '--chunk-kib', String(s.chunkBytes / 1024), '--in-flight', String(s.inFlight)];
  console.log(`${s.mib} MiB in ${s.chunkBytes / 1024} KiB chunks, ${s.inFlight} in flight, loopback, median of ${s.repeat} rounds`);
  const runs: Array<{ label: string; run: () => Promise<ReceiverResult> }> = [
    { label: 'plain TCP copy (node:net)', run: () => runPair(['send-tcp', seed, ...flags], (port) => ['recv-tcp', port, ...flags]) },
  ];
  // Extra muxer settings to compare, as --muxer MSG_KIB:INITIAL_WINDOW_KIB:MAX_WINDOW_KIB (repeatable).
  // NO_FLEET_KEY: the tuned settings without the fleet key in the Noise handshake, to measure membership's cost.
  const specs = ['tuned', NO_FLEET_KEY, 'stock'];
  for (let at = process.argv.indexOf('--muxer'); at >= 0; at = process.argv.indexOf('--muxer', at + 1)) specs.push(process.argv[at + 1]!);
  for (const spec of specs) {
    runs.push({
      label: `chunk exchange, ${spec} yamux`,
      run: () => runPair(['send-libp2p', seed, spec, ...flags], (addr) => ['recv-libp2p', addr, seed, spec, ...flags]),
    });
  }
  // Rounds interleave the variants, so load from other work on a shared machine hits them all alike.
  const results = runs.map(() => [] as ReceiverResult[]);
  for (let round = 0; round < s.repeat; round++) {
    for (const [i, { run }] of runs.entries()) results[i]!.push(await run());
  }
  const rates = runs.map(({ label }, i) => show(label, median(results[i]!)));
  for (let i = 1; i < runs.length; i++) {
    console.log(`ratio ${runs[i]!.label} / TCP copy: ${(rates[i]! / rates[0]!).toFixed(2)}`);
  }
}

await main();
