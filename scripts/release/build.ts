// `npm run release`: the self-contained artifacts, built from the lockfiles alone (the npm registry is the only
// download). For each architecture:
//   release/joblet-agent-<version>-linux-<arch>.tar.gz   one directory: the executable and its LevelDB addon
//   release/joblet-agent_<version>_<debarch>.deb         the same two files, a systemd unit, a default config
// usage: npm run release -- [--arch x64|arm64|all] [--out DIR] [--no-deb] [--gzip-level 1-9]
// (--gzip-level: 6 by default; the test uses 1, which gives the same files in a larger archive, faster)
import { execFile } from 'node:child_process';
import { promisify, parseArgs } from 'node:util';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_VERSION } from '../../src/agent/version.js';
import { fetchNode, type Arch } from './node-binary.js';
import { bundle, buildExecutable } from './sea.js';
import { buildDeb, DEB_ARCH } from './deb.js';

const execFileP = promisify(execFile);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const ARCHES: Arch[] = ['x64', 'arm64'];
// ELF e_machine of each architecture, to check that nothing of the wrong one lands in an artifact.
const ELF_MACHINE: Record<Arch, number> = { x64: 0x3e, arm64: 0xb7 };
const ADDON: Record<Arch, string> = {
  x64: 'node_modules/classic-level/prebuilds/linux-x64/classic-level.node',
  arm64: 'node_modules/classic-level/prebuilds/linux-arm64/classic-level.armv8.node',
};

async function elfMachine(file: string): Promise<number> {
  const fh = await fs.open(file, 'r');
  try {
    const { buffer } = await fh.read(Buffer.alloc(20), 0, 20, 0);
    if (buffer.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
    return buffer.readUInt16LE(18);
  } finally {
    await fh.close();
  }
}

async function sourceDateEpoch(): Promise<string> {
  if (process.env.SOURCE_DATE_EPOCH) return process.env.SOURCE_DATE_EPOCH;
  const { stdout } = await execFileP('git', ['-C', repoRoot, 'log', '-1', '--format=%ct']).catch(() => ({ stdout: '' }));
  return stdout.trim() || '0';
}

async function sha256(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of (await fs.open(file)).createReadStream()) hash.update(chunk);
  return hash.digest('hex');
}

const started = Date.now();
/** One line per step on stderr, with the time since the start: builds run on loaded machines. */
function step(what: string): void {
  console.error(`release: ${((Date.now() - started) / 1000).toFixed(1)}s ${what}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    arch: { type: 'string', default: 'all' }, out: { type: 'string' }, 'no-deb': { type: 'boolean' }, 'gzip-level': { type: 'string', default: '6' },
  } });
  const level = values['gzip-level'];
  if (!/^[1-9]$/.test(level)) throw new Error(`--gzip-level must be 1 to 9, not "${level}"`);
  const arches = values.arch === 'all' ? ARCHES : ARCHES.filter((a) => a === values.arch);
  if (arches.length === 0) throw new Error(`--arch must be x64, arm64 or all, not "${values.arch}"`);
  const out = path.resolve(values.out ?? path.join(repoRoot, 'release'));
  const pkgVersion = JSON.parse(await fs.readFile(path.join(repoRoot, 'package.json'), 'utf8')).version;
  if (pkgVersion !== AGENT_VERSION) throw new Error(`package.json version ${pkgVersion} differs from src/agent/version.ts ${AGENT_VERSION}`);
  if (os.platform() !== 'linux' || !ARCHES.includes(os.arch() as Arch)) throw new Error(`release builds run on linux x64 or arm64, not ${os.platform()} ${os.arch()}`);
  const cacheDir = path.join(repoRoot, 'release', '.cache');
  const workDir = path.join(out, `.work-${process.pid}`);
  await fs.mkdir(workDir, { recursive: true });
  const epoch = await sourceDateEpoch();
  const made: string[] = [];
  try {
    const hostNode = await fetchNode(repoRoot, os.arch() as Arch, cacheDir);
    step(`node ${hostNode.version} for ${hostNode.arch} ready`);
    const bundleFile = path.join(workDir, 'joblet-agent.cjs');
    await bundle(repoRoot, bundleFile, Number(hostNode.version.split('.')[0]));
    step('bundled');
    for (const arch of arches) {
      const target = arch === hostNode.arch ? hostNode : await fetchNode(repoRoot, arch, cacheDir);
      const top = `joblet-agent-${AGENT_VERSION}-linux-${arch}`;
      const dir = path.join(workDir, top);
      await fs.mkdir(dir);
      const exe = path.join(dir, 'joblet-agent');
      await buildExecutable({ bundleFile, target, hostNode, outFile: exe, workDir, repoRoot });
      step(`${arch}: executable built`);
      await fs.copyFile(path.join(repoRoot, ADDON[arch]), path.join(dir, 'classic-level.node'));
      await fs.chmod(path.join(dir, 'classic-level.node'), 0o644);
      for (const f of [exe, path.join(dir, 'classic-level.node')]) {
        if ((await elfMachine(f)) !== ELF_MACHINE[arch]) throw new Error(`${f} is not a linux-${arch} binary`);
      }
      if (arch === hostNode.arch) {
        // Smoke test with nothing on PATH: the executable must not need a node of the host's.
        const { stdout } = await execFileP(exe, ['--version'], { env: { PATH: '/nonexistent' } });
        const want = `joblet-agent ${AGENT_VERSION} (node v${target.version})`;
        if (stdout.trim() !== want) throw new Error(`${exe} --version printed "${stdout.trim()}", not "${want}"`);
      }
      step(`${arch}: checked`);
      // The tarball and the .deb are compressed at the same time: gzip is most of the build's time.
      const tarball = path.join(out, `${top}.tar.gz`);
      const writeTarball = async () => {
        await execFileP('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', `--mtime=@${epoch}`,
          '-I', `gzip -n -${level}`, '-C', workDir, '-cf', tarball, top]);
        step(`${arch}: ${path.basename(tarball)} written`);
      };
      const deb = path.join(out, `joblet-agent_${AGENT_VERSION}_${DEB_ARCH[arch]}.deb`);
      const writeDeb = async () => {
        if (values['no-deb']) return;
        await buildDeb({ repoRoot, version: AGENT_VERSION, arch, nodeVersion: target.version, exeDir: dir, workDir, outFile: deb,
          sourceDateEpoch: epoch, gzipLevel: level });
        step(`${arch}: ${path.basename(deb)} written`);
      };
      await Promise.all([writeTarball(), writeDeb()]);
      made.push(tarball, ...(values['no-deb'] ? [] : [deb]));
      await fs.rm(dir, { recursive: true, force: true });
    }
  } finally {
    await fs.rm(workDir, { recursive: true, force: true });
  }
  const sums: string[] = [];
  for (const f of made) {
    sums.push(`${await sha256(f)}  ${path.basename(f)}`);
    console.log(`${path.relative(process.cwd(), f) || f}  ${((await fs.stat(f)).size / 1e6).toFixed(1)} MB`);
  }
  await fs.writeFile(path.join(out, 'SHA256SUMS'), sums.join('\n') + '\n');
}

main().catch((err) => {
  console.error(`release: ${(err as Error).message}`);
  process.exitCode = 1;
});
