// Every refused input, through the real CLI and daemon: exit 1, a sentence naming the problem, and
// nothing installed, nothing staged, no chunk stored, nothing written outside the runtimes dir.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import { startAgent, tmpDir, listAll, exists, type AgentHandle } from './helpers/agent.js';
import { writeTar, yml } from './helpers/evil.js';
import { makeRuntimeTree, tarGzWithTopDir, zipWithTopDir } from './helpers/fixtures.js';

interface Case { title: string; make: (file: string, scratch: string) => Promise<string>; message: RegExp }

const cases: Case[] = [
  {
    title: 'an entry escaping with ..',
    make: async (f) => { await writeTar(f + '.tar', [yml(), { name: '../../escaped-file', body: 'x' }]); return f + '.tar'; },
    message: /entry \.\.\/\.\.\/escaped-file escapes the runtime root/,
  },
  {
    title: 'an absolute path',
    make: async (f) => { await writeTar(f + '.tar', [yml(), { name: '/tmp/ja-absolute-escape', body: 'x' }]); return f + '.tar'; },
    message: /\/tmp\/ja-absolute-escape.*(escapes|absolute)/,
  },
  {
    title: 'writing through a symlink the archive created',
    make: async (f, scratch) => {
      await writeTar(f + '.tar', [yml(), { name: 'lib', type: 'symlink', linkname: scratch }, { name: 'lib/planted', body: 'x' }]);
      return f + '.tar';
    },
    message: /lib\/planted.*symlink/,
  },
  {
    title: 'a hardlink to an entry that is not earlier in the archive',
    make: async (f) => {
      await writeTar(f + '.tar', [yml(), { name: 'passwd', type: 'link', linkname: 'etc/passwd' }]);
      return f + '.tar';
    },
    message: /hardlink.*passwd|passwd.*hardlink/i,
  },
  {
    title: 'a fifo entry',
    make: async (f) => { await writeTar(f + '.tar', [yml(), { name: 'pipe', type: 'fifo' }]); return f + '.tar'; },
    message: /pipe/,
  },
  {
    title: 'a character device entry',
    make: async (f) => { await writeTar(f + '.tar', [yml(), { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 }]); return f + '.tar'; },
    message: /dev\/null/,
  },
  {
    title: 'no runtime.yml',
    make: async (f) => { await writeTar(f + '.tar.gz', [{ name: 'bin/tool', body: 'x' }, { name: 'other/file', body: 'y' }]); return f + '.tar.gz'; },
    message: /could not detect runtime name: no runtime\.yml/,
  },
  {
    title: 'invalid YAML',
    make: async (f) => { await writeTar(f + '.tar', [yml('name: [unclosed\nversion: 1\n')]); return f + '.tar'; },
    message: /invalid runtime\.yml/,
  },
  {
    title: 'a bad runtime name',
    make: async (f) => { await writeTar(f + '.tar', [yml('name: Bad_Name\nversion: "1.0"\n')]); return f + '.tar'; },
    message: /invalid runtime name "Bad_Name"/,
  },
  {
    title: 'a version that is not a safe path segment',
    make: async (f) => { await writeTar(f + '.tar', [yml('name: ok\nversion: "../1.0"\n')]); return f + '.tar'; },
    message: /version/,
  },
  {
    title: 'a truncated .tar.gz',
    make: async (f, scratch) => {
      const src = path.join(scratch, 'trunc-src');
      await makeRuntimeTree(src, { name: 'trunc', version: '1.0.0' });
      await tarGzWithTopDir(src, f + '.full.tgz');
      const full = await fs.readFile(f + '.full.tgz');
      await fs.writeFile(f + '.tgz', full.subarray(0, Math.floor(full.length / 2)));
      return f + '.tgz';
    },
    message: /gzip|truncated|unexpected end/i,
  },
  {
    title: 'a truncated .tar',
    make: async (f, scratch) => {
      const src = path.join(scratch, 'trunc-tar-src');
      await makeRuntimeTree(src, { name: 'trunc', version: '1.0.0' });
      await tarGzWithTopDir(src, f + '.full.tgz');
      const raw = zlib.gunzipSync(await fs.readFile(f + '.full.tgz'));
      await fs.writeFile(f + '.tar', raw.subarray(0, Math.floor(raw.length / 2) + 100));
      return f + '.tar';
    },
    message: /invalid tar archive|truncated/i,
  },
  {
    title: 'a corrupt zip',
    make: async (f, scratch) => {
      const src = path.join(scratch, 'zip-src');
      await makeRuntimeTree(src, { name: 'zipped', version: '1.0.0' });
      await zipWithTopDir(src, f + '.zip');
      const z = await fs.readFile(f + '.zip');
      await fs.writeFile(f + '.zip', z.subarray(0, z.length - 30));
      return f + '.zip';
    },
    message: /invalid zip file/,
  },
];

async function assertNothingLeft(t: any, agent: AgentHandle, outside: string[]) {
  t.deepEqual(await agent.json(['list']), []);
  const status = await agent.json(['status']);
  t.is(status.store.chunks, 0, 'no chunk stored');
  t.is(status.store.manifests, 0, 'no manifest stored');
  const left = (await listAll(agent.runtimesDir)).filter((p) => !/^\.joblet-agent(\/(staging|trash))?$/.test(p));
  t.deepEqual(left, [], 'runtimes dir holds nothing but empty bookkeeping dirs');
  for (const p of outside) t.false(await exists(p), `${p} must not exist`);
}

test('refused packages leave nothing behind', async (t) => {
  const dir = await tmpDir(t);
  const scratch = path.join(dir, 'scratch');
  await fs.mkdir(scratch);
  const agent = await startAgent(t, dir);
  for (const c of cases) {
    const pkg = await c.make(path.join(dir, c.title.replace(/\W+/g, '-')), scratch);
    const r = await agent.run(['publish', pkg]);
    t.is(r.code, 1, `${c.title}: exit code`);
    t.regex(r.stderr, c.message, `${c.title}: message`);
    t.is(r.stderr.trim().split('\n').length, 1, `${c.title}: one line`);
    await assertNothingLeft(t, agent, [
      path.join(agent.runtimesDir, '..', 'escaped-file'), path.join(path.dirname(agent.runtimesDir), '..', 'escaped-file'),
      '/tmp/ja-absolute-escape', path.join(scratch, 'planted'),
    ]);
  }
});

test('a package over the size limit is refused before it is unpacked', async (t) => {
  const dir = await tmpDir(t);
  const src = path.join(dir, 'big');
  await makeRuntimeTree(src, { name: 'big', version: '1.0.0', bulkBytes: 8 * 1024 * 1024 });
  const pkg = path.join(dir, 'big.tgz');
  await tarGzWithTopDir(src, pkg);
  const agent = await startAgent(t, dir, ['--max-package-bytes', String(1024 * 1024)]);
  const r = await agent.run(['publish', pkg]);
  t.is(r.code, 1);
  t.regex(r.stderr, /limit/);
  await assertNothingLeft(t, agent, []);
});

test('a package path that does not exist gets one sentence', async (t) => {
  const dir = await tmpDir(t);
  const agent = await startAgent(t, dir);
  const r = await agent.run(['publish', path.join(dir, 'nope.tgz')]);
  t.is(r.code, 1);
  t.regex(r.stderr, /nope\.tgz does not exist/);
});
