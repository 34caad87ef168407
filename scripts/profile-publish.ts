/**
 * In-process profile of the publish pipeline (read + canonicalise + chunk/store + extract), without the
 * daemon, for `node --cpu-prof`: where the CPU of a publish goes.
 *
 *   node [--cpu-prof] dist/scripts/profile-publish.js PKG [PKG2...] [--no-extract] [--no-store]
 *
 * With several packages, all go into one store, as successive versions would: each line then also says how
 * many chunks and bytes that package stored anew (what a rebuild costs).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readPackage } from '../src/runtime/canonical.js';
import { TreeWriter } from '../src/runtime/extract.js';
import { TeeSink, type TreeSink } from '../src/runtime/tree-entry.js';
import { ChunkStore } from '../src/store/chunk-store.js';
import { TreeIngest } from '../src/store/ingest.js';

const pkgs = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (pkgs.length === 0) {
  console.error('usage: profile-publish PKG [PKG2...] [--no-extract] [--no-store]');
  process.exit(2);
}
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ja-prof-'));
try {
  const chunks = new ChunkStore(path.join(work, 'chunks'));
  await chunks.init();
  for (const [n, pkg] of pkgs.entries()) {
    const dest = path.join(work, `tree${n}`);
    await fs.mkdir(dest);
    const sinks: TreeSink[] = [];
    const ingest = new TreeIngest(chunks);
    if (!process.argv.includes('--no-store')) sinks.push(ingest);
    const writer = new TreeWriter(dest);
    if (!process.argv.includes('--no-extract')) sinks.push(writer);
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const info = await readPackage(pkg, new TeeSink(sinks), { strip: 'auto' });
    await writer.finish();
    const tree = await ingest.finish();
    const cpu = process.cpuUsage(c0);
    const all = [...tree.entries.chunks, ...tree.content.chunks];
    const created = new Set(tree.createdIds);
    const newBytes = all.filter((c) => created.has(c.id)).reduce((x, c) => x + c.size, 0);
    const total = all.reduce((x, c) => x + c.size, 0);
    console.log(`${path.basename(pkg)}: ${info.entries} entries, ${(info.unpackedBytes / 1e6).toFixed(1)} MB, ${tree.content.chunks.length} content + ${tree.entries.chunks.length} list chunks; new: ${created.size} chunks, ${(newBytes / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB (${(100 * newBytes / total).toFixed(1)} %)`);
    console.log(`  wall ${((performance.now() - t0) / 1000).toFixed(2)} s, cpu user ${(cpu.user / 1e6).toFixed(2)} s sys ${(cpu.system / 1e6).toFixed(2)} s`);
    await fs.rm(dest, { recursive: true, force: true });
  }
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
