/**
 * In-process profile of the publish pipeline (read + canonicalise + chunk/store + extract), without the
 * daemon, for `node --cpu-prof`: where the CPU of a publish goes.
 *
 *   node [--cpu-prof] dist/scripts/profile-publish.js PKG [--no-extract] [--no-store]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readPackage } from '../src/runtime/canonical.js';
import { TreeWriter } from '../src/runtime/extract.js';
import { TeeSink, type TreeSink } from '../src/runtime/tree-entry.js';
import { ChunkStore } from '../src/store/chunk-store.js';
import { TreeIngest } from '../src/store/ingest.js';

const pkg = process.argv[2];
if (!pkg) {
  console.error('usage: profile-publish PKG [--no-extract] [--no-store]');
  process.exit(2);
}
const work = await fs.mkdtemp(path.join(os.tmpdir(), 'ja-prof-'));
try {
  const chunks = new ChunkStore(path.join(work, 'chunks'));
  await chunks.init();
  await fs.mkdir(path.join(work, 'tree'));
  const sinks: TreeSink[] = [];
  const ingest = new TreeIngest(chunks);
  if (!process.argv.includes('--no-store')) sinks.push(ingest);
  const writer = new TreeWriter(path.join(work, 'tree'));
  if (!process.argv.includes('--no-extract')) sinks.push(writer);
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const info = await readPackage(pkg, new TeeSink(sinks), { strip: 'none' });
  await writer.finish();
  const tree = await ingest.finish();
  const cpu = process.cpuUsage(c0);
  console.log(`${info.entries} entries, ${(info.unpackedBytes / 1e6).toFixed(1)} MB, ${tree.content.chunks.length} content + ${tree.entries.chunks.length} list chunks`);
  console.log(`wall ${((performance.now() - t0) / 1000).toFixed(2)} s, cpu user ${(cpu.user / 1e6).toFixed(2)} s sys ${(cpu.system / 1e6).toFixed(2)} s`);
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
