// The BitTorrent baseline: what an operator would reach for instead of joblet-agent. Over the same shaped
// links as the agents: opentracker and a seeding aria2c on host 0, one aria2c on every other host, each
// unpacking with `tar -xzf` as soon as its download completes and then seeding on (as BitTorrent clients
// do). The torrent is private and aria2c runs with DHT, local peer discovery and peer exchange off, so the
// tracker on host 0 is the only way the peers find each other; everything listens inside the namespaces.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Resources } from './cleanup.js';
import { run, sleep, stopGroup } from './sh.js';
import type { Host } from './topology.js';

export const TRACKER_PORT = 6969;
export const PEER_PORT = 6881;
const TOOLS = [{ bin: 'aria2c', pkg: 'aria2' }, { bin: 'mktorrent', pkg: 'mktorrent' }, { bin: 'opentracker', pkg: 'opentracker' }];

/** Install the Debian packages of the baseline when a binary is missing (the simulator runs as root). */
export async function ensureBitTorrentTools(log: (line: string) => void): Promise<void> {
  const missing: string[] = [];
  for (const t of TOOLS) if (!(await onPath(t.bin))) missing.push(t.pkg);
  if (missing.length === 0) return;
  log(`installing ${missing.join(', ')} for the BitTorrent baseline`);
  const install = () => run('apt-get', ['install', '-y', '-qq', ...missing], { timeoutMs: 600_000 });
  await install().catch(async () => {
    // A machine whose package lists were never fetched: fetch them once, then try again.
    await run('apt-get', ['update', '-qq'], { timeoutMs: 600_000 });
    await install();
  });
}

async function onPath(bin: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${bin}`]).then(() => true, () => false);
}

/** End offset of the bencoded value that starts at `pos`; throws on anything malformed or truncated. */
function skipValue(buf: Buffer, pos: number): number {
  const c = buf[pos];
  if (c === undefined) throw new Error(`bencode: truncated at byte ${pos}`);
  if (c === 0x69) { // i<digits>e
    const end = buf.indexOf(0x65, pos);
    if (end < 0) throw new Error(`bencode: unterminated integer at byte ${pos}`);
    return end + 1;
  }
  if (c === 0x6c || c === 0x64) { // l...e, d...e
    let p = pos + 1;
    while (buf[p] !== 0x65) {
      if (p >= buf.length) throw new Error(`bencode: unterminated ${c === 0x6c ? 'list' : 'dictionary'} at byte ${pos}`);
      p = skipValue(buf, p);
    }
    return p + 1;
  }
  if (c >= 0x30 && c <= 0x39) { // <length>:<bytes>
    const colon = buf.indexOf(0x3a, pos);
    const len = colon < 0 ? NaN : Number(buf.toString('latin1', pos, colon));
    if (!Number.isSafeInteger(len) || colon + 1 + len > buf.length) throw new Error(`bencode: bad string length at byte ${pos}`);
    return colon + 1 + len;
  }
  throw new Error(`bencode: unexpected byte 0x${c.toString(16)} at byte ${pos}`);
}

/**
 * The info hash of a .torrent: SHA-1 of the bencoded `info` dictionary exactly as it appears in the file.
 * This is what opentracker's whitelist lists, one lowercase hex hash per line.
 */
export function infoHash(torrent: Buffer): string {
  if (torrent[0] !== 0x64) throw new Error('not a torrent: the file is not a bencoded dictionary');
  let pos = 1;
  while (torrent[pos] !== 0x65) {
    if (pos >= torrent.length) throw new Error('bencode: unterminated top-level dictionary');
    if (!(torrent[pos]! >= 0x30 && torrent[pos]! <= 0x39)) throw new Error(`bencode: a dictionary key must be a string (byte ${pos})`);
    const keyEnd = skipValue(torrent, pos);
    const key = torrent.toString('latin1', torrent.indexOf(0x3a, pos) + 1, keyEnd);
    const valueEnd = skipValue(torrent, keyEnd);
    if (key === 'info') {
      if (torrent[keyEnd] !== 0x64) throw new Error('not a torrent: "info" is not a dictionary');
      return createHash('sha1').update(torrent.subarray(keyEnd, valueEnd)).digest('hex');
    }
    pos = valueEnd;
  }
  throw new Error('not a torrent: no "info" dictionary');
}

/** Start a long-running command inside a namespace as its own process group, output to `logFile`. */
async function spawnIn(ns: string, argv: string[], logFile: string, res: Resources): Promise<number> {
  const out = await fs.open(logFile, 'a');
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { detached: true, stdio: ['ignore', out.fd, out.fd] });
  await out.close();
  if (child.pid === undefined) throw new Error(`could not start ${argv[0]} in ${ns}`);
  child.unref();
  res.pids.add(child.pid);
  return child.pid;
}

async function stop(pids: number[], res: Resources): Promise<void> {
  // aria2c tells the tracker it stops on SIGTERM; a few seconds of grace are enough on these links.
  await Promise.all(pids.map(async (pid) => { if (await stopGroup(pid, 5000)) res.pids.delete(pid); }));
}

/** aria2c for a private torrent: only the tracker finds peers, nothing is written besides the file. */
const ARIA2_COMMON = [
  '--enable-dht=false', '--enable-dht6=false', '--bt-enable-lpd=false', '--enable-peer-exchange=false',
  '--disable-ipv6=true', `--listen-port=${PEER_PORT}`, '--seed-ratio=0.0', '--file-allocation=none',
  '--bt-save-metadata=false', '--auto-save-interval=0', '--summary-interval=0', '--console-log-level=notice',
];

export interface BitTorrentRun { finishedMs: number[]; dirs: string[]; infoHash: string; torrentBytes: number }

/**
 * Run the baseline: make the torrent (not timed, as the agents' publish is not), start the tracker and the
 * seeder on `seed`, wait until the tracker lists the seeder, then start every client at once. The clock
 * runs from that start to each client's end of `tar -xzf`. All processes are stopped before returning.
 */
export async function bitTorrent(seed: Host, clients: Host[], pkgPath: string, workDir: string, res: Resources,
  timeoutMs: number, log: (line: string) => void): Promise<BitTorrentRun> {
  await ensureBitTorrentTools(log);
  const root = path.join(workDir, 'bt');
  const trackerDir = path.join(root, 'tracker');
  const seedDir = path.join(root, 'seed');
  await fs.mkdir(trackerDir, { recursive: true });
  await fs.mkdir(seedDir, { recursive: true });
  const name = path.basename(pkgPath);
  await fs.link(pkgPath, path.join(seedDir, name)).catch(() => fs.copyFile(pkgPath, path.join(seedDir, name)));
  const announce = `http://${seed.addr}:${TRACKER_PORT}/announce`;
  const torrent = path.join(root, 'pkg.torrent');
  await run('mktorrent', ['-p', '-t', '1', '-a', announce, '-o', torrent, path.join(seedDir, name)], { timeoutMs: 600_000 });
  const torrentBuf = await fs.readFile(torrent);
  const hash = infoHash(torrentBuf);

  // opentracker chroots into its root dir and drops to nobody: the whitelist path is inside the chroot,
  // and the dirs above it (mkdtemp makes them 0700) are never looked at after the chroot.
  await fs.writeFile(path.join(trackerDir, 'whitelist.txt'), `${hash}\n`);
  await fs.writeFile(path.join(trackerDir, 'opentracker.conf'),
    `listen.tcp_udp ${seed.addr}:${TRACKER_PORT}\naccess.whitelist /whitelist.txt\ntracker.rootdir ${trackerDir}\ntracker.user nobody\n`);
  const pids: number[] = [];
  try {
    pids.push(await spawnIn(seed.ns, ['opentracker', '-f', path.join(trackerDir, 'opentracker.conf')], path.join(root, 'tracker.log'), res));
    pids.push(await spawnIn(seed.ns, ['aria2c', ...ARIA2_COMMON, `--dir=${seedDir}`, '--bt-seed-unverified=true', torrent],
      path.join(root, 'seed.log'), res));
    await waitForSeeder(seed, hash, 30_000, root);
    log(`BitTorrent: tracker and seeder up on host 0 (info hash ${hash}, ${torrentBuf.length} bytes of .torrent)`);

    const dirs: string[] = [];
    const hooks: string[] = [];
    for (const h of clients) {
      const dir = path.join(root, `h${h.index}`);
      await fs.mkdir(path.join(dir, 'tree'), { recursive: true });
      // aria2c runs this once the last piece is verified, then goes on seeding: unpack, then stamp the time.
      const hook = path.join(dir, 'on-complete.sh');
      await fs.writeFile(hook, `#!/bin/sh\ntar -xzf '${dir}/${name}' -C '${dir}/tree' && date +%s%N > '${dir}/done.tmp' && mv '${dir}/done.tmp' '${dir}/done'\n`, { mode: 0o755 });
      dirs.push(dir);
      hooks.push(hook);
    }
    const start = Date.now();
    for (const [i, h] of clients.entries()) {
      pids.push(await spawnIn(h.ns, ['aria2c', ...ARIA2_COMMON, `--dir=${dirs[i]}`, `--on-bt-download-complete=${hooks[i]}`, torrent],
        path.join(dirs[i], 'aria2c.log'), res));
    }
    const finishedMs = await waitForDone(dirs, start, timeoutMs, clients);
    return { finishedMs, dirs: dirs.map((d) => path.join(d, 'tree')), infoHash: hash, torrentBytes: torrentBuf.length };
  } finally {
    await stop(pids.slice(2), res); // clients first, while the tracker still answers their last announce
    await stop(pids.slice(0, 2).reverse(), res);
  }
}

/** Scrape the tracker from inside the seed's namespace until it counts one complete peer. */
async function waitForSeeder(seed: Host, hash: string, timeoutMs: number, root: string): Promise<void> {
  const escaped = hash.replace(/../g, '%$&');
  const url = `http://${seed.addr}:${TRACKER_PORT}/scrape?info_hash=${escaped}`;
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const out = await run('ip', ['netns', 'exec', seed.ns, 'curl', '-sS', '--max-time', '2', url]).catch((e: Error) => ({ stdout: e.message }));
    last = out.stdout;
    if (/8:completei([1-9]\d*)e/.test(last)) return;
    if (Date.now() > deadline) {
      const seedLog = await fs.readFile(path.join(root, 'seed.log'), 'utf8').catch(() => '');
      throw new Error(`BitTorrent: the tracker on ${seed.ns} did not list the seeder within ${timeoutMs / 1000} s (scrape: ${JSON.stringify(last.slice(0, 200))}); seeder log:\n${seedLog.split('\n').slice(-10).join('\n')}`);
    }
    await sleep(200);
  }
}

/** Poll each client's done stamp (written by its hook after tar); ms from `start`, in client order. */
async function waitForDone(dirs: string[], start: number, timeoutMs: number, clients: Host[]): Promise<number[]> {
  const out: (number | null)[] = dirs.map(() => null);
  const deadline = start + timeoutMs;
  while (out.some((x) => x === null)) {
    await Promise.all(dirs.map(async (d, i) => {
      if (out[i] !== null) return;
      const stamp = await fs.readFile(path.join(d, 'done'), 'utf8').catch(() => null);
      if (stamp !== null) out[i] = Number(BigInt(stamp.trim()) / 1_000_000n) - start;
    }));
    if (out.every((x) => x !== null)) break;
    if (Date.now() > deadline) {
      const missing = clients.filter((_, i) => out[i] === null).map((h) => h.index);
      const logText = await fs.readFile(path.join(dirs[out.indexOf(null)], 'aria2c.log'), 'utf8').catch(() => '');
      throw new Error(`BitTorrent: hosts ${missing.join(', ')} had not finished within ${timeoutMs / 1000} s; aria2c log of host ${missing[0]}:\n${logText.split('\n').slice(-10).join('\n')}`);
    }
    await sleep(100);
  }
  return out as number[];
}
