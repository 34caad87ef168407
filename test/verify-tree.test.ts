// The tree check on its own: drift that only an inode or a type shows, the limit of the cheap check, and what
// the cheap check costs on a tree of a few thousand files (logged, never asserted on).
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { Store } from '../src/store/store.js';
import { TreeIngest } from '../src/store/ingest.js';
import { readPackage } from '../src/runtime/canonical.js';
import { buildManifest, publicKeyOf, signManifest } from '../src/store/manifest.js';
import { RuntimesDir } from '../src/runtime/install.js';
import { DEFAULT_LIMITS } from '../src/runtime/types.js';
import { installManifest } from '../src/agent/install/install-manifest.js';
import { checkTree, hasDrift, readEntryList } from '../src/agent/install/verify-tree.js';
import { tmpDir } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

async function installed(t: any, fill: (src: string) => Promise<void>) {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src');
  await fill(src);
  const store = await Store.open(path.join(dir, 'data'));
  t.teardown(() => store.close());
  const ingest = new TreeIngest(store.chunks);
  const info = await readPackage(src, ingest);
  const { privateKey } = generateKeyPairSync('ed25519');
  const sm = signManifest(buildManifest(info.meta, await ingest.finish(), publicKeyOf(privateKey)), privateKey);
  await fs.mkdir(path.join(dir, 'runtimes'));
  const rec = await installManifest({ store, runtimes: new RuntimesDir(path.join(dir, 'runtimes')), limits: DEFAULT_LIMITS }, sm);
  const list = await readEntryList(store.chunks, sm.manifest);
  return { root: rec!.path, list, store, sm };
}

test('a broken hardlink and a directory replaced by a file are reported as such, the latter once', async (t) => {
  const { root, list } = await installed(t, (src) => makeRuntimeTree(src, { name: 'links', bulkBytes: 1024 }));
  t.false(hasDrift(await checkTree(root, list, { full: true })));
  // Same bytes, same mode and mtime, but no longer the same inode as its hardlink.
  const link = path.join(root, 'isolated/usr/bin/tool-hardlink');
  const st = await fs.stat(link);
  await fs.rm(link);
  await fs.copyFile(path.join(root, 'isolated/usr/bin/tool'), link);
  await fs.chmod(link, st.mode & 0o7777);
  await fs.utimes(link, st.atime, st.mtime);
  await fs.rm(path.join(root, 'isolated/empty'), { recursive: true });
  await fs.writeFile(path.join(root, 'isolated/empty'), 'a file now\n');
  const c = await checkTree(root, list, { full: true });
  t.deepEqual(c.changed.map((x) => [x.path, x.what]), [
    ['isolated/empty', ['type']],
    [c.changed.find((x) => x.what.includes('hardlink'))!.path, ['hardlink']],
  ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)));
  t.true(['isolated/usr/bin/tool', 'isolated/usr/bin/tool-hardlink'].includes(c.changed.find((x) => x.what.includes('hardlink'))!.path));
  t.deepEqual(c.missing, [], 'isolated/empty/dir is not listed again');
  t.deepEqual(c.added, []);
});

test('the cheap check trusts an unchanged size and mtime; the full check hashes every file', async (t) => {
  const { root, list } = await installed(t, async (src) => {
    await makeRuntimeTree(src, { name: 'cheap', bulkBytes: 1024 });
    // An old mtime, so that an edit now is sure to move it to another second.
    await fs.utimes(path.join(src, 'isolated/usr/bin/suid-tool'), new Date('2020-01-01'), new Date('2020-01-01'));
  });
  const file = path.join(root, 'isolated/usr/bin/suid-tool');
  const st = await fs.stat(file);
  await fs.writeFile(file, 'PRETEND BINARY\n'); // same length
  await fs.utimes(file, st.atime, st.mtime);
  t.false(hasDrift(await checkTree(root, list, { full: false })), 'a same-size edit with its mtime put back passes the cheap check');
  const full = await checkTree(root, list, { full: true });
  t.deepEqual(full.changed, [{ path: 'isolated/usr/bin/suid-tool', what: ['content'] }]);
  // A plain edit moves the mtime: the cheap check hashes that file, and only that one.
  await fs.writeFile(file, 'PRETEND BINARY!\n');
  const cheap = await checkTree(root, list, { full: false });
  t.deepEqual(cheap.changed, [{ path: 'isolated/usr/bin/suid-tool', what: ['content', 'mtime'] }]);
  t.is(cheap.hashedFiles, 0, 'a size change needs no hash');
});

test('what a cheap check of a tree of 3000 files costs', async (t) => {
  const { root, store, sm } = await installed(t, async (src) => {
    await fs.mkdir(src, { recursive: true });
    await fs.writeFile(path.join(src, 'runtime.yml'), 'name: many\nversion: "1.0.0"\n');
    for (let d = 0; d < 60; d++) {
      const sub = path.join(src, 'isolated', `d${d}`);
      await fs.mkdir(sub, { recursive: true });
      for (let f = 0; f < 50; f++) await fs.writeFile(path.join(sub, `f${f}.txt`), `file ${d}/${f}\n`.repeat(20));
    }
  });
  const measure = async (full: boolean) => {
    const cpu = process.cpuUsage();
    const wall = performance.now();
    // As the daemon does it: the entry list read (and verified) from the store, then the walk.
    const c = await checkTree(root, await readEntryList(store.chunks, sm.manifest), { full });
    const used = process.cpuUsage(cpu);
    return { c, wallMs: performance.now() - wall, cpuMs: (used.user + used.system) / 1000 };
  };
  await measure(false); // warm the dentry cache, as a periodic check finds it
  const cheap = await measure(false);
  const full = await measure(true);
  t.false(hasDrift(cheap.c));
  t.is(cheap.c.entries, 3000 + 60 + 2);
  t.is(cheap.c.hashedFiles, 0);
  t.is(full.c.hashedFiles, 3001);
  t.log(`cheap check of ${cheap.c.entries} entries (entry list read from the store included): ${cheap.cpuMs.toFixed(0)} ms CPU, ${cheap.wallMs.toFixed(0)} ms wall; ` +
    `full check: ${full.cpuMs.toFixed(0)} ms CPU, ${full.wallMs.toFixed(0)} ms wall`);
});
