// Publish-time warnings: a package the agent accepts but that joblet would treat differently from what the
// publisher probably expects. The manifest is content-addressed, so nothing is rewritten: the operator is told.
import { readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import type { RuntimeMeta } from './types.js';
import { isJobletSemver } from './version-rule.js';

/** joblet's architecture check: exactly these spellings, case-sensitive. */
export const JOBLET_ARCHITECTURES = ['amd64', 'x86_64', 'arm64'] as const;
/** Symlinks named one by one in the warnings; beyond that they are counted. */
const SYMLINKS_NAMED = 5;

export interface PackageLook {
  meta: RuntimeMeta;
  /** runtime.yml as written (the parsed meta has architectures normalised). */
  runtimeYml: string;
  /** Every symlink of the package: path inside it and target as written. */
  symlinks: { path: string; target: string }[];
  /** Where the runtime is installed on a host, e.g. /opt/joblet/runtimes/NAME/VERSION. */
  installPath: string;
}

export function jobletWarnings(p: PackageLook): string[] {
  const warnings: string[] = [];
  const { name, version } = p.meta;
  if (!isJobletSemver(version)) {
    warnings.push(`version "${version}" is not MAJOR.MINOR.PATCH: joblet never picks it for ${name}@latest, and finds it only as ${name}@${version} exactly`);
  }
  const doc = parseDocument(p.runtimeYml);
  for (const arch of rawArchitectures(doc)) {
    if ((JOBLET_ARCHITECTURES as readonly string[]).includes(arch)) continue;
    const hint = suggestion(arch);
    warnings.push(`requirements.architectures lists "${arch}", which joblet's check does not accept (it accepts ${JOBLET_ARCHITECTURES.join(', ')}, case-sensitive)` +
      (hint ? `: joblet refuses this runtime on ${hint} hosts; write "${hint}"` : ''));
  }
  const mounts = mountTargets(doc);
  if (mounts === null) {
    warnings.push('runtime.yml has no "mounts": joblet then mounts the whole runtime directory as the job\'s root filesystem');
  }
  const outside = p.symlinks.filter((s) => s.target.startsWith('/') && !insideView(s.target, mounts, p.installPath));
  for (const s of outside.slice(0, SYMLINKS_NAMED)) {
    warnings.push(`symlink ${s.path} points to the absolute path ${s.target}, outside the package: in a job it resolves to whatever is at that path there`);
  }
  if (outside.length > SYMLINKS_NAMED) {
    warnings.push(`${outside.length - SYMLINKS_NAMED} more symlinks point to absolute paths outside the package`);
  }
  return warnings;
}

function suggestion(arch: string): string | null {
  const lower = arch.trim().toLowerCase();
  if (lower === 'aarch64' || lower === 'arm64') return 'arm64';
  if (lower === 'amd64' || lower === 'x86_64' || lower === 'x86-64' || lower === 'x64') return 'amd64';
  return null;
}

function rawArchitectures(doc: ReturnType<typeof parseDocument>): string[] {
  const requirements = doc.get('requirements', true);
  if (!isMap(requirements)) return [];
  const list = requirements.get('architectures', true);
  if (!isSeq(list)) return [];
  return list.items.flatMap((item) => (isScalar(item) && typeof item.value === 'string' ? [item.value] : []));
}

/** The job-side targets of runtime.yml's mounts; null when there are none. */
function mountTargets(doc: ReturnType<typeof parseDocument>): string[] | null {
  const mounts = doc.get('mounts', true);
  if (!isSeq(mounts) || mounts.items.length === 0) return null;
  const targets: string[] = [];
  for (const item of mounts.items) {
    if (!isMap(item)) continue;
    const target = item.get('target');
    if (typeof target === 'string' && target.startsWith('/')) targets.push(posix.normalize(target));
  }
  return targets;
}

/**
 * Does an absolute target land on the package's own files? Under a mount's target it does; without mounts
 * the runtime directory is the job's root, so every absolute path does; a path into the installed
 * runtime directory itself does too.
 */
function insideView(target: string, mounts: string[] | null, installPath: string): boolean {
  const t = posix.normalize(target);
  const under = (base: string) => t === base || t.startsWith(base.endsWith('/') ? base : `${base}/`);
  if (under(installPath)) return true;
  if (mounts === null) return true;
  return mounts.some(under);
}

/** Every symlink under `root` (a tree the agent extracted itself), with its target as written. */
export async function findSymlinks(root: string): Promise<{ path: string; target: string }[]> {
  const out: { path: string; target: string }[] = [];
  const pending = [''];
  while (pending.length > 0) {
    const rel = pending.pop()!;
    for (const d of await readdir(join(root, rel), { withFileTypes: true })) {
      const path = rel === '' ? d.name : `${rel}/${d.name}`;
      if (d.isSymbolicLink()) out.push({ path, target: await readlink(join(root, path)) });
      else if (d.isDirectory()) pending.push(path);
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
