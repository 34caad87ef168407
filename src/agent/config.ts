// Agent configuration: defaults < config file < command-line flags.
// Relative paths in a config file are taken relative to the file's directory, so a config written by
// `init --dir DIR` stays valid wherever it is started from.
import fs from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { UserError } from './errors.js';
import { DEFAULT_LIMITS } from '../runtime/types.js';
import { parseDuration, parseSize } from './units.js';
import { DEFAULT_HTTP, parseHttpAddress } from './http-address.js';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './log.js';

export const DEFAULT_CONFIG_PATH = '/etc/joblet-agent/config.yml';
export const DEFAULT_SOCKET = '/run/joblet-agent/agent.sock';

export interface AgentConfig {
  dataDir: string;
  runtimesDir: string;
  socket: string;
  listen: string[];
  bootstrap: string[];
  /** Path of the fleet secret; required to join a swarm. */
  fleetKey: string | null;
  /** Path of this agent's publisher private key; only publishers have one. */
  publisherKey: string | null;
  /** Trusted publisher public keys ('ed25519:<hex>'), already read from files where a path was given. */
  trust: string[];
  zone: string | null;
  mdns: boolean;
  /** 'user:group' to own installed runtimes; null keeps the daemon's user. */
  owner: string | null;
  maxPackageBytes: number;
  /** Chunk uploads served at once; beyond it peers are told to ask elsewhere. */
  maxUploads: number;
  /** Host-wide caps in bytes per second over all peers; null = uncapped. */
  bandwidth: Bandwidth;
  /** HOST:PORT of the read-only HTTP endpoint (metrics, health, dashboard), or 'off'. */
  http: string;
  /** The disk budget of the store and the watermarks of its filesystem (see swarm/disk-budget.ts). */
  store: StoreBudget;
  logFormat: LogFormat;
  logLevel: LogLevel;
  /** 'auto': check installed trees every repairInterval and repair those that differ; 'off': only on command. */
  repair: 'off' | 'auto';
  /** A duration (30s, 10m, 1h) between the checks of repair: auto. */
  repairInterval: string;
}

export interface Bandwidth { upload: number | null; download: number | null }

/**
 * maxBytes: what the agent's own files in the data dir may take (null = no budget). The watermarks are
 * percentages of the filesystem holding the data dir: above `highWatermark` GC runs until `lowWatermark`
 * is reached, and a download that would cross it is refused; 100 turns the watermark off.
 */
export interface StoreBudget { maxBytes: number | null; highWatermark: number; lowWatermark: number }

export const DEFAULTS: AgentConfig = {
  dataDir: '/var/lib/joblet-agent',
  runtimesDir: '/opt/joblet/runtimes',
  socket: DEFAULT_SOCKET,
  listen: ['/ip4/0.0.0.0/tcp/7946'],
  bootstrap: [],
  fleetKey: null,
  publisherKey: null,
  trust: [],
  zone: null,
  mdns: true,
  owner: null,
  maxPackageBytes: DEFAULT_LIMITS.maxUnpackedBytes,
  maxUploads: 8,
  bandwidth: { upload: null, download: null },
  http: DEFAULT_HTTP,
  store: { maxBytes: null, highWatermark: 85, lowWatermark: 75 },
  logFormat: 'text',
  logLevel: 'info',
  repair: 'off',
  repairInterval: '10m',
};

/** Flags as given on the command line; undefined means "not given". */
export type ConfigFlags = Partial<{ [K in keyof AgentConfig]: K extends 'bandwidth' ? Partial<Bandwidth> : K extends 'store' ? Partial<StoreBudget> : AgentConfig[K] }>;

const KEYS = new Set(Object.keys(DEFAULTS));
const PATH_KEYS = ['dataDir', 'runtimesDir', 'socket', 'fleetKey', 'publisherKey'] as const;
const PUBKEY_RE = /^ed25519:[0-9a-f]{64}$/;

/** Read a config file (missing is fine only for the default path) and apply flags over it. */
export async function loadConfig(configPath: string | undefined, flags: ConfigFlags): Promise<AgentConfig> {
  const file = configPath ?? DEFAULT_CONFIG_PATH;
  let fromFile: ConfigFlags = {};
  let text: string | null = null;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || configPath !== undefined) {
      throw new UserError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
  }
  if (text !== null) fromFile = parseConfigFile(text, file);
  const merged: AgentConfig = { ...DEFAULTS };
  for (const src of [fromFile, flags]) {
    for (const [k, v] of Object.entries(src)) {
      // bandwidth is merged per direction: --max-upload-rate must not drop the config's download cap.
      if (k === 'bandwidth' && v) merged.bandwidth = { ...merged.bandwidth, ...stripUndefined(v as Partial<Bandwidth>) };
      else if (k === 'store' && v) merged.store = { ...merged.store, ...stripUndefined(v as Partial<StoreBudget>) };
      else if (v !== undefined) (merged as unknown as Record<string, unknown>)[k] = v;
    }
  }
  checkChoices(merged, text !== null ? `config file ${file}` : 'no config file');
  merged.trust = await resolveTrust(merged.trust);
  if (merged.zone !== null && !ZONE_RE.test(merged.zone)) {
    throw new UserError(`zone ${JSON.stringify(merged.zone.slice(0, 80))} is not a zone label: use 1-64 of A-Z a-z 0-9 . _ : - (starting with a letter or digit)`);
  }
  return merged;
}

/** A zone label: what `--zone` accepts, and what is accepted from peers (1-64 of [A-Za-z0-9._:-]). */
export const ZONE_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

/** Settings with a fixed set of values, checked after flags and file are merged (either may have set them). */
function checkChoices(c: AgentConfig, where: string): void {
  if (parseHttpAddress(c.http) === undefined) {
    throw new UserError(`invalid http "${c.http}" (from --http or ${where}): give HOST:PORT (e.g. 127.0.0.1:7947, port 0 for any free port) or off`);
  }
  if (!LOG_FORMATS.includes(c.logFormat)) throw new UserError(`invalid logFormat "${c.logFormat}" (from --log-format or ${where}): give ${LOG_FORMATS.join(' or ')}`);
  if (c.repair !== 'off' && c.repair !== 'auto') throw new UserError(`invalid repair "${c.repair}" (from --repair or ${where}): give off or auto`);
  if ((parseDuration(c.repairInterval) ?? 0) < 1000) {
    throw new UserError(`invalid repairInterval "${c.repairInterval}" (from --repair-interval or ${where}): give a duration of at least 1s, like 10m, 1h or 30s`);
  }
  if (c.store.lowWatermark > c.store.highWatermark) {
    throw new UserError(`store.lowWatermark ${c.store.lowWatermark} % is above store.highWatermark ${c.store.highWatermark} % (from the flags or ${where}): the low watermark is where GC stops, so it must not be above the high one`);
  }
  if (!LOG_LEVELS.includes(c.logLevel)) throw new UserError(`invalid logLevel "${c.logLevel}" (from --log-level or ${where}): give one of ${LOG_LEVELS.join(', ')}`);
}

function parseConfigFile(text: string, file: string): ConfigFlags {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new UserError(`invalid config file ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new UserError(`invalid config file ${file}: expected a mapping`);
  const out: Record<string, unknown> = {};
  const base = path.dirname(path.resolve(file));
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    if (!KEYS.has(k)) throw new UserError(`invalid config file ${file}: unknown key "${k}"`);
    const want = DEFAULTS[k as keyof AgentConfig];
    const bad = () => new UserError(`invalid config file ${file}: "${k}" must be ${describe(k)}`);
    if (k === 'bandwidth') { out[k] = parseBandwidth(v, file); continue; }
    if (k === 'store') { out[k] = parseStoreBudget(v, file); continue; }
    if (v === null) { out[k] = k === 'fleetKey' || k === 'publisherKey' || k === 'zone' || k === 'owner' ? null : want; continue; }
    if (Array.isArray(want)) {
      if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw bad();
      out[k] = v;
    } else if (typeof want === 'boolean') {
      if (typeof v !== 'boolean') throw bad();
      out[k] = v;
    } else if (typeof want === 'number') {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw bad();
      out[k] = v;
    } else {
      if (typeof v !== 'string' || v === '') throw bad();
      out[k] = (PATH_KEYS as readonly string[]).includes(k) ? path.resolve(base, v) : v;
    }
  }
  if (Array.isArray(out.trust)) {
    out.trust = (out.trust as string[]).map((t) => (PUBKEY_RE.test(t) ? t : path.resolve(base, t)));
  }
  return out as ConfigFlags;
}

/** `bandwidth: { upload: 20MiB, download: 50MiB }`, per second; a direction left out or null is uncapped. */
function parseBandwidth(v: unknown, file: string): Partial<Bandwidth> {
  if (v === null) return { upload: null, download: null };
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw new UserError(`invalid config file ${file}: "bandwidth" must be a mapping like { upload: 20MiB, download: 50MiB }`);
  }
  const out: Partial<Bandwidth> = {};
  for (const [dir, rate] of Object.entries(v as Record<string, unknown>)) {
    if (dir !== 'upload' && dir !== 'download') throw new UserError(`invalid config file ${file}: unknown key "bandwidth.${dir}"`);
    if (rate === null) { out[dir] = null; continue; }
    const bytes = parseSize(rate);
    if (bytes === null) {
      throw new UserError(`invalid config file ${file}: "bandwidth.${dir}" must be a rate in bytes per second like 20MiB or 50MB, got ${JSON.stringify(rate)}`);
    }
    out[dir] = bytes;
  }
  return out;
}

/** `store: { maxBytes: 400MiB, highWatermark: 85%, lowWatermark: 75% }`; every key optional. */
function parseStoreBudget(v: unknown, file: string): Partial<StoreBudget> {
  if (v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw new UserError(`invalid config file ${file}: "store" must be a mapping like { maxBytes: 400MiB, highWatermark: 85%, lowWatermark: 75% }`);
  }
  const out: Partial<StoreBudget> = {};
  for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
    if (key === 'maxBytes') {
      if (value === null) { out.maxBytes = null; continue; }
      const bytes = parseSize(value);
      if (bytes === null) throw new UserError(`invalid config file ${file}: "store.maxBytes" must be a size like 400MiB or 2GB, got ${JSON.stringify(value)}`);
      out.maxBytes = bytes;
    } else if (key === 'highWatermark' || key === 'lowWatermark') {
      const pct = parsePercent(value);
      if (pct === null) throw new UserError(`invalid config file ${file}: "store.${key}" must be a percentage of the filesystem from 1 to 100 like 85%, got ${JSON.stringify(value)}`);
      out[key] = pct;
    } else {
      throw new UserError(`invalid config file ${file}: unknown key "store.${key}"`);
    }
  }
  return out;
}

/** 85, "85" or "85%" -> 85; null unless 1..100. */
export function parsePercent(value: unknown): number | null {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value.trim() : '';
  const m = /^(\d+(?:\.\d+)?)\s*%?$/.exec(text);
  if (!m) return null;
  const n = Number(m[1]);
  return n >= 1 && n <= 100 ? n : null;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) as Partial<T>;
}

function describe(k: string): string {
  const want = DEFAULTS[k as keyof AgentConfig];
  if (Array.isArray(want)) return 'a list of strings';
  if (typeof want === 'boolean') return 'true or false';
  if (typeof want === 'number') return 'a positive integer';
  return 'a string';
}

/** Each --trust entry is a public key or a file holding one (e.g. a publisher.pub). */
async function resolveTrust(entries: string[]): Promise<string[]> {
  const out = new Set<string>();
  for (const e of entries) {
    if (PUBKEY_RE.test(e)) { out.add(e); continue; }
    let text: string;
    try {
      text = (await fs.readFile(e, 'utf8')).trim();
    } catch {
      throw new UserError(`trusted publisher "${e}" is neither a key (ed25519:<64 hex>) nor a readable file`);
    }
    if (!PUBKEY_RE.test(text)) throw new UserError(`trusted publisher file ${e} does not hold a key of the form ed25519:<64 hex>`);
    out.add(text);
  }
  return [...out];
}

/** Socket for client commands: --socket, then JOBLET_AGENT_SOCKET, then the config's, then the default. */
export async function clientSocket(flagSocket: string | undefined, configPath: string | undefined): Promise<string> {
  if (flagSocket) return path.resolve(flagSocket);
  if (process.env.JOBLET_AGENT_SOCKET) return path.resolve(process.env.JOBLET_AGENT_SOCKET);
  if (configPath !== undefined) return (await loadConfig(configPath, {})).socket;
  try {
    return (await loadConfig(undefined, {})).socket;
  } catch {
    return DEFAULT_SOCKET;
  }
}

/** True when file exists and holds only comments and blank lines, like the default config the .deb ships. */
export async function isPlaceholderConfig(file: string): Promise<boolean> {
  const text = await fs.readFile(file, 'utf8').catch(() => null);
  return text !== null && text.split('\n').every((line) => /^\s*(#.*)?$/.test(line));
}

/** The YAML that `init` writes. */
export function renderConfig(c: ConfigFlags): string {
  const doc: Record<string, unknown> = {};
  for (const k of Object.keys(DEFAULTS) as (keyof AgentConfig)[]) {
    if (c[k] !== undefined) doc[k] = c[k];
  }
  return '# joblet-agent configuration; flags given to `joblet-agent start` override these values.\n' + YAML.stringify(doc);
}
