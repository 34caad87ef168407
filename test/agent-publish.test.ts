// Round trips through the real CLI and daemon: what the agent installs equals what GNU tar / unzip extract.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { startAgent, tmpDir, comparable, snapshot, execFileP } from './helpers/agent.js';
import { makeRuntimeTree, tarGzWithTopDir, tarAtRoot, zipWithTopDir, LONG_FILE } from './helpers/fixtures.js';
import { treeFileBytes } from './runtime-fixtures.js';

async function publishAndCompare(t: any, kind: 'tgz-topdir' | 'tar-root' | 'tgz-root' | 'zip' | 'dir') {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'src', 'myruntime-1.2.3');
  await makeRuntimeTree(src, { name: 'myruntime', version: '1.2.3' });
  const ref = path.join(dir, 'ref');
  await fs.mkdir(ref);
  let pkg: string;
  let refRoot: string;
  switch (kind) {
    case 'tgz-topdir':
      pkg = path.join(dir, 'pkg.tar.gz');
      await tarGzWithTopDir(src, pkg);
      await execFileP('tar', ['-xzf', pkg, '-C', ref]);
      refRoot = path.join(ref, 'myruntime-1.2.3');
      break;
    case 'tar-root':
    case 'tgz-root':
      pkg = path.join(dir, kind === 'tar-root' ? 'pkg.tar' : 'pkg.tgz');
      await tarAtRoot(src, pkg, kind === 'tgz-root');
      await execFileP('tar', ['-xf', pkg, '-C', ref]);
      refRoot = ref;
      break;
    case 'zip':
      pkg = path.join(dir, 'pkg.zip');
      await zipWithTopDir(src, pkg);
      await execFileP('unzip', ['-q', pkg, '-d', ref]);
      refRoot = path.join(ref, 'myruntime-1.2.3');
      break;
    case 'dir':
      pkg = src;
      refRoot = src;
      break;
  }
  const agent = await startAgent(t, dir);
  const res = await agent.json(['publish', pkg]);
  t.is(res.name, 'myruntime');
  t.is(res.version, '1.2.3');
  t.regex(res.manifestId, /^sha256:[0-9a-f]{64}$/);
  const installed = path.join(agent.runtimesDir, 'myruntime', '1.2.3');
  t.is(res.path, installed);
  t.deepEqual(await comparable(installed), await comparable(refRoot));

  // Properties that must hold whatever the reference tool did.
  const snap = await snapshot(installed);
  t.is(snap.get('isolated/usr/bin/tool-link')?.target, 'tool');
  t.is(snap.get('isolated/usr/bin/dangling')?.target, '../does/not/exist');
  t.is(snap.get('isolated/usr/bin/tool')?.mode, 0o755);
  t.is(((await fs.stat(path.join(installed, 'isolated/usr/bin/suid-tool'))).mode & 0o7777), 0o755, 'setuid bit dropped');
  t.is(snap.get('isolated/empty/dir')?.type, 'dir');
  t.truthy(snap.get(LONG_FILE));
  if (kind !== 'zip') {
    t.is(snap.get('isolated/usr/bin/tool-hardlink')?.ino, snap.get('isolated/usr/bin/tool')?.ino, 'hardlink kept');
  }

  const list = await agent.json(['list']);
  t.is(list.length, 1);
  t.like(list[0], { name: 'myruntime', version: '1.2.3', manifestId: res.manifestId, path: installed });
  // The record takes the size from the manifest; it must be what is on disk.
  t.is(list[0].sizeBytes, await treeFileBytes(installed));
  t.true(list[0].sizeBytes > 3 * 1024 * 1024);
  t.false(Number.isNaN(Date.parse(list[0].installedAt)));
  // Nothing but the runtime and the agent's own bookkeeping dir in the runtimes dir.
  t.deepEqual((await fs.readdir(agent.runtimesDir)).sort(), ['.joblet-agent', 'myruntime']);
  t.deepEqual(await fs.readdir(path.join(agent.runtimesDir, '.joblet-agent', 'staging')).catch(() => []), []);
}

test('a GNU tar.gz with one top-level directory installs like tar -xzf', (t) => publishAndCompare(t, 'tgz-topdir'));
test('a GNU tar with ./ entries installs like tar -xf', (t) => publishAndCompare(t, 'tar-root'));
test('a GNU tar.gz with ./ entries installs like tar -xzf', (t) => publishAndCompare(t, 'tgz-root'));
test('an Info-ZIP zip -y installs like unzip', (t) => publishAndCompare(t, 'zip'));
test('a directory installs as a copy of itself', (t) => publishAndCompare(t, 'dir'));

test('human publish output names the runtime and the manifest id', async (t) => {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'rt');
  await makeRuntimeTree(src, { name: 'human', version: '2.0.0', bulkBytes: 1024 });
  const agent = await startAgent(t, dir);
  const r = await agent.run(['publish', src]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /published human@2\.0\.0/);
  t.regex(r.stdout, /manifest\s+sha256:[0-9a-f]{64}/);
  const l = await agent.run(['list']);
  t.regex(l.stdout, /human\s+2\.0\.0/);
});
