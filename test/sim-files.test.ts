import test from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { hashTree } from '../scripts/sim/tree-hash.js';
import { generatePackage, packageIdentity } from '../scripts/sim/package-gen.js';
import { hostAddr, planHosts, rackOf } from '../scripts/sim/topology.js';

const execFileP = promisify(execFile);

async function tmp(t: { teardown: (f: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sim-test-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

test('tree digests match for copies and change with content, mode or symlink target', async (t) => {
  const dir = await tmp(t);
  const a = path.join(dir, 'a');
  await fs.mkdir(path.join(a, 'sub'), { recursive: true });
  await fs.writeFile(path.join(a, 'sub/f'), 'hello');
  await fs.writeFile(path.join(a, 'g'), 'world');
  await fs.symlink('sub/f', path.join(a, 'link'));
  const b = path.join(dir, 'b');
  await execFileP('cp', ['-a', a, b]);
  const da = await hashTree(a);
  t.is((await hashTree(b)).digest, da.digest);
  t.is(da.files, 2);
  t.is(da.bytes, 10);
  await fs.writeFile(path.join(b, 'sub/f'), 'hellO');
  t.not((await hashTree(b)).digest, da.digest);
  await fs.writeFile(path.join(b, 'sub/f'), 'hello');
  await fs.chmod(path.join(b, 'g'), 0o755);
  t.not((await hashTree(b)).digest, da.digest);
  await fs.chmod(path.join(b, 'g'), (await fs.stat(path.join(a, 'g'))).mode & 0o777);
  t.is((await hashTree(b)).digest, da.digest);
  await fs.unlink(path.join(b, 'link'));
  await fs.symlink('g', path.join(b, 'link'));
  t.not((await hashTree(b)).digest, da.digest);
});

test('a generated package is about the size asked, mixes both kinds of files, and names itself', async (t) => {
  const dir = await tmp(t);
  const target = 6e6;
  const pkg = await generatePackage(dir, target, 'simtest', '2.0.1');
  t.true(Math.abs(pkg.bytes - target) / target < 0.05, `got ${pkg.bytes} bytes for ${target}`);
  t.deepEqual(await packageIdentity(pkg.path), { name: 'simtest', version: '2.0.1' });
  const listing = (await execFileP('tar', ['-tzvf', pkg.path])).stdout;
  t.regex(listing, /simtest-2\.0\.1\/runtime\.yml/);
  t.regex(listing, /isolated\/usr\/lib\/lib0\.so/);
  t.regex(listing, /isolated\/usr\/share\/doc\/page0\.txt/);
  // The text part must really compress: the raw tree is well above the archive size.
  const raw = (await hashTree(path.join(dir, 'src', 'simtest-2.0.1'))).bytes;
  t.true(raw > pkg.bytes * 1.2, `raw ${raw} vs archive ${pkg.bytes}`);
});

test('hosts get benchmarking-range addresses and are split into two racks', (t) => {
  t.is(hostAddr(0), '198.18.0.1');
  t.throws(() => hostAddr(251));
  const spec = { hosts: 5, hostMbit: 10, racks: 2 as const, uplinkMbit: 10 };
  t.deepEqual(planHosts(spec).map((h) => h.rack), ['rackA', 'rackA', 'rackA', 'rackB', 'rackB']);
  t.is(rackOf(4, { ...spec, racks: 1 }), 'rackA');
  // One /24 per rack, both inside 198.18.0.0/15.
  t.deepEqual(planHosts(spec).map((h) => h.addr), ['198.18.0.1', '198.18.0.2', '198.18.0.3', '198.18.1.4', '198.18.1.5']);
  t.deepEqual(planHosts({ ...spec, racks: 1 }).map((h) => h.addr.split('.').slice(0, 3).join('.')), Array(5).fill('198.18.0'));
  t.true(planHosts(spec).every((h) => h.ns.startsWith('jsim-h')));
});
