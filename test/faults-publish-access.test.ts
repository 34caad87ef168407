// Fault 11 through the real daemon: what the socket's group could not read is not published, and a
// client swapping a package directory for a symlink during publishes never gets the target's bytes out.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tmpDir, startAgent, snapshot } from './helpers/agent.js';
import { makeRuntimeTree } from './helpers/fixtures.js';

const SOCKET_GID = 4242;
const asRoot = process.getuid?.() === 0;

(asRoot ? test : test.skip)('a package the socket group could not read is refused, naming the path; readable by it, it is published', async (t) => {
  const dir = await tmpDir(t); // mode 0700, root's
  const a = await startAgent(t, dir);
  // The operator opens the socket to a group of users.
  await fs.chown(a.socket, 0, SOCKET_GID);
  const pkg = path.join(dir, 'pkg');
  await makeRuntimeTree(pkg, { name: 'grouped', version: '1.0.0', bulkBytes: 64 * 1024 });

  const first = await a.run(['publish', pkg]);
  t.is(first.code, 1);
  t.is(first.stderr.trim(), `joblet-agent: ${dir} is not searchable (x) by the daemon socket's group (gid ${SOCKET_GID}) nor by all users ` +
    '(mode 0700, owner 0:0): the daemon cannot learn which user sent the request, so it publishes only what every user of its socket ' +
    'could read; make it readable by that group or by all, or publish from another place');

  await fs.chmod(dir, 0o755);
  const secret = path.join(pkg, 'isolated', 'private.key');
  await fs.writeFile(secret, 'only root may read this\n', { mode: 0o600 });
  const second = await a.run(['publish', pkg]);
  t.is(second.code, 1);
  t.regex(second.stderr, new RegExp(`^joblet-agent: ${secret} is not readable \\(r\\) by the daemon socket's group \\(gid ${SOCKET_GID}\\) nor by all users \\(mode 0600, owner 0:0\\)`));
  t.deepEqual(await a.json(['list']), [], 'nothing was installed by the refused publishes');

  await fs.chown(secret, 0, SOCKET_GID);
  await fs.chmod(secret, 0o640);
  const ok = await a.json(['publish', pkg]);
  t.is(ok.name, 'grouped');
  t.is(await fs.readFile(path.join(ok.path, 'isolated', 'private.key'), 'utf8'), 'only root may read this\n');
});

test('a client swapping a package directory for a symlink to a secret during publishes never publishes the secret', async (t) => {
  const dir = await tmpDir(t);
  const a = await startAgent(t, dir);
  const pkg = path.join(dir, 'pkg');
  await makeRuntimeTree(pkg, { name: 'raced', version: '1.0.0', bulkBytes: 64 * 1024 });
  const lib = path.join(pkg, 'isolated', 'lib');
  const secret = path.join(dir, 'secret');
  await fs.mkdir(secret, { mode: 0o700 });
  // The same names as in lib, so that a reader following the symlink finds files where it expects them.
  for (const name of await fs.readdir(lib)) {
    const size = (await fs.stat(path.join(lib, name))).size;
    await fs.writeFile(path.join(secret, name), Buffer.alloc(size, 'SECRET-'), { mode: 0o600 });
  }

  // The attacker: every millisecond, lib becomes a symlink to the secret dir or goes back to being itself.
  const swapper = spawn(process.execPath, ['-e', `
    const fs = require('fs');
    const [lib, parked, secret] = process.argv.slice(1);
    let linked = false;
    setInterval(() => {
      try {
        if (linked) { fs.unlinkSync(lib); fs.renameSync(parked, lib); }
        else { fs.renameSync(lib, parked); fs.symlinkSync(secret, lib); }
        linked = !linked;
      } catch {}
    }, 1);
  `, lib, `${lib}.parked`, secret], { stdio: 'ignore' });
  t.teardown(() => { swapper.kill('SIGKILL'); });

  const outcomes: string[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await a.run(['publish', pkg, '--force', '--json']);
    if (r.code === 0) {
      outcomes.push('published');
      const installed = JSON.parse(r.stdout).path as string;
      for (const [rel, entry] of await snapshot(installed)) {
        if (entry.type !== 'file') continue;
        const bytes = await fs.readFile(path.join(installed, rel));
        t.false(bytes.includes(Buffer.from('SECRET-')), `publish ${i}: ${rel} holds bytes of the secret`);
      }
    } else {
      t.is(r.code, 1, r.stderr);
      t.regex(r.stderr, /changed while the package was being read|does not exist|could not read/, r.stderr);
      outcomes.push(r.stderr.includes('changed while') ? 'refused: changed' : 'refused: other');
    }
  }
  t.log(`outcomes: ${outcomes.join(', ')}`);
});
