#!/usr/bin/env node
// joblet-agent command line: `start` runs the daemon; the other commands talk to it over its socket.
import '../polyfill.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { callDaemon, UserError } from '../control.js';
import { clientSocket, isPlaceholderConfig, loadConfig, parsePercent, renderConfig, DEFAULT_CONFIG_PATH, ZONE_RE, type ConfigFlags } from '../config.js';
import { formatBytes, printable, ProgressBar, shortId, table } from './format.js';
import { log, configureLog, errorText } from '../log.js';
import { AGENT_VERSION } from '../version.js';
import { missingDaemonFlags } from '../node-flags.js';
import { formatBinary, parseSize } from '../units.js';
import { runInfo, runWait, splitSpec, waitArgs, WAIT_OPTIONS } from './operate.js';
import { PackageError } from '../../runtime/types.js';
import { generatePublisherKeys } from '../../store/manifest.js';
import { generateFleetKey } from '../swarm/fleet-key.js';
import { COMMAND_HELP } from './help.js';
import { runRepair, runVerify } from './repair-cli.js';

const USAGE = `usage: joblet-agent <command> [options]

commands:
  init    [--dir DIR] [--fleet-key FILE] [start options]   make a fleet key, a publisher key pair and a config
  init    --join --fleet-key FILE [--trust PUBKEY-or-FILE]... [--dir DIR] [start options]
                                     a host that only receives runtimes: no publisher key
  start   [--config FILE] [--data-dir DIR] [--runtimes-dir DIR] [--socket PATH]
          [--listen MULTIADDR]... [--bootstrap MULTIADDR]... [--fleet-key FILE]
          [--trust PUBKEY-or-FILE]... [--publisher-key FILE] [--zone NAME] [--no-mdns]
          [--owner USER:GROUP] [--max-package-bytes N]
          [--max-upload-rate RATE] [--max-download-rate RATE]
          [--store-max-bytes SIZE] [--store-high-watermark PCT] [--store-low-watermark PCT]
          [--http HOST:PORT|off] [--log-format text|json] [--log-level LEVEL]
          [--repair off|auto] [--repair-interval DUR]   run the agent in the foreground
  publish PKG [--force] [--no-install] [--json]
          [--wait [--hosts N | --percent P] [--timeout DUR]]
                                     ingest a package (.tar.gz, .tgz, .tar, .zip or a directory), install it here
                                     (not with --no-install: a build host that only serves it); with --wait,
                                     return once the hosts that should install it have (exit 1 at the timeout)
  wait    NAME@VERSION [--hosts N | --percent P] [--timeout DUR] [--json]
                                     the same wait for an earlier publish (default: all such hosts, 10m)
  info    NAME[@VERSION] [--json]    a runtime's metadata, size, manifest, and which hosts have it
  list    [--json]                   installed runtimes
  status  [--json] [--watch]         this agent, its store and its runtimes
  remove  NAME[@VERSION] [--json]    uninstall a runtime
  verify  [--json]                   re-hash every stored chunk and check every installed runtime against its
                                     manifest; exit 1 if anything is corrupt, missing or different
  repair  [NAME[@VERSION]] [--json]  restore installed runtimes that differ from their manifests, from the chunks

  --version                          the agent's version and the Node version it runs on

client commands accept --socket PATH (or JOBLET_AGENT_SOCKET) and --config FILE to find the daemon.
"joblet-agent COMMAND --help" explains one command.
exit codes: 0 ok, 1 failure, 2 usage.`;

class UsageError extends Error {}

const START_OPTIONS = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
  'runtimes-dir': { type: 'string' },
  socket: { type: 'string' },
  listen: { type: 'string', multiple: true },
  bootstrap: { type: 'string', multiple: true },
  'fleet-key': { type: 'string' },
  trust: { type: 'string', multiple: true },
  'publisher-key': { type: 'string' },
  zone: { type: 'string' },
  'no-mdns': { type: 'boolean' },
  owner: { type: 'string' },
  'max-package-bytes': { type: 'string' },
  'max-upload-rate': { type: 'string' },
  'max-download-rate': { type: 'string' },
  'store-max-bytes': { type: 'string' },
  'store-high-watermark': { type: 'string' },
  'store-low-watermark': { type: 'string' },
  http: { type: 'string' },
  'log-format': { type: 'string' },
  'log-level': { type: 'string' },
  repair: { type: 'string' },
  'repair-interval': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const CLIENT_OPTIONS = {
  socket: { type: 'string' },
  config: { type: 'string' },
  json: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O, positionals: number) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (parsed.positionals.length > positionals) {
    throw new UsageError(`unexpected argument "${parsed.positionals[positionals]}"`);
  }
  return parsed;
}

function startFlags(v: Record<string, unknown>): ConfigFlags {
  const abs = (p: unknown) => (typeof p === 'string' ? path.resolve(p) : undefined);
  let maxPackageBytes: number | undefined;
  if (v['max-package-bytes'] !== undefined) {
    maxPackageBytes = Number(v['max-package-bytes']);
    if (!Number.isSafeInteger(maxPackageBytes) || maxPackageBytes <= 0) throw new UsageError('--max-package-bytes must be a positive integer');
  }
  const rate = (flag: string): number | undefined => {
    if (v[flag] === undefined) return undefined;
    const bytes = parseSize(v[flag]);
    if (bytes === null) throw new UsageError(`--${flag} must be bytes per second like 20MiB or 50MB, got "${String(v[flag])}"`);
    return bytes;
  };
  const upload = rate('max-upload-rate');
  const download = rate('max-download-rate');
  const store = storeFlags(v);
  if (typeof v.zone === 'string' && !ZONE_RE.test(v.zone)) {
    throw new UsageError(`--zone ${JSON.stringify(printable(v.zone))} is not a zone label: use 1-64 of A-Z a-z 0-9 . _ : - (starting with a letter or digit)`);
  }
  return {
    bandwidth: upload === undefined && download === undefined ? undefined : { upload, download },
    store,
    dataDir: abs(v['data-dir']),
    runtimesDir: abs(v['runtimes-dir']),
    socket: abs(v.socket),
    listen: v.listen as string[] | undefined,
    bootstrap: v.bootstrap as string[] | undefined,
    fleetKey: abs(v['fleet-key']),
    trust: (v.trust as string[] | undefined)?.map((t) => (t.startsWith('ed25519:') ? t : path.resolve(t))),
    publisherKey: abs(v['publisher-key']),
    zone: v.zone as string | undefined,
    mdns: v['no-mdns'] ? false : undefined,
    owner: v.owner as string | undefined,
    maxPackageBytes,
    http: v.http as string | undefined,
    logFormat: v['log-format'] as ConfigFlags['logFormat'],
    logLevel: v['log-level'] as ConfigFlags['logLevel'],
    repair: v.repair as ConfigFlags['repair'],
    repairInterval: v['repair-interval'] as string | undefined,
  };
}

/** --store-max-bytes 400MiB, --store-high-watermark 85%, --store-low-watermark 75%; undefined when none is given. */
function storeFlags(v: Record<string, unknown>): ConfigFlags['store'] {
  const out: NonNullable<ConfigFlags['store']> = {};
  if (v['store-max-bytes'] !== undefined) {
    const bytes = parseSize(v['store-max-bytes']);
    if (bytes === null) throw new UsageError(`--store-max-bytes must be a size like 400MiB or 2GB, got "${String(v['store-max-bytes'])}"`);
    out.maxBytes = bytes;
  }
  for (const [flag, key] of [['store-high-watermark', 'highWatermark'], ['store-low-watermark', 'lowWatermark']] as const) {
    if (v[flag] === undefined) continue;
    const pct = parsePercent(v[flag]);
    if (pct === null) throw new UsageError(`--${flag} must be a percentage of the filesystem from 1 to 100 like 85%, got "${String(v[flag])}"`);
    out[key] = pct;
  }
  return Object.keys(out).length ? out : undefined;
}

async function cmdStart(argv: string[]): Promise<void> {
  const { values } = parse(argv, START_OPTIONS, 0);
  const config = await loadConfig(values.config ? path.resolve(values.config) : undefined, startFlags(values));
  configureLog({ format: config.logFormat, level: config.logLevel });
  // Imported here so that client commands do not load the store and libp2p.
  const { Agent } = await import('../daemon/daemon.js');
  const agent = await Agent.start(config);
  log.info('started', { peer: agent.peerId, version: AGENT_VERSION, socket: config.socket, runtimesDir: config.runtimesDir,
    dataDir: config.dataDir, http: agent.httpUrl ?? 'off', node: process.version, nodeFlags: process.execArgv.join(' ') });
  const missing = missingDaemonFlags();
  if (missing.length > 0) {
    log.warn('node_flags_missing', { missing: missing.join(' '), hint: 'the agent then costs more CPU (see src/agent/node-flags.ts); start it through bin/joblet-agent or the release executable, or give node these flags' });
  }
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      log.info('stopping', { signal: sig });
      agent.stop().then(resolve, (err) => { log.error('stop_failed', { error: errorText(err) }); resolve(); });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

async function cmdInit(argv: string[]): Promise<void> {
  const { values } = parse(argv, { ...START_OPTIONS, dir: { type: 'string' }, json: { type: 'boolean' }, join: { type: 'boolean' } }, 0);
  const dir = path.resolve(values.dir ?? path.dirname(DEFAULT_CONFIG_PATH));
  // --join: a host that only receives runtimes has no publisher key, so `remove` there never claims
  // to have sent a removal that every other host would refuse.
  if (values.join) return initJoining(values, dir);
  const files = {
    fleetKey: path.join(dir, 'fleet.key'),
    publisherKey: path.join(dir, 'publisher.key'),
    publisherPub: path.join(dir, 'publisher.pub'),
    config: path.join(dir, 'config.yml'),
  };
  // A config of nothing but comments (the default one the .deb ships) is a placeholder for init to fill in.
  const placeholder = await isPlaceholderConfig(files.config);
  for (const f of Object.values(files)) {
    if (f === files.config && placeholder) continue;
    if (await fs.stat(f).then(() => true, () => false)) {
      throw new UserError(`${f} already exists; init never overwrites keys or configs: remove it or choose another --dir`);
    }
  }
  let fleetKey: string;
  if (values['fleet-key']) {
    // Joining an existing fleet: copy its secret rather than making a new one.
    fleetKey = await readFleetKey(values['fleet-key']);
  } else {
    fleetKey = generateFleetKey();
  }
  const keys = generatePublisherKeys();
  const flags = startFlags(values);
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  // 'wx' so that a file appearing meanwhile is never overwritten.
  await fs.writeFile(files.fleetKey, fleetKey + '\n', { mode: 0o600, flag: 'wx' });
  await fs.writeFile(files.publisherKey, keys.privatePem, { mode: 0o600, flag: 'wx' });
  await fs.writeFile(files.publisherPub, keys.publicKey + '\n', { mode: 0o644, flag: 'wx' });
  const config = renderConfig({
    ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)),
    fleetKey: 'fleet.key',
    publisherKey: 'publisher.key',
    trust: [keys.publicKey, ...(flags.trust ?? [])],
  });
  if (placeholder) {
    // Replaced whole by a rename, so that the placeholder is never left half written.
    const tmp = `${files.config}.init-${process.pid}`;
    await fs.writeFile(tmp, config, { mode: 0o644, flag: 'wx' });
    await fs.rename(tmp, files.config);
  } else {
    await fs.writeFile(files.config, config, { mode: 0o644, flag: 'wx' });
  }
  if (values.json) {
    console.log(JSON.stringify({ ...files, publisher: keys.publicKey }, null, 2));
  } else {
    console.log(`wrote ${files.fleetKey}, ${files.publisherKey}, ${files.publisherPub} and ${files.config}`);
    console.log(`publisher key: ${keys.publicKey}`);
    if (values['fleet-key']) {
      console.log('other hosts trust this key only once publisher.pub is in their trust lists; a host that only receives runtimes is made with --join');
    }
    console.log(`start the agent with: joblet-agent start --config ${files.config}`);
  }
}

async function initJoining(values: Record<string, unknown>, dir: string): Promise<void> {
  if (!values['fleet-key']) throw new UsageError('init --join needs --fleet-key FILE: the fleet key of the fleet to join');
  if (values['publisher-key']) throw new UsageError('init --join makes a host without a publisher key; drop --publisher-key');
  const files = { fleetKey: path.join(dir, 'fleet.key'), config: path.join(dir, 'config.yml') };
  for (const f of Object.values(files)) {
    if (await fs.stat(f).then(() => true, () => false)) {
      throw new UserError(`${f} already exists; init never overwrites keys or configs: remove it or choose another --dir`);
    }
  }
  const fleetKey = await readFleetKey(String(values['fleet-key']));
  const flags = startFlags(values);
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  await fs.writeFile(files.fleetKey, fleetKey + '\n', { mode: 0o600, flag: 'wx' });
  const config = renderConfig({
    ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)),
    fleetKey: 'fleet.key',
    trust: flags.trust ?? [],
  });
  await fs.writeFile(files.config, config, { mode: 0o644, flag: 'wx' });
  if (values.json) {
    console.log(JSON.stringify({ ...files, publisher: null }, null, 2));
    return;
  }
  console.log(`wrote ${files.fleetKey} and ${files.config} (no publisher key: this host receives runtimes, it does not publish)`);
  if (!flags.trust?.length) console.log('no --trust given: this host installs nothing until a publisher key is added to "trust" in its config');
  console.log(`start the agent with: joblet-agent start --config ${files.config}`);
}

async function readFleetKey(file: string): Promise<string> {
  const fleetKey = (await fs.readFile(path.resolve(file), 'utf8').catch((e: Error) => {
    throw new UserError(`cannot read fleet key ${file}: ${e.message}`);
  })).trim();
  if (!/^[0-9a-f]{64}$/.test(fleetKey)) throw new UserError(`fleet key ${file} does not hold 64 hex characters`);
  return fleetKey;
}

async function cmdPublish(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, {
    ...CLIENT_OPTIONS, ...WAIT_OPTIONS, force: { type: 'boolean' }, 'no-install': { type: 'boolean' }, wait: { type: 'boolean' },
  }, 1);
  if (positionals.length !== 1) throw new UsageError('publish needs exactly one package path');
  // Resolved here, with the client's view of the filesystem: the daemon follows no symlink on the way.
  const waiting = waitArgs(values, (m) => new UsageError(m));
  if (!values.wait && Object.keys(waiting).length) throw new UsageError('--hosts, --percent and --timeout go with --wait');
  // Checked here too so that a typo gets an answer without a daemon round trip.
  const pkg = await fs.realpath(path.resolve(positionals[0])).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new UserError(`package ${path.resolve(positionals[0])} does not exist`);
    throw new UserError(`cannot resolve package path ${path.resolve(positionals[0])}: ${err.message}`);
  });
  const socket = await clientSocket(values.socket, values.config);
  const bar = process.stderr.isTTY && !values.json ? new ProgressBar(process.stderr, 'publishing') : null;
  let result: Record<string, unknown>;
  try {
    const args = { path: pkg, force: values.force === true, noInstall: values['no-install'] === true };
    result = (await callDaemon(socket, { cmd: 'publish', args }, (p) => {
      bar?.update(Number(p.read), Number(p.total));
    })) as Record<string, unknown>;
  } finally {
    bar?.finish();
  }
  if (!values.json) {
    console.log(`${result.unchanged ? 'unchanged' : 'published'} ${result.name}@${result.version}`);
    console.log(`manifest  ${result.manifestId}`);
    console.log(`path      ${result.path ?? (result.noInstall ? '(not installed here: --no-install)' : '(not installed here: this machine\'s architecture is excluded)')}`);
    console.log(`chunks    ${result.chunks} (${result.newChunks} new, ${formatBytes(Number(result.storedNewBytes))} stored)`);
    for (const w of (result.warnings as string[] | undefined) ?? []) console.error(`joblet-agent: warning: ${w}`);
  }
  if (values.wait) {
    const wait = await runWait(socket, { manifestId: result.manifestId }, waiting, values.json === true);
    if (values.json) console.log(JSON.stringify({ ...result, wait }, null, 2));
  } else if (values.json) {
    console.log(JSON.stringify(result, null, 2));
  }
}

async function cmdWait(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, { ...CLIENT_OPTIONS, ...WAIT_OPTIONS }, 1);
  if (positionals.length !== 1) throw new UsageError('wait needs NAME@VERSION');
  const { name, version } = splitSpec(positionals[0], (m) => new UsageError(m));
  if (version === undefined) throw new UsageError(`wait needs NAME@VERSION, got "${positionals[0]}"`);
  const args = waitArgs(values, (m) => new UsageError(m));
  const res = await runWait(await clientSocket(values.socket, values.config), { name, version }, args, values.json === true);
  if (values.json) console.log(JSON.stringify(res, null, 2));
}

async function cmdInfo(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, CLIENT_OPTIONS, 1);
  if (positionals.length !== 1) throw new UsageError('info needs NAME or NAME@VERSION');
  const { name, version } = splitSpec(positionals[0], (m) => new UsageError(m));
  await runInfo(await clientSocket(values.socket, values.config), name, version, values.json === true);
}

interface InstallRow { name: string; version: string; manifestId: string; path: string; sizeBytes: number; installedAt: string }

function runtimesTable(rows: InstallRow[]): string {
  if (rows.length === 0) return 'no runtimes installed';
  return table(['NAME', 'VERSION', 'SIZE', 'MANIFEST', 'PATH'],
    rows.map((r) => [r.name, r.version, formatBytes(r.sizeBytes), shortId(r.manifestId), r.path]));
}

async function cmdList(argv: string[]): Promise<void> {
  const { values } = parse(argv, CLIENT_OPTIONS, 0);
  const rows = (await callDaemon(await clientSocket(values.socket, values.config), { cmd: 'list' })) as InstallRow[];
  console.log(values.json ? JSON.stringify(rows, null, 2) : runtimesTable(rows));
}

function short(peerId: string): string {
  return peerId.length > 16 ? `…${peerId.slice(-10)}` : peerId;
}

function renderBandwidth(b: Record<string, any>): string {
  const one = (label: string, x: any) =>
    `${label} ${formatBytes(x.rateBytesPerSecond)}/s (cap ${x.limitBytesPerSecond === null ? 'none' : `${formatBinary(x.limitBytesPerSecond)}/s`})`;
  return `${one('up', b.upload)}, ${one('down', b.download)}`;
}

function renderRepair(r: Record<string, any> | undefined): string {
  if (!r) return '-';
  const mode = r.mode === 'auto' ? `auto, every ${r.intervalSeconds} s` : 'off (verify and repair on command)';
  const c = r.lastCheck;
  const last = c ? `; last check ${c.at}: ${c.runtimes} runtimes, ${c.drifted} differed` : '; no check yet';
  const recent = r.recent.length ? `; recent: ${r.recent.slice(0, 3).map((o: any) => `${o.name}@${o.version} ${o.result}`).join(', ')}` : '';
  return `${mode}${last}${recent}${r.chunksDropped ? `; ${r.chunksDropped} corrupt chunk files dropped` : ''}`;
}

/** The disk budget lines of `status`: usage against the budget and the watermarks, GC, what waits for space. */
function renderDisk(st: Record<string, any>): string[] {
  const fsLine = st.filesystem
    ? `; the store is ${st.filesystem.storePercent} % of its filesystem (${st.filesystem.usedPercent} % used; watermarks ${st.highWatermarkPercent >= 100 ? 'off' : `${st.highWatermarkPercent} % / ${st.lowWatermarkPercent} %`})`
    : '';
  const lines = [`disk       ${formatBytes(st.usageBytes ?? 0)} used of ${st.maxBytes === null ? 'no budget' : `a budget of ${formatBinary(st.maxBytes)}`}${fsLine}`];
  const last = st.gc.lastRun;
  lines.push(`gc         ${st.gc.files} files, ${formatBytes(st.gc.freedBytes)} freed in ${st.gc.runs} runs, ${st.gc.evictedManifests} superseded manifests evicted` +
    (last ? `; last ${last.at} (${last.reason}): ${formatBytes(last.bytes)}` : ''));
  for (const w of st.waitingForSpace) lines.push(`waiting    ${w.name}@${w.version}: ${w.reason}`);
  return lines;
}

function renderStatus(s: Record<string, any>): string {
  const lines = [
    `agent      ${s.peerId} (joblet-agent ${s.version}, ${s.arch}${s.zone ? `, zone ${printable(String(s.zone))}` : ''}, up ${s.uptimeSeconds}s)`,
    `addresses  ${s.addresses.length ? s.addresses.join(' ') : '(none)'}`,
    `data dir   ${s.dataDir}`,
    `runtimes   ${s.runtimesDir}`,
    `publisher  ${s.publisher ?? '(none: this agent cannot publish)'}`,
    `http       ${s.http ? `${s.http} (dashboard; ${s.http}metrics for Prometheus)` : '(off)'}`,
    `store      ${s.store.chunks} chunks, ${formatBytes(s.store.bytes)}, ${s.store.manifests} manifests`,
    `bandwidth  ${renderBandwidth(s.bandwidth)}`,
    `repair     ${renderRepair(s.repair)}`,
    ...renderDisk(s.store),
    '',
    runtimesTable(s.runtimes),
  ];
  const w = s.swarm;
  if (!w) {
    lines.push('', 'swarm      (not joined: no fleet key configured)');
    return lines.join('\n');
  }
  lines.push('', `peers (${w.peers.length})`);
  if (w.peers.length) {
    lines.push(table(['PEER', 'RTT', 'ZONE', 'ADDRESS'], w.peers.map((p: any) => [
      short(p.peerId) + (p.banned ? ' (avoided)' : ''), p.rttMs === null ? '-' : `${p.rttMs} ms`, p.zone === null ? '-' : printable(String(p.zone)), p.address,
    ])));
  }
  lines.push('', `transfers (${w.transfers.length})`);
  for (const tr of w.transfers) {
    const pct = tr.bytesTotal ? Math.floor((100 * tr.bytesHave) / tr.bytesTotal) : 0;
    const sources = tr.sources.map((x: any) => `${short(x.peer)} ${formatBytes(x.bytes)}`).join(', ') || 'none yet';
    lines.push(`  ${tr.name}@${tr.version}  ${pct}%  ${tr.chunksHave}/${tr.chunks} chunks  ${formatBytes(tr.bytesHave)}/${formatBytes(tr.bytesTotal)}  ${formatBytes(tr.rateBps)}/s  from: ${sources}`);
  }
  lines.push('', `fleet (${w.fleetHostsSeen} hosts seen)`);
  if (w.fleet.length) {
    lines.push(table(['NAME', 'VERSION', 'HOSTS', 'HERE', 'MANIFEST'], w.fleet.map((f: any) => [
      f.name, f.version, String(f.hosts.length), f.installedHere ? 'installed' : f.skippedHere ? `skipped: ${f.skippedHere}` : f.waitingForSpaceHere ? `waiting for space (${f.waitingForSpaceHere.kind})` : 'not yet', shortId(f.manifestId),
    ])));
  }
  lines.push('', `uploads    ${w.uploads.chunksServed} chunks, ${formatBytes(w.uploads.bytesServed)} served; ${w.uploads.active} active`);
  if (w.corruptChunksReceived) lines.push(`corrupt    ${w.corruptChunksReceived} corrupt chunks received (their senders are avoided)`);
  return lines.join('\n');
}

async function cmdStatus(argv: string[]): Promise<void> {
  const { values } = parse(argv, { ...CLIENT_OPTIONS, watch: { type: 'boolean' } }, 0);
  const socket = await clientSocket(values.socket, values.config);
  if (!values.watch) {
    const s = await callDaemon(socket, { cmd: 'status' });
    console.log(values.json ? JSON.stringify(s, null, 2) : renderStatus(s as Record<string, unknown>));
    return;
  }
  // --watch: redraw in place on a TTY, one JSON document per line otherwise; until Ctrl-C.
  for (;;) {
    const s = await callDaemon(socket, { cmd: 'status' });
    if (values.json) console.log(JSON.stringify(s));
    else if (process.stdout.isTTY) process.stdout.write(`\x1b[H\x1b[J${renderStatus(s as Record<string, unknown>)}\n`);
    else console.log(renderStatus(s as Record<string, unknown>) + '\n');
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function cmdRemove(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, CLIENT_OPTIONS, 1);
  if (positionals.length !== 1) throw new UsageError('remove needs NAME or NAME@VERSION');
  const spec = positionals[0];
  const at = spec.indexOf('@');
  const name = at < 0 ? spec : spec.slice(0, at);
  const version = at < 0 ? undefined : spec.slice(at + 1);
  if (!name || version === '') throw new UsageError(`"${spec}" is not NAME or NAME@VERSION`);
  const res = (await callDaemon(await clientSocket(values.socket, values.config), { cmd: 'remove', args: { name, version } })) as
    { removed: { name: string; version: string; path: string }[]; freedBytes: number; signed?: boolean; publisherTrusted?: boolean; publisher?: string };
  if (values.json) { console.log(JSON.stringify(res, null, 2)); return; }
  for (const r of res.removed) console.log(`removed ${r.name}@${r.version} (${r.path})`);
  if (res.removed.length === 0) console.log(`${spec} is not installed here`);
  console.log(`freed ${formatBytes(res.freedBytes)} of chunks`);
  if (res.signed && res.publisherTrusted === false) {
    console.log(`a signed removal of ${spec} was sent, but this agent's publisher key ${res.publisher} is not in its own trust list, ` +
      'so the other hosts most likely do not trust it either and will ignore the removal: it applied here only. ' +
      'Remove it from a trusted publisher, or add this key to the fleet\'s trust lists');
  } else if (res.signed) console.log(`a signed removal of ${spec} was sent to the fleet`);
  else if (res.signed === false) console.log('removed on this host only (this agent has no publisher key); the swarm will not reinstall it here');
}

async function cmdVerify(argv: string[]): Promise<void> {
  const { values } = parse(argv, CLIENT_OPTIONS, 0);
  await runVerify(await clientSocket(values.socket, values.config), values.json === true);
}

async function cmdRepair(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, CLIENT_OPTIONS, 1);
  const spec = positionals[0] === undefined ? undefined : splitSpec(positionals[0], (m) => new UsageError(m));
  await runRepair(await clientSocket(values.socket, values.config), spec?.name, spec?.version, values.json === true);
}

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  init: cmdInit, start: cmdStart, publish: cmdPublish, list: cmdList, status: cmdStatus, remove: cmdRemove, verify: cmdVerify,
  wait: cmdWait, info: cmdInfo, repair: cmdRepair,
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || (cmd === 'help' && rest.length === 0)) {
    console.log(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  // `joblet-agent COMMAND --help` and `joblet-agent help COMMAND`: that command's usage, exit 0.
  const helpFor = cmd === 'help' ? rest[0] : rest.includes('--help') || rest.includes('-h') ? cmd : undefined;
  if (helpFor !== undefined) {
    const text = COMMAND_HELP[helpFor];
    if (text === undefined) {
      console.error(`joblet-agent: unknown command "${helpFor}"\n\n${USAGE}`);
      return 2;
    }
    console.log(text);
    return 0;
  }
  if (cmd === '--version') { console.log(`joblet-agent ${AGENT_VERSION} (node ${process.version})`); return 0; }
  const run = COMMANDS[cmd];
  if (!run) {
    console.error(`joblet-agent: unknown command "${cmd}"\n\n${USAGE}`);
    return 2;
  }
  try {
    await run(rest);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`joblet-agent ${cmd}: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof UserError || err instanceof PackageError) {
      console.error(`joblet-agent: ${err.message}`);
      return 1;
    }
    // Unexpected: still one sentence for the operator; the stack only when asked for.
    const detail = err instanceof Error ? (process.env.JOBLET_AGENT_DEBUG ? err.stack ?? err.message : err.message) : String(err);
    console.error(`joblet-agent: ${detail}`);
    return 1;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
