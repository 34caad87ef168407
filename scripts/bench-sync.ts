/**
 * What making an install power-loss safe costs (issue 9 item 8): the same trees extracted with TreeWriter
 * into the runtimes filesystem, then (a) nothing, (b) one syncfs of the filesystem (`sync -f`, what
 * RuntimesDir.commit does), (c) fsync of every file and directory, 8 at a time in the thread pool.
 * Rounds interleave the schemes so machine load hits them alike; each round starts after a global `sync`
 * so no scheme pays for another's dirty pages. Wall and CPU (this process plus waited-for children) of
 * extract + sync, medians over the rounds.
 *
 *   node dist/scripts/bench-sync.js [--dir DIR] [--rounds N] [--small-files N] [--large-mib N]
 */
import '../src/agent/polyfill.js';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { TreeWriter } from '../src/runtime/extract.js';
import { syncTreeEachFile, syncTreeFilesystem } from '../src/runtime/durable.js';
import type { TreeEntry } from '../src/runtime/tree-entry.js';
import { checkTree, hasDrift } from '../src/agent/install/verify-tree.js';
import { encodeEntry } from '../src/runtime/tree-entry.js';
import { DEFAULT_LIMITS } from '../src/runtime/types.js';

const { values } = parseArgs({
  options: { dir: { type: 'string' }, rounds: { type: 'string' }, 'small-files': { type: 'string' }, 'large-mib': { type: 'string' } },
});
const base = path.resolve(values.dir ?? os.tmpdir());
const rounds = Number(values.rounds ?? 5);
const smallFiles = Number(values['small-files'] ?? 3000);
const largeMiB = Number(values['large-mib'] ?? 128);

type Item = { entry: TreeEntry; data?: Buffer };
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function smallTree(n: number): Item[] {
  const items: Item[] = [{ entry: { type: 'file', path: 'runtime.yml', mode: 0o644, mtime: 1, size: 0, sha256: '' }, data: Buffer.alloc(0) }];
  items[0]!.entry = { ...(items[0]!.entry as Extract<TreeEntry, { type: 'file' }>), sha256: sha(Buffer.alloc(0)) };
  for (let d = 0; d < Math.ceil(n / 50); d++) items.push({ entry: { type: 'directory', path: `lib/d${d}`, mode: 0o755, mtime: 1 } });
  for (let i = 0; i < n; i++) {
    const data = randomBytes(512 + ((i * 7919) % 7680)); // 0.5 .. 8 KiB, like a Python stdlib
    items.push({ entry: { type: 'file', path: `lib/d${Math.floor(i / 50)}/f${i}.py`, mode: 0o644, mtime: 1, size: data.length, sha256: sha(data) }, data });
  }
  return items;
}

function largeTree(mib: number): Item[] {
  const items: Item[] = [];
  const per = 32;
  for (let i = 0; i < Math.ceil(mib / per); i++) {
    const data = randomBytes(per << 20);
    items.push({ entry: { type: 'file', path: `lib${i}.so`, mode: 0o755, mtime: 1, size: data.length, sha256: sha(data) }, data });
  }
  return items;
}

async function extract(dir: string, items: Item[]): Promise<void> {
  const w = new TreeWriter(dir, { limits: { ...DEFAULT_LIMITS, maxUnpackedBytes: 2 ** 40 } });
  for (const { entry, data } of items) {
    await w.begin(entry);
    if (data) for (let o = 0; o < data.length; o += 1 << 20) await w.write(data.subarray(o, o + (1 << 20)));
    await w.end();
  }
  await w.finish();
}

/** CPU seconds of this process and of its waited-for children (sync -f runs as a child). */
function cpuSeconds(): number {
  const own = process.cpuUsage();
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  const children = (Number(fields[13]) + Number(fields[14])) / 100; // cutime, cstime in ticks
  return (own.user + own.system) / 1e6 + children;
}

const SCHEMES: Record<string, (dir: string) => Promise<void>> = {
  'no sync': async () => {},
  'syncfs (sync -f)': syncTreeFilesystem,
  'fsync each file': (dir) => syncTreeEachFile(dir, 8),
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const work = await fs.mkdtemp(path.join(base, 'bench-sync-'));
  const cleanup = () => fs.rm(work, { recursive: true, force: true });
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const fsType = execFileSync('stat', ['-f', '-c', '%T', work], { encoding: 'utf8' }).trim();
    console.log(`filesystem of ${work}: ${fsType}; ${os.cpus().length} cores; load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; ${rounds} rounds`);
    for (const [label, items] of [[`${smallFiles} small files`, smallTree(smallFiles)], [`${largeMiB} MiB in ${Math.ceil(largeMiB / 32)} files`, largeTree(largeMiB)]] as const) {
      const results = new Map<string, { wall: number[]; cpu: number[]; sync: number[] }>();
      const checksSizes: number[] = [];
      const checksFull: number[] = [];
      for (let r = 0; r < rounds; r++) {
        for (const [name, scheme] of Object.entries(SCHEMES)) {
          const dir = path.join(work, `t-${r}-${name.replace(/\W+/g, '')}`);
          await fs.mkdir(dir);
          execFileSync('sync');
          const cpu0 = cpuSeconds();
          const t0 = performance.now();
          await extract(dir, items);
          const t1 = performance.now();
          await scheme(dir);
          const t2 = performance.now();
          const res = results.get(name) ?? { wall: [], cpu: [], sync: [] };
          res.wall.push((t2 - t0) / 1000);
          res.sync.push((t2 - t1) / 1000);
          res.cpu.push(cpuSeconds() - cpu0);
          results.set(name, res);
          if (name === 'no sync') {
            // The start-time check after an unclean stop (types and sizes), and the full one of an adoption.
            const list = Buffer.from(items.map((i) => encodeEntry(i.entry) + '\n').join(''));
            for (const full of [false, true]) {
              const c0 = performance.now();
              const check = await checkTree(dir, list, { full });
              if (hasDrift(check)) throw new Error(`check (${full ? 'full' : 'sizes and mtimes'}) found drift: ${JSON.stringify(check).slice(0, 300)}`);
              (full ? checksFull : checksSizes).push((performance.now() - c0) / 1000);
            }
          }
          await fs.rm(dir, { recursive: true, force: true });
        }
      }
      console.log(`\n${label}: extract + sync, median of ${rounds}; check at start: sizes ${median(checksSizes).toFixed(3)} s, full (sha256) ${median(checksFull).toFixed(3)} s`);
      const baseWall = median(results.get('no sync')!.wall);
      const baseCpu = median(results.get('no sync')!.cpu);
      for (const [name, res] of results) {
        const w = median(res.wall);
        const c = median(res.cpu);
        console.log(`  ${name.padEnd(18)} wall ${w.toFixed(3)} s (${w >= baseWall ? '+' : ''}${((w / baseWall - 1) * 100).toFixed(0)} %)` +
          `  of which sync ${median(res.sync).toFixed(3)} s   CPU ${c.toFixed(3)} s (${c >= baseCpu ? '+' : ''}${((c / baseCpu - 1) * 100).toFixed(0)} %)`);
      }
    }
  } finally {
    await cleanup();
  }
}

await main();
