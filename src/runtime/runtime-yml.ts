// runtime.yml: the only metadata joblet trusts. The agent applies joblet's own rules so a package that
// joblet would reject is refused at publish time, not discovered broken on every host.
import { arch as processArch } from 'node:process';
import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { PackageError, type RuntimeMeta } from './types.js';
import { versionProblem } from './version-rule.js';

export { versionProblem } from './version-rule.js';

const NAME_PATTERN = /^[a-z0-9][a-z0-9.-]{0,63}$/;

/** Why `name` is not a valid runtime name, or null when it is. */
export function runtimeNameProblem(name: string): string | null {
  return NAME_PATTERN.test(name) ? null : `must match ${NAME_PATTERN.source}`;
}

export function assertRuntimeName(name: string, where = 'runtime.yml'): void {
  const problem = runtimeNameProblem(name);
  if (problem) throw new PackageError(`invalid runtime name ${JSON.stringify(name)} in ${where}: ${problem}`);
}

export function assertVersion(version: string, where = 'runtime.yml'): void {
  const problem = versionProblem(version);
  if (problem) throw new PackageError(`invalid version ${JSON.stringify(version)} in ${where}: ${problem}`);
}

export function parseRuntimeYml(text: string): RuntimeMeta {
  const doc = parseDocument(text);
  // yaml's messages continue with a source excerpt on later lines; the first line is the sentence.
  if (doc.errors.length > 0) throw new PackageError(`invalid runtime.yml: ${firstLine(doc.errors[0]!.message)}`);
  let top: unknown;
  try {
    top = doc.toJS();
  } catch (err) {
    throw new PackageError(`invalid runtime.yml: ${firstLine((err as Error).message)}`);
  }
  if (top === null || typeof top !== 'object' || Array.isArray(top)) {
    throw new PackageError('invalid runtime.yml: the top level must be a mapping of fields');
  }
  const fields = top as Record<string, unknown>;

  if (fields.name === undefined || fields.name === null) {
    throw new PackageError('invalid runtime.yml: the required field "name" is missing');
  }
  if (typeof fields.name !== 'string') {
    throw new PackageError(`invalid runtime name ${JSON.stringify(String(fields.name))} in runtime.yml: must be a string`);
  }
  assertRuntimeName(fields.name);

  const version = versionText(doc, text, fields.version);
  assertVersion(version);

  const meta: RuntimeMeta = { name: fields.name, version };
  if (typeof fields.language === 'string') meta.language = fields.language;
  if (typeof fields.description === 'string') meta.description = fields.description;
  const architectures = architecturesOf(doc);
  if (architectures) meta.architectures = architectures;
  return meta;
}

function firstLine(message: string): string {
  return message.split('\n')[0]!.trim();
}

/**
 * The version as written. YAML would turn `version: 1.10` into the number 1.1; joblet (Go) reads the
 * field as a string and sees "1.10", so numbers are taken from the source text, not re-printed.
 */
function versionText(doc: Document, text: string, value: unknown): string {
  if (value === undefined || value === null) {
    throw new PackageError('invalid runtime.yml: the required field "version" is missing');
  }
  if (typeof value === 'string') return value;
  if (typeof value === 'number') {
    const node = doc.get('version', true);
    if (isScalar(node) && node.range) return text.slice(node.range[0], node.range[1]).trim();
    return String(value);
  }
  throw new PackageError('invalid runtime.yml: the field "version" must be a string or a number');
}

function architecturesOf(doc: Document): string[] | undefined {
  const requirements = doc.get('requirements', true);
  if (requirements === undefined || requirements === null || (isScalar(requirements) && requirements.value === null)) {
    return undefined;
  }
  if (!isMap(requirements)) throw new PackageError('invalid runtime.yml: "requirements" must be a mapping');
  const list = requirements.get('architectures', true);
  if (list === undefined || list === null || (isScalar(list) && list.value === null)) return undefined;
  if (!isSeq(list)) throw new PackageError('invalid runtime.yml: requirements.architectures must be a list of strings');
  return list.items.map((item) => {
    if (!isScalar(item) || typeof item.value !== 'string') {
      throw new PackageError('invalid runtime.yml: requirements.architectures must be a list of strings');
    }
    return normaliseArch(item.value);
  });
}

/** joblet accepts both the Debian and the kernel spelling; the agent compares in the Debian one. */
export function normaliseArch(a: string): string {
  const lower = a.trim().toLowerCase();
  if (lower === 'x86_64') return 'amd64';
  if (lower === 'aarch64') return 'arm64';
  return lower;
}

export function machineArch(): string {
  if (processArch === 'x64') return 'amd64';
  return processArch;
}

/** True when the runtime may be installed on a machine of architecture `arch` (absent list = any). */
export function archAllowed(meta: RuntimeMeta, arch: string = machineArch()): boolean {
  if (!meta.architectures || meta.architectures.length === 0) return true;
  const wanted = normaliseArch(arch);
  return meta.architectures.some((a) => normaliseArch(a) === wanted);
}
