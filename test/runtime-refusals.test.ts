// Every kind of unsafe or broken package is refused with a one-sentence PackageError naming the
// entry, by openCanonicalTar (publish time) and again by extractTar (install time), and nothing is
// ever written outside the destination directory.
import test, { type ExecutionContext } from 'ava';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { NO_RUNTIME_YML } from '../src/runtime/canonical-writer.js';
import { openCanonicalTar } from '../src/runtime/canonical.js';
import { extractTar } from '../src/runtime/extract.js';
import { PackageError, type PackageLimits } from '../src/runtime/types.js';
import {
  consumeCanonical,
  craftTar,
  craftZip,
  execFileP,
  listTree,
  makeSampleTree,
  ROOT_YML,
  SAMPLE_YML,
  tempDir,
  type CraftEntry,
} from './runtime-fixtures.js';

interface Sandbox {
  work: string;
  /** Everything an extraction might touch lives under here. */
  sandbox: string;
  dest: string;
  outside: string;
}

async function sandboxFor(t: ExecutionContext): Promise<Sandbox> {
  const work = await tempDir(t);
  const sandbox = join(work, 'sandbox');
  const dest = join(sandbox, 'a', 'b', 'dest');
  const outside = join(sandbox, 'outside');
  await mkdir(dest, { recursive: true });
  await mkdir(outside);
  return { work, sandbox, dest, outside };
}

async function assertNothingOutside(t: ExecutionContext, box: Sandbox): Promise<void> {
  const paths = await listTree(box.sandbox);
  t.deepEqual(paths.filter((p) => !p.startsWith('a/b/dest/')), ['a', 'a/b', 'a/b/dest', 'outside'], 'nothing written outside dest');
}

/** openCanonicalTar must fail with `message`, on the stream and on done with the same error. */
async function assertCanonicalRefuses(t: ExecutionContext, pkg: string, message: RegExp, limits?: PackageLimits): Promise<PackageError> {
  const { stream, done } = openCanonicalTar(pkg, { limits });
  const streamError = new Promise<Error>((resolve) => stream.on('error', resolve));
  stream.resume();
  const err = await t.throwsAsync(done, { instanceOf: PackageError, message });
  t.is(await streamError, err, 'the stream is destroyed with the same error');
  t.false(err!.message.includes('\n'), 'one line');
  return err as PackageError;
}

/** extractTar on the raw tar (as if a peer had sent it) must refuse too, writing nothing outside. */
async function assertExtractRefuses(t: ExecutionContext, box: Sandbox, tarFile: string, message: RegExp, limits?: PackageLimits): Promise<void> {
  // extractTar wants an empty destination.
  await rm(box.dest, { recursive: true, force: true });
  await mkdir(box.dest);
  await t.throwsAsync(extractTar(createReadStream(tarFile), box.dest, { limits }), { instanceOf: PackageError, message });
  await assertNothingOutside(t, box);
}

async function refusedEverywhere(t: ExecutionContext, entries: CraftEntry[], message: RegExp): Promise<void> {
  const box = await sandboxFor(t);
  const pkg = join(box.work, 'evil.tar');
  await craftTar(pkg, entries);
  await assertCanonicalRefuses(t, pkg, message);
  await assertExtractRefuses(t, box, pkg, message);
}

test('refuses ../ escapes', async (t) => {
  await refusedEverywhere(t, [ROOT_YML, { header: { name: '../../etc/passwd' }, data: 'root::0:0\n' }], /^entry \.\.\/\.\.\/etc\/passwd escapes the runtime root$/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'ok/../../../escaped' }, data: 'x' }], /^entry ok\/\.\.\/\.\.\/\.\.\/escaped escapes the runtime root$/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'a/../b' }, data: 'x' }], /^entry a\/\.\.\/b contains a '\.\.' component$/);
});

test('refuses absolute paths', async (t) => {
  await refusedEverywhere(t, [ROOT_YML, { header: { name: '/tmp/joblet-agent-absolute-test' }, data: 'x' }], /^entry \/tmp\/joblet-agent-absolute-test escapes the runtime root$/);
  await t.throwsAsync(stat('/tmp/joblet-agent-absolute-test'));
});

test('refuses writing through a symlink the archive created', async (t) => {
  const box = await sandboxFor(t);
  const pkg = join(box.work, 'through.tar');
  await craftTar(pkg, [
    ROOT_YML,
    { header: { name: 'lib', type: 'symlink', linkname: box.outside } },
    { header: { name: 'lib/pwned' }, data: 'owned' },
  ]);
  const message = /^entry lib\/pwned would be written through the symlink lib that the archive created earlier$/;
  await assertCanonicalRefuses(t, pkg, message);
  await assertExtractRefuses(t, box, pkg, message);
  await t.throwsAsync(stat(join(box.outside, 'pwned')));

  // Relative, and several levels below the link.
  await refusedEverywhere(t, [
    ROOT_YML,
    { header: { name: 'up', type: 'symlink', linkname: '../../..' } },
    { header: { name: 'up/outside/deeper/file' }, data: 'x' },
  ], /^entry up\/outside\/deeper\/file would be written through the symlink up/);

  // A symlink to a directory, then a directory entry with the same name.
  await refusedEverywhere(t, [
    ROOT_YML,
    { header: { name: 'd', type: 'symlink', linkname: '/etc' } },
    { header: { name: 'd', type: 'directory' } },
  ], /^entry d would overwrite a symlink the archive created earlier$/);

  // Onto the symlink itself.
  await refusedEverywhere(t, [
    ROOT_YML,
    { header: { name: 'link', type: 'symlink', linkname: '/etc/passwd' } },
    { header: { name: 'link' }, data: 'x' },
  ], /^entry link would overwrite a symlink the archive created earlier$/);
});

test('refuses hardlinks to anything but an earlier file or symlink', async (t) => {
  await refusedEverywhere(t, [
    ROOT_YML,
    { header: { name: 'a', type: 'link', linkname: 'b' } },
    { header: { name: 'b' }, data: 'later' },
  ], /^hardlink a points to b, which is not an earlier file or symlink of the archive$/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'a', type: 'link', linkname: 'nothing-here' } }], /^hardlink a points to nothing-here, which is not an earlier/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'a', type: 'link', linkname: '../../../outside/x' } }], /^hardlink a points to \.\.\/\.\.\/\.\.\/outside\/x, which escapes the runtime root$/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'a', type: 'link', linkname: '/etc/passwd' } }], /^hardlink a points to \/etc\/passwd, which escapes the runtime root$/);
  await refusedEverywhere(t, [
    ROOT_YML,
    { header: { name: 'dir', type: 'directory' } },
    { header: { name: 'a', type: 'link', linkname: 'dir' } },
  ], /^hardlink a points to dir, which is not an earlier file or symlink/);
});

test('refuses device, fifo and unknown entries', async (t) => {
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 } }], /^entry dev\/null is a character device; device, fifo and socket entries are refused$/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'pipe', type: 'fifo' } }], /^entry pipe is a fifo; device, fifo and socket entries are refused$/);
  await refusedEverywhere(t, [ROOT_YML, { header: { name: 'sda', type: 'block-device' } }], /^entry sda is a block device;/);
});

test('refuses truncated archives', async (t) => {
  const box = await sandboxFor(t);
  const big: CraftEntry[] = [ROOT_YML, { header: { name: 'big.bin' }, data: Buffer.alloc(200_000, 1) }, { header: { name: 'last.txt' }, data: 'end' }];
  const tar = join(box.work, 'full.tar');
  await craftTar(tar, big);
  const fullSize = (await stat(tar)).size;

  // Cut in the middle of a file's data.
  const midData = join(box.work, 'mid.tar');
  await writeFile(midData, (await readFile(tar)).subarray(0, 100_000));
  await assertCanonicalRefuses(t, midData, /^invalid tar archive .*mid\.tar: /);
  await assertExtractRefuses(t, box, midData, /^invalid tar archive: /);

  // Cut exactly after the last entry's data: tar-stream alone would call this a complete archive.
  const boundary = join(box.work, 'boundary.tar');
  await writeFile(boundary, (await readFile(tar)).subarray(0, fullSize - 1024));
  await assertCanonicalRefuses(t, boundary, /^invalid tar archive .*boundary\.tar: the archive is truncated \(it ends without an end-of-archive block\)$/);
  await assertExtractRefuses(t, box, boundary, /^invalid tar archive: the archive is truncated/);

  // A truncated gzip stream.
  const gz = join(box.work, 'pkg.tar.gz');
  await craftTar(gz, big, { gzip: true });
  await truncate(gz, Math.floor((await stat(gz)).size / 2));
  await assertCanonicalRefuses(t, gz, /^invalid gzip data in .*pkg\.tar\.gz: unexpected end of file$/);

  // A complete gzip of a truncated tar.
  const gzOfCut = join(box.work, 'cut.tgz');
  await writeFile(gzOfCut, gzipSync((await readFile(tar)).subarray(0, fullSize - 1024)));
  await assertCanonicalRefuses(t, gzOfCut, /^invalid tar archive .*cut\.tgz: the archive is truncated/);

  // Garbage that is not gzip at all but is named like it.
  const notGz = join(box.work, 'garbage.tar.gz');
  await writeFile(notGz, Buffer.alloc(4096, 0x41));
  await assertCanonicalRefuses(t, notGz, /^invalid gzip data in .*garbage\.tar\.gz: incorrect header check$/);

  // Not a tar: a header checksum failure.
  const notTar = join(box.work, 'garbage.tar');
  await writeFile(notTar, Buffer.alloc(4096, 0x41));
  await assertCanonicalRefuses(t, notTar, /^invalid tar archive .*garbage\.tar: Invalid tar header/);
});

test('refuses corrupt zips and unsafe zip entries', async (t) => {
  const box = await sandboxFor(t);
  const good = join(box.work, 'good.zip');
  const tree = join(box.work, 'tree');
  await makeSampleTree(tree);
  await execFileP('zip', ['-qry', good, '.'], { cwd: tree });

  const cut = join(box.work, 'cut.zip');
  await writeFile(cut, (await readFile(good)).subarray(0, 5000));
  await assertCanonicalRefuses(t, cut, /^invalid zip file: .*cut\.zip: End of central directory record signature not found/);

  const garbage = join(box.work, 'garbage.zip');
  await writeFile(garbage, Buffer.alloc(4096, 0x41));
  await assertCanonicalRefuses(t, garbage, /^invalid zip file: .*garbage\.zip: /);

  // Data corrupted in place: the CRC-32 check catches it.
  const flipped = join(box.work, 'flipped.zip');
  await craftZip(flipped, [{ name: 'runtime.yml', data: SAMPLE_YML }, { name: 'data.txt', data: 'hello world, this is data' }]);
  const bytes = await readFile(flipped);
  const at = bytes.indexOf('hello world');
  bytes[at] = 0x48;
  await writeFile(flipped, bytes);
  await assertCanonicalRefuses(t, flipped, /^invalid zip file: .*flipped\.zip: entry data\.txt fails its CRC-32 check$/);

  const escape = join(box.work, 'escape.zip');
  await craftZip(escape, [{ name: 'runtime.yml', data: SAMPLE_YML }, { name: '../evil.sh', data: 'rm -rf /' }]);
  await assertCanonicalRefuses(t, escape, /^entry \.\.\/evil\.sh escapes the runtime root$/);

  const absolute = join(box.work, 'absolute.zip');
  await craftZip(absolute, [{ name: 'runtime.yml', data: SAMPLE_YML }, { name: '/etc/evil', data: 'x' }]);
  await assertCanonicalRefuses(t, absolute, /^entry \/etc\/evil escapes the runtime root$/);

  const fifo = join(box.work, 'fifo.zip');
  await craftZip(fifo, [{ name: 'runtime.yml', data: SAMPLE_YML }, { name: 'pipe', unixMode: 0o010644 }]);
  await assertCanonicalRefuses(t, fifo, /^entry pipe is a fifo; device, fifo and socket entries are refused$/);

  const through = join(box.work, 'through.zip');
  await craftZip(through, [
    { name: 'runtime.yml', data: SAMPLE_YML },
    { name: 'etc', data: '/etc', unixMode: 0o120777 },
    { name: 'etc/cron.d/evil', data: 'x' },
  ]);
  await assertCanonicalRefuses(t, through, /^entry etc\/cron\.d\/evil would be written through the symlink etc/);
});

test('refuses packages without runtime.yml at the root or under a single top directory', async (t) => {
  const box = await sandboxFor(t);
  const tar = join(box.work, 'none.tar');
  await craftTar(tar, [{ header: { name: 'README' }, data: 'x' }, { header: { name: 'bin/tool' }, data: 'x' }]);
  const exact = new RegExp(`^${NO_RUNTIME_YML.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
  await assertCanonicalRefuses(t, tar, exact);

  // Two levels deep is not "a single top-level directory".
  const deep = join(box.work, 'deep.tar.gz');
  await craftTar(deep, [{ header: { name: 'a', type: 'directory' } }, { header: { name: 'a/b', type: 'directory' } }, { header: { name: 'a/b/runtime.yml' }, data: SAMPLE_YML }], { gzip: true });
  await assertCanonicalRefuses(t, deep, exact);

  const zip = join(box.work, 'none.zip');
  await craftZip(zip, [{ name: 'x/' }, { name: 'x/tool', data: 'x' }, { name: 'y.txt', data: 'x' }]);
  await assertCanonicalRefuses(t, zip, exact);

  const dir = join(box.work, 'dir');
  await mkdir(join(dir, 'only'), { recursive: true });
  await writeFile(join(dir, 'only', 'file'), 'x');
  await assertCanonicalRefuses(t, dir, exact);

  await t.throwsAsync(consumeCanonical(join(box.work, 'missing.tgz')), { instanceOf: PackageError, message: /^package .*missing\.tgz does not exist$/ });
});

test('refuses bad runtime.yml: name, version, YAML', async (t) => {
  const box = await sandboxFor(t);
  const cases: Array<[string, RegExp]> = [
    ['name: Bad_Name\nversion: 1.0\n', /^invalid runtime name "Bad_Name" in runtime\.yml: must match \^\[a-z0-9\]\[a-z0-9\.-\]\{0,63\}\$$/],
    ['name: ok\nversion: ../../x\n', /^invalid version "\.\.\/\.\.\/x" in runtime\.yml: must not contain '\/' or '\\'$/],
    ['name: ok\nversion: "-rf"\n', /^invalid version "-rf" in runtime\.yml: must not start with '-'$/],
    ['name: ok\nversion: ..\n', /^invalid version "\.\." in runtime\.yml: must not be '\.' or '\.\.'$/],
    ['name: ok\nversion: [1, 2\n', /^invalid runtime\.yml: /],
    ['name: ok\n  bad: indentation\n', /^invalid runtime\.yml: /],
  ];
  for (const [yml, message] of cases) {
    const pkg = join(box.work, 'bad.tar');
    await craftTar(pkg, [{ header: { name: 'runtime.yml' }, data: yml }]);
    await assertCanonicalRefuses(t, pkg, message);
  }
  const symlinked = join(box.work, 'symlinked.tar');
  await craftTar(symlinked, [{ header: { name: 'real.yml' }, data: SAMPLE_YML }, { header: { name: 'runtime.yml', type: 'symlink', linkname: 'real.yml' } }]);
  await assertCanonicalRefuses(t, symlinked, /^runtime\.yml must be a regular file, but the archive has it as a symlink$/);
});

test('stops a decompression bomb at the size and entry limits, early', async (t) => {
  const box = await sandboxFor(t);
  const entries: CraftEntry[] = [ROOT_YML];
  for (let i = 0; i < 40; i++) entries.push({ header: { name: `zeros/${i}.bin` }, data: Buffer.alloc(1024 * 1024) });
  const bomb = join(box.work, 'bomb.tar.gz');
  await craftTar(bomb, entries, { gzip: true });
  t.true((await stat(bomb)).size < 200_000, 'compresses well');

  const limits: PackageLimits = { maxUnpackedBytes: 4 * 1024 * 1024, maxEntries: 1000 };
  const { stream, done } = openCanonicalTar(bomb, { limits });
  let emitted = 0;
  stream.on('data', (c: Buffer) => (emitted += c.length));
  await t.throwsAsync(done, { instanceOf: PackageError, message: /^package unpacks to more than 4194304 bytes \(the limit\), reached at entry zeros\/3\.bin$/ });
  t.true(emitted < 6 * 1024 * 1024, `stopped early (${emitted} bytes emitted of 40 MiB)`);

  const raw = join(box.work, 'bomb.tar');
  await craftTar(raw, entries);
  await assertExtractRefuses(t, box, raw, /^package unpacks to more than 4194304 bytes/, limits);

  const many: CraftEntry[] = [ROOT_YML];
  for (let i = 0; i < 50; i++) many.push({ header: { name: `f${i}` }, data: 'x' });
  const manyTar = join(box.work, 'many.tar');
  await craftTar(manyTar, many);
  const few: PackageLimits = { maxUnpackedBytes: 1e9, maxEntries: 10 };
  await assertCanonicalRefuses(t, manyTar, /^package has more than 10 entries \(the limit\), reached at entry f9$/, few);
  await assertExtractRefuses(t, box, manyTar, /^package has more than 10 entries/, few);
});

test('a consumer closing the stream early stops reading and rejects done', async (t) => {
  const box = await sandboxFor(t);
  const entries: CraftEntry[] = [ROOT_YML];
  for (let i = 0; i < 20; i++) entries.push({ header: { name: `f${i}.bin` }, data: Buffer.alloc(1024 * 1024, i) });
  const pkg = join(box.work, 'pkg.tar');
  await craftTar(pkg, entries);
  const { stream, done } = openCanonicalTar(pkg);
  await new Promise<void>((resolve) => stream.once('data', () => resolve()));
  stream.destroy(new Error('consumer gave up'));
  await t.throwsAsync(done, { message: 'consumer gave up' });
});

test('extractTar replaces duplicate files, refuses file/directory clashes and a closed source', async (t) => {
  const box = await sandboxFor(t);
  const dup = join(box.work, 'dup.tar');
  await craftTar(dup, [ROOT_YML, { header: { name: 'a' }, data: 'one' }, { header: { name: 'b', type: 'link', linkname: 'a' } }, { header: { name: 'a' }, data: 'two' }]);
  await extractTar(createReadStream(dup), box.dest);
  t.is(await readFile(join(box.dest, 'a'), 'utf8'), 'two');
  t.is(await readFile(join(box.dest, 'b'), 'utf8'), 'one', 'the hardlink keeps the first content');
  // The same with a large first file (written on the main thread, not by the small-file worker, which makes links).
  const big = Buffer.alloc(2 * 1024 * 1024 + 3, 7);
  const dupBig = join(box.work, 'dup-big.tar');
  await craftTar(dupBig, [ROOT_YML, { header: { name: 'big' }, data: big }, { header: { name: 'alias', type: 'link', linkname: 'big' } }, { header: { name: 'big' }, data: 'small now' }]);
  const boxBig = await sandboxFor(t);
  await extractTar(createReadStream(dupBig), boxBig.dest);
  t.is(await readFile(join(boxBig.dest, 'big'), 'utf8'), 'small now');
  t.deepEqual(await readFile(join(boxBig.dest, 'alias')), big, 'the hardlink keeps the first content');

  const clash = join(box.work, 'clash.tar');
  await craftTar(clash, [{ header: { name: 'x', type: 'directory' } }, { header: { name: 'x' }, data: 'file' }]);
  const box2 = await sandboxFor(t);
  await assertExtractRefuses(t, box2, clash, /^entry x would replace a directory the archive created earlier$/);

  const box3 = await sandboxFor(t);
  const source = new Readable({ read() {} });
  const extraction = extractTar(source, box3.dest);
  source.push(Buffer.alloc(512, 0));
  source.destroy();
  await t.throwsAsync(extraction, { instanceOf: PackageError });
});
