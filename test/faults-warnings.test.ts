// joblet's own rules at publish: warnings in the text and --json output and the daemon log; `latest` refused.
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, startAgent } from './helpers/agent.js';
import { jobletWarnings } from '../src/runtime/joblet-rules.js';

async function writeTree(root: string, yml: string, symlinks: Record<string, string>): Promise<void> {
  await fs.mkdir(path.join(root, 'isolated', 'usr', 'bin'), { recursive: true });
  await fs.mkdir(path.join(root, 'isolated', 'lib'), { recursive: true });
  await fs.writeFile(path.join(root, 'runtime.yml'), yml);
  await fs.writeFile(path.join(root, 'isolated', 'usr', 'bin', 'python3'), '#!/bin/sh\n', { mode: 0o755 });
  await fs.writeFile(path.join(root, 'isolated', 'lib', 'libbulk.so'), Buffer.alloc(4096, 1));
  for (const [at, target] of Object.entries(symlinks)) await fs.symlink(target, path.join(root, at));
}

test('publish warns about what joblet treats differently, in text, --json and the log; it refuses latest', async (t) => {
  const dir = await tmpDir(t);
  const a = await startAgent(t, dir);

  // No mounts: the runtime dir is the job's root, so an absolute symlink lands inside it (no warning).
  const loose = path.join(dir, 'loose');
  await writeTree(loose, 'name: loose\nversion: "1.0"\nrequirements:\n  architectures: [aarch64, x86_64, AMD64]\n',
    { 'isolated/etc-link': '/etc/passwd' });
  const text = await a.run(['publish', loose]);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /^published loose@1\.0$/m);
  const expected = [
    'version "1.0" is not MAJOR.MINOR.PATCH: joblet never picks it for loose@latest, and finds it only as loose@1.0 exactly',
    'requirements.architectures lists "aarch64", which joblet\'s check does not accept (it accepts amd64, x86_64, arm64, case-sensitive): joblet refuses this runtime on arm64 hosts; write "arm64"',
    'requirements.architectures lists "AMD64", which joblet\'s check does not accept (it accepts amd64, x86_64, arm64, case-sensitive): joblet refuses this runtime on amd64 hosts; write "amd64"',
    'runtime.yml has no "mounts": joblet then mounts the whole runtime directory as the job\'s root filesystem',
  ];
  t.deepEqual(text.stderr.trim().split('\n'), expected.map((w) => `joblet-agent: warning: ${w}`));
  for (const w of expected) t.true(a.logs().includes(`publish loose@1.0: warning: ${w}`), w);
  const installed = path.join(a.runtimesDir, 'loose', '1.0');
  t.is(await fs.readFile(path.join(installed, 'runtime.yml'), 'utf8'), await fs.readFile(path.join(loose, 'runtime.yml'), 'utf8'),
    'runtime.yml is installed as written, not rewritten');

  // With mounts: absolute symlinks are fine under a mount target or into the installed dir, warned otherwise.
  const mounted = path.join(dir, 'mounted');
  const installPath = path.join(a.runtimesDir, 'mounted', '2.0.0');
  await writeTree(mounted, 'name: mounted\nversion: 2.0.0\nmounts:\n  - source: isolated/usr/bin\n    target: /usr/bin\n', {
    'isolated/usr/bin/python': '/usr/bin/python3',
    'isolated/lib/libc.so.6': '/lib/x86_64-linux-gnu/libc.so.6',
    'isolated/lib/self': `${installPath}/isolated/lib/libbulk.so`,
    'isolated/lib/relative': 'libbulk.so',
  });
  const json = await a.json(['publish', mounted]);
  t.deepEqual(json.warnings, [
    'symlink isolated/lib/libc.so.6 points to the absolute path /lib/x86_64-linux-gnu/libc.so.6, outside the package: in a job it resolves to whatever is at that path there',
  ]);
  t.is(await fs.readlink(path.join(json.path, 'isolated/lib/libc.so.6')), '/lib/x86_64-linux-gnu/libc.so.6', 'kept as written');

  // A clean package has no warnings.
  const clean = path.join(dir, 'clean');
  await writeTree(clean, 'name: clean\nversion: 3.1.4\nmounts:\n  - source: isolated/usr/bin\n    target: /usr/bin\n', {});
  t.deepEqual((await a.json(['publish', clean])).warnings, []);

  // `latest` could never be addressed: refused, nothing installed.
  const latest = path.join(dir, 'latest');
  await writeTree(latest, 'name: latest-rt\nversion: latest\n', {});
  const refused = await a.run(['publish', latest]);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^joblet-agent: invalid version "latest" in runtime\.yml: must not be 'latest'/);
  t.false((await a.json(['list'])).some((r: any) => r.name === 'latest-rt'));
});

test('many symlinks outside the package are named up to five, then counted', (t) => {
  const symlinks = Array.from({ length: 8 }, (_, i) => ({ path: `isolated/l${i}`, target: `/opt/elsewhere/${i}` }));
  const w = jobletWarnings({
    meta: { name: 'x', version: '1.0.0' },
    runtimeYml: 'name: x\nversion: 1.0.0\nmounts:\n  - source: isolated\n    target: /usr\n',
    symlinks,
    installPath: '/opt/joblet/runtimes/x/1.0.0',
  });
  t.is(w.length, 6);
  t.is(w[5], '3 more symlinks point to absolute paths outside the package');
});
