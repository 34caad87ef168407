// The .deb: the executable and its addon in /usr/lib/joblet-agent (with /usr/bin/joblet-agent linking there, so
// the addon stays beside the executable's real path), the systemd unit and a commented default config.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Arch } from './node-binary.js';

const execFileP = promisify(execFile);

export const DEB_ARCH: Record<Arch, string> = { x64: 'amd64', arm64: 'arm64' };

async function sizeOf(dir: string): Promise<number> {
  let total = 0;
  for (const d of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) total += await sizeOf(p);
    else if (d.isFile()) total += (await fs.stat(p)).size;
  }
  return total;
}

export async function buildDeb(opts: {
  repoRoot: string; version: string; arch: Arch; nodeVersion: string;
  /** holds joblet-agent and classic-level.node */
  exeDir: string; workDir: string; outFile: string;
  /** member timestamps are clamped to it, as in the tarball */
  sourceDateEpoch: string;
  gzipLevel: string;
}): Promise<void> {
  const root = path.join(opts.workDir, `deb-${opts.arch}`);
  await fs.rm(root, { recursive: true, force: true });
  const files = path.join(opts.repoRoot, 'scripts/release/files');
  const put = async (rel: string, from: string, mode: number) => {
    const to = path.join(root, rel);
    await fs.mkdir(path.dirname(to), { recursive: true, mode: 0o755 });
    await fs.copyFile(from, to);
    await fs.chmod(to, mode);
  };
  await put('usr/lib/joblet-agent/joblet-agent', path.join(opts.exeDir, 'joblet-agent'), 0o755);
  await put('usr/lib/joblet-agent/classic-level.node', path.join(opts.exeDir, 'classic-level.node'), 0o644);
  await fs.mkdir(path.join(root, 'usr/bin'), { recursive: true, mode: 0o755 });
  await fs.symlink('../lib/joblet-agent/joblet-agent', path.join(root, 'usr/bin/joblet-agent'));
  await put('usr/lib/systemd/system/joblet-agent.service', path.join(files, 'joblet-agent.service'), 0o644);
  await put('etc/joblet-agent/config.yml', path.join(files, 'config.yml'), 0o644);
  const installedKiB = Math.ceil((await sizeOf(root)) / 1024);
  await fs.mkdir(path.join(root, 'DEBIAN'), { mode: 0o755 });
  const control = [
    'Package: joblet-agent',
    `Version: ${opts.version}`,
    `Architecture: ${DEB_ARCH[opts.arch]}`,
    'Maintainer: joblet-agent developers <joblet-agent@localhost>',
    `Installed-Size: ${installedKiB}`,
    // What the official Node binary links against (glibc 2.28, GLIBCXX_3.4.21).
    'Depends: libc6 (>= 2.28), libstdc++6 (>= 5.2), libgcc-s1 | libgcc1',
    'Section: admin',
    'Priority: optional',
    'Description: peer-to-peer distribution agent for joblet runtimes',
    ' Runs on every host of a joblet fleet: a runtime package published on one host is cut into signed,',
    ' content-addressed chunks that every other host fetches from its nearest peers, verifies and installs',
    ` under /opt/joblet/runtimes. Self-contained: carries Node.js v${opts.nodeVersion}; needs no node or npm.`,
    '',
  ].join('\n');
  await fs.writeFile(path.join(root, 'DEBIAN/control'), control, { mode: 0o644 });
  // dpkg keeps an operator's edits (and what `init` wrote) to a conffile across upgrades.
  await fs.writeFile(path.join(root, 'DEBIAN/conffiles'), '/etc/joblet-agent/config.yml\n', { mode: 0o644 });
  // gzip rather than xz: xz took minutes on a loaded 2-core machine for ~25% smaller; every dpkg reads gzip.
  await execFileP('dpkg-deb', ['--root-owner-group', '-Zgzip', `-z${opts.gzipLevel}`, '--build', root, opts.outFile],
    { env: { ...process.env, SOURCE_DATE_EPOCH: opts.sourceDateEpoch } });
  await fs.rm(root, { recursive: true, force: true });
}
