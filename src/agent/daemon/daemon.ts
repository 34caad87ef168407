// The daemon: owns the store and the runtimes dir, and answers the control API.
import fs from 'node:fs/promises';
import path from 'node:path';
import type net from 'node:net';
import type { KeyObject } from 'node:crypto';
import { RuntimesDir, parseOwner } from '../../runtime/install.js';
import { DEFAULT_LIMITS } from '../../runtime/types.js';
import { Store } from '../../store/store.js';
import { loadPrivateKey, manifestChunks, publicKeyOf } from '../../store/manifest.js';
import { CorruptChunkError, type InstallRecord } from '../../store/types.js';
import { serveControl, UserError, type ControlRequest } from '../control.js';
import type { AgentConfig } from '../config.js';
import { Mutex } from '../mutex.js';
import { publishPackage } from './publish.js';
import { socketGroupAccess } from './client-access.js';
import { log, errorText } from '../log.js';
import { fleetKeyFromFile, loadOrCreatePeerKey } from '../swarm/p2p-node.js';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Swarm } from '../swarm/swarm.js';
import { AGENT_VERSION } from '../version.js';
import { RateLimiter } from '../../protocol/rate-limit.js';
import { aloneView, waitForRollout, waitRequest } from './wait.js';
import { pickManifest, runtimeInfo } from './info.js';
import { machineArch } from '../../runtime/runtime-yml.js';
import type { FleetHostView } from '../swarm/swarm.js';
import { startHttp, type HttpEndpoint } from './http/server.js';
import { TreeKeeper } from './auto-repair.js';
import { parseDuration } from '../units.js';
import { DiskBudget } from '../swarm/disk-budget.js';
import { markRunning, markStopped } from './clean-stop.js';
import { recoverAtStart } from '../install/recover-at-start.js';


export class Agent {
  private server: net.Server | null = null;
  private swarm: Swarm | null = null;
  private http: HttpEndpoint | null = null;
  private readonly mutex = new Mutex();
  private readonly startedAt = Date.now();
  /** Host-wide bandwidth caps; uncapped limiters still measure, for `status`. */
  private readonly uploadLimit: RateLimiter;
  private readonly downloadLimit: RateLimiter;
  /** store.maxBytes and the watermarks: admits downloads, runs GC, reports usage. */
  readonly budget: DiskBudget;
  /** Ends long control requests (`wait`) when the daemon stops. */
  private readonly stopping = new AbortController();
  /** verify of installed trees, repair, repair: auto, and fetching again chunks dropped as corrupt. */
  private readonly keeper: TreeKeeper;
  /** The start-time recovery finished (recover-at-start.ts); only then may a stop count as clean. */
  private recovered = false;
  private constructor(
    readonly config: AgentConfig,
    readonly store: Store,
    readonly runtimes: RuntimesDir,
    private readonly publisherKey: KeyObject | null,
    private readonly owner: { uid: number; gid: number } | undefined,
    readonly peerId: string,
  ) {
    this.uploadLimit = new RateLimiter(config.bandwidth.upload);
    this.downloadLimit = new RateLimiter(config.bandwidth.download);
    this.keeper = new TreeKeeper({
      install: { store, runtimes, limits: this.limits(), owner }, lock: (fn) => this.mutex.run(fn), swarm: () => this.swarm,
      mode: config.repair, intervalMs: parseDuration(config.repairInterval)!,
    });
    store.chunks.onCorrupt = (id, error) => this.keeper.chunkDropped(id, error);
    this.budget = new DiskBudget(store, config.runtimesDir, config.store, (fn) => this.mutex.run(fn));
  }

  static async start(config: AgentConfig): Promise<Agent> {
    for (const [what, dir, mode] of [['data dir', config.dataDir, 0o700], ['runtimes dir', config.runtimesDir, 0o755]] as const) {
      await fs.mkdir(dir, { recursive: true, mode }).catch((err: Error) => {
        throw new UserError(`cannot create the ${what} ${dir}: ${err.message}`);
      });
    }
    const publisherKey = config.publisherKey ? await readPublisherKey(config.publisherKey) : null;
    const owner = config.owner ? await parseOwner(config.owner) : undefined;
    const peerKey = await loadOrCreatePeerKey(path.join(config.dataDir, 'peer.key'));
    const peerId = peerIdFromPrivateKey(peerKey).toString();
    const store = await openStore(config.dataDir);
    const agent = new Agent(config, store, new RuntimesDir(config.runtimesDir), publisherKey, owner, peerId);
    try {
      const unclean = await markRunning(config.dataDir);
      await recoverAtStart({ store, runtimes: agent.runtimes, limits: agent.limits(), owner }, { unclean });
      agent.recovered = true;
      await agent.forgetVanishedInstalls();
      agent.server = await serveControl(config.socket, (req, progress) => agent.handle(req, progress));
      agent.http = await startHttp(config.http, agent); // before the swarm, so /readyz can say it is still joining
      await agent.startSwarm();
      agent.keeper.start();
      return agent;
    } catch (err) {
      await agent.stop();
      throw err;
    }
  }

  /** Join the fleet; without a fleet key the agent works alone, which `status` shows. */
  private async startSwarm(): Promise<void> {
    const c = this.config;
    if (!c.fleetKey) {
      log.warn('working_alone', { hint: 'no fleet key configured: set fleetKey in the config (or --fleet-key FILE) to join a fleet' });
      return;
    }
    let fleetKey: Buffer;
    try {
      fleetKey = await fleetKeyFromFile(c.fleetKey);
    } catch (err) {
      throw new UserError((err as Error).message);
    }
    const trust = [...c.trust];
    if (this.publisherKey && !trust.includes(publicKeyOf(this.publisherKey))) {
      trust.push(publicKeyOf(this.publisherKey));
      log.warn('publisher_untrusted', { publisher: publicKeyOf(this.publisherKey), hint: 'other hosts most likely ignore what this agent publishes and removes: trust this key on them, or use init --join on hosts that only receive' });
    }
    this.swarm = await Swarm.start({
      peerKeyPath: path.join(c.dataDir, 'peer.key'), fleetKey, listen: c.listen, bootstrap: c.bootstrap, mdns: c.mdns,
      zone: c.zone, trust, publisherKey: this.publisherKey, maxUploads: c.maxUploads, store: this.store,
      install: { store: this.store, runtimes: this.runtimes, limits: this.limits(), owner: this.owner },
      mutex: this.mutex, fault: testFault(), uploadLimit: this.uploadLimit, downloadLimit: this.downloadLimit,
      budget: this.budget,
    });
    log.info('joined_fleet', { peer: this.swarm.peerId, addresses: this.swarm.addresses(), zone: c.zone });
  }

  /** The read-only HTTP endpoint's URL; null when --http off. */
  get httpUrl(): string | null {
    return this.http?.url ?? null;
  }

  /** For /readyz: null when this agent can do its job, else what is wrong. */
  async readiness(): Promise<string | null> {
    try {
      await this.store.index.getMeta('tombstones');
    } catch (err) {
      return `the store in ${this.config.dataDir} does not answer (${(err as Error).message}); restart the agent`;
    }
    if (this.config.fleetKey && !this.swarm) return 'not in the fleet yet (the swarm is starting or stopping)';
    const dir = this.config.runtimesDir;
    try {
      if (!(await fs.stat(dir)).isDirectory()) return `the runtimes dir ${dir} is not a directory; move it away and restart the agent`;
      await fs.access(dir, fs.constants.W_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return `the runtimes dir ${dir} does not exist; create it (or restart the agent, which creates it)`;
      return `the runtimes dir ${dir} is not writable (${code ?? (err as Error).message}); check its permissions and mount`;
    }
    return null;
  }

  async stop(): Promise<void> {
    const endpoint = this.http;
    this.http = null;
    if (endpoint) await endpoint.close();
    const swarm = this.swarm;
    this.swarm = null;
    this.stopping.abort();
    this.keeper.stop();
    this.uploadLimit.close();
    this.downloadLimit.close();
    this.budget.stop();
    if (swarm) await swarm.stop().catch((err) => log.error('leave_failed', { error: errorText(err) }));
    const server = this.server;
    this.server = null;
    if (server) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fs.rm(this.config.socket, { force: true });
    }
    // Let a publish in progress finish or fail before the store closes under it.
    await this.keeper.idle();
    await this.mutex.run(async () => {});
    await this.store.close();
    // A start that failed before its recovery finished leaves the marker: the next start checks again.
    if (this.recovered) await markStopped(this.config.dataDir);
  }

  private async handle(req: ControlRequest, progress: (p: Record<string, unknown>) => void): Promise<unknown> {
    const args = req.args ?? {};
    switch (req.cmd) {
      case 'publish':
        return this.publish(String(args.path ?? ''), args.force === true, progress, args.noInstall === true);
      case 'wait':
        return this.waitFor(args, progress);
      case 'info':
        return this.info(String(args.name ?? ''), typeof args.version === 'string' ? args.version : undefined);
      case 'list':
        return this.store.index.listInstalls();
      case 'status':
        return this.status();
      case 'verify':
        return this.verify();
      case 'repair':
        return this.keeper.repair(typeof args.name === 'string' ? args.name : undefined, typeof args.version === 'string' ? args.version : undefined);
      case 'remove':
        return this.remove(String(args.name ?? ''), typeof args.version === 'string' ? args.version : undefined);
      default:
        throw new UserError(`unknown control command "${req.cmd}"`);
    }
  }

  private async publish(pkg: string, force: boolean, progress: (p: Record<string, unknown>) => void, noInstall = false) {
    if (!this.publisherKey) {
      throw new UserError('this agent has no publisher key; set publisherKey in its config or start it with --publisher-key FILE');
    }
    if (!path.isAbsolute(pkg)) throw new UserError(`package path must be absolute, got "${pkg}"`);
    const publisherKey = this.publisherKey;
    return this.mutex.run(async () => {
      let last = 0;
      const access = await socketGroupAccess(this.config.socket);
      const result = await publishPackage(
        { store: this.store, runtimes: this.runtimes, publisherKey, limits: this.limits(), owner: this.owner, access },
        pkg,
        {
          force,
          noInstall,
          onProgress: (read, total) => {
            const now = Date.now();
            if (now - last >= 100 || read === total) { last = now; progress({ read, total }); }
          },
        },
      );
      log.info(result.unchanged ? 'publish_unchanged' : 'published', {
        name: result.name, version: result.version, manifestId: result.manifestId, chunks: result.chunks, newChunks: result.newChunks,
      });
      if (this.removalReach().publisherTrusted === false) {
        result.warnings.push(`this agent's publisher key ${publicKeyOf(publisherKey)} is not in its own trust list: other hosts most likely do not trust it and will not install this runtime`);
      }
      for (const w of result.warnings) log.warn('publish_warning', { name: result.name, version: result.version, warning: w });
      const { signed, ...rest } = result;
      if (!result.unchanged) void this.swarm?.announcePublished(signed);
      return rest;
    }).then(async (rest) => {
      // After the lock: GC takes it. A forced publish leaves the replaced version's chunks as garbage.
      if (rest.unchanged) return rest;
      const protect = this.swarm ? await this.swarm.protectedManifests() : new Set((await this.store.index.listInstalls()).map((r) => r.manifestId));
      const gc = await this.budget.tidy(protect.add(rest.manifestId), `published ${rest.name}@${rest.version}`);
      const max = this.budget.budget.maxBytes;
      if (gc && max !== null && gc.after.bytes > max) {
        // A publish is not refused for the budget (the package is already read): say that the store is over it.
        const w = `the store now takes ${gc.after.bytes} bytes, over its budget of ${max} (store.maxBytes): GC could not evict enough, since installed and published runtimes are kept`;
        rest.warnings.push(w);
        log.warn('publish_warning', { name: rest.name, version: rest.version, warning: w });
      }
      return rest;
    });
  }

  /** The fleet as seen from here; alone (no fleet key), just this host. */
  private fleetView(): Promise<FleetHostView[]> {
    return this.swarm ? this.swarm.fleetHosts() : aloneView(this.store, this.peerId, this.config.zone);
  }

  private async waitFor(args: Record<string, unknown>, progress: (p: Record<string, unknown>) => void) {
    const { sm, goal, timeoutMs } = waitRequest(await this.store.index.listManifests(), args);
    log.info('wait_started', { name: sm.manifest.runtime.name, version: sm.manifest.runtime.version, manifestId: sm.id, timeoutSeconds: timeoutMs / 1000 });
    return waitForRollout(sm, () => this.fleetView(), goal, timeoutMs, progress, this.stopping.signal);
  }

  private async info(name: string, version: string | undefined) {
    if (!name) throw new UserError('info needs NAME or NAME@VERSION');
    const all = await this.store.index.listManifests();
    const sm = pickManifest(all, name, version);
    const install = await this.store.index.getInstall(sm.manifest.runtime.name, sm.manifest.runtime.version);
    return runtimeInfo(sm, all, await this.fleetView(), install);
  }

  private async remove(name: string, version: string | undefined) {
    if (!name) throw new UserError('remove needs NAME or NAME@VERSION');
    // On a publisher this also removes the runtime from hosts where it is not installed here.
    if (this.swarm) return { ...(await this.swarm.removeRuntime(name, version ?? null)), ...this.removalReach() };
    return this.mutex.run(async () => {
      const all = await this.store.index.listInstalls();
      const victims = all.filter((r) => r.name === name && (version === undefined || r.version === version));
      if (victims.length === 0) throw new UserError(`${version ? `${name}@${version}` : name} is not installed`);
      for (const r of victims) {
        await this.runtimes.remove(r.name, r.version);
        await this.store.index.deleteInstall(r.name, r.version);
        const stillUsed = (await this.store.index.listInstalls()).some((o) => o.manifestId === r.manifestId);
        if (!stillUsed) await this.store.index.deleteManifest(r.manifestId);
        log.info('removed', { name: r.name, version: r.version, path: r.path });
      }
      const gc = await this.store.gc({ chunkGraceMs: 0 });
      this.budget.freed(gc.removed, gc.bytes, `removed ${victims.map((r) => `${r.name}@${r.version}`).join(', ')}`);
      return { removed: victims.map((r) => ({ name: r.name, version: r.version, path: r.path })), freedBytes: gc.bytes };
    });
  }

  /**
   * Whether a removal signed here can reach the fleet. The daemon trusts its own key locally (startSwarm),
   * so only the configured trust list tells whether this key is a fleet publisher: a key missing from it is
   * most likely in no other host's list either, and a removal it signs applies here only.
   */
  private removalReach(): { publisher: string | null; publisherTrusted: boolean | null } {
    if (!this.publisherKey) return { publisher: null, publisherTrusted: null };
    const key = publicKeyOf(this.publisherKey);
    return { publisher: key, publisherTrusted: this.config.trust.includes(key) };
  }

  /**
   * Re-hash every chunk that a stored manifest references (a corrupt one is deleted and fetched again), and
   * check every installed tree against its manifest.
   */
  private async verify() {
    const runtimes = await this.keeper.verifyAll(true);
    const ids = new Set<string>();
    for (const sm of await this.store.index.listManifests()) for (const c of manifestChunks(sm.manifest)) ids.add(c.id);
    const corrupt: { id: string; error: string }[] = [];
    const missing: string[] = [];
    for (const id of ids) {
      try {
        await this.store.chunks.get(id);
      } catch (err) {
        if (err instanceof CorruptChunkError) corrupt.push({ id, error: err.message });
        else if ((err as NodeJS.ErrnoException).code === 'ENOENT') missing.push(id);
        else throw err;
      }
    }
    if (corrupt.length) {
      log.error('verify_corrupt', { count: corrupt.length, chunks: corrupt.map((c) => c.id),
        hint: `check the disk holding ${this.config.dataDir}; the corrupt chunk files were deleted and are fetched again from the fleet` });
    }
    return { checked: ids.size, corrupt, missing, runtimes };
  }

  async status() {
    const [disk, runtimes, manifests] = await Promise.all([
      this.budget.status(), this.store.index.listInstalls(), this.store.index.listManifests(),
    ]);
    return {
      version: AGENT_VERSION,
      peerId: this.peerId,
      addresses: this.swarm?.addresses() ?? [],
      swarm: this.swarm ? await this.swarm.status() : null,
      arch: machineArch(),
      zone: this.config.zone,
      dataDir: this.config.dataDir,
      runtimesDir: this.config.runtimesDir,
      socket: this.config.socket,
      http: this.httpUrl,
      publisher: this.publisherKey ? publicKeyOf(this.publisherKey) : null,
      trust: this.config.trust,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      memory: memoryNow(),
      bandwidth: { upload: this.uploadLimit.stats(), download: this.downloadLimit.stats() },
      store: { ...disk, manifests: manifests.length },
      runtimes,
      repair: this.keeper.status(),
    };
  }

  private limits() {
    return { ...DEFAULT_LIMITS, maxUnpackedBytes: this.config.maxPackageBytes };
  }

  /** An operator may delete a runtime by hand; the index must not keep claiming it is installed. */
  private async forgetVanishedInstalls(): Promise<void> {
    for (const r of await this.store.index.listInstalls()) {
      const there = await fs.stat(path.join(r.path, 'runtime.yml')).then(() => true, () => false);
      if (!there) {
        log.warn('install_vanished', { name: r.name, version: r.version, path: r.path, hint: 'the runtime was deleted by hand; its install record is forgotten' });
        await this.store.index.deleteInstall(r.name, r.version);
      }
    }
  }
}

/** The daemon's own memory, so an operator can see what it costs on the host. */
function memoryNow() {
  const m = process.memoryUsage();
  return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external, arrayBufferBytes: m.arrayBuffers };
}

/** TEST ONLY: JOBLET_AGENT_TEST_FAULT=corrupt or slow:MS makes this agent a bad or slow chunk server. */
function testFault(): { corrupt?: boolean; delayMs?: number } | undefined {
  const v = process.env.JOBLET_AGENT_TEST_FAULT;
  if (!v) return undefined;
  log.warn('test_fault_active', { fault: v });
  if (v === 'corrupt') return { corrupt: true };
  const m = /^slow:(\d+)$/.exec(v);
  if (m) return { delayMs: Number(m[1]) };
  throw new UserError(`JOBLET_AGENT_TEST_FAULT must be "corrupt" or "slow:MS", got "${v}"`);
}

async function readPublisherKey(file: string): Promise<KeyObject> {
  let pem: string;
  try {
    pem = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read publisher key ${file}: ${(err as Error).message}`);
  }
  try {
    return loadPrivateKey(pem);
  } catch {
    throw new UserError(`publisher key ${file} is not an Ed25519 private key in PEM form`);
  }
}

async function openStore(dataDir: string): Promise<Store> {
  try {
    return await Store.open(dataDir);
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string; message?: string }; message: string };
    const text = `${e.message} ${e.cause?.message ?? ''}`;
    if (/lock/i.test(text) || e.cause?.code === 'LEVEL_LOCKED') {
      throw new UserError(`data dir ${dataDir} is in use by another joblet-agent`);
    }
    throw new UserError(`cannot open the store in ${dataDir}: ${e.message}`);
  }
}

export type { InstallRecord };
