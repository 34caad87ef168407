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
import { log } from '../log.js';
import { fleetKeyFromFile, loadOrCreatePeerKey } from '../swarm/p2p-node.js';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { Swarm } from '../swarm/swarm.js';
import { AGENT_VERSION } from '../version.js';
import { RateLimiter } from '../../protocol/rate-limit.js';
import { aloneView, waitForRollout, waitRequest } from './wait.js';
import { pickManifest, runtimeInfo } from './info.js';
import { machineArch } from '../../runtime/runtime-yml.js';
import type { FleetHostView } from '../swarm/swarm.js';


export class Agent {
  private server: net.Server | null = null;
  private swarm: Swarm | null = null;
  private readonly mutex = new Mutex();
  private readonly startedAt = Date.now();
  /** Host-wide bandwidth caps; uncapped limiters still measure, for `status`. */
  private readonly uploadLimit: RateLimiter;
  private readonly downloadLimit: RateLimiter;
  /** Ends long control requests (`wait`) when the daemon stops. */
  private readonly stopping = new AbortController();
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
      await agent.runtimes.cleanupLeftovers();
      await agent.forgetVanishedInstalls();
      agent.server = await serveControl(config.socket, (req, progress) => agent.handle(req, progress));
      await agent.startSwarm();
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
      log('no fleet key configured: this agent works alone (set fleetKey in the config to join a fleet)');
      return;
    }
    let fleetKey: Buffer;
    try {
      fleetKey = await fleetKeyFromFile(c.fleetKey);
    } catch (err) {
      throw new UserError((err as Error).message);
    }
    const trust = [...c.trust];
    if (this.publisherKey && !trust.includes(publicKeyOf(this.publisherKey))) trust.push(publicKeyOf(this.publisherKey));
    this.swarm = await Swarm.start({
      peerKeyPath: path.join(c.dataDir, 'peer.key'), fleetKey, listen: c.listen, bootstrap: c.bootstrap, mdns: c.mdns,
      zone: c.zone, trust, publisherKey: this.publisherKey, maxUploads: c.maxUploads, store: this.store,
      install: { store: this.store, runtimes: this.runtimes, limits: this.limits(), owner: this.owner },
      mutex: this.mutex, fault: testFault(), uploadLimit: this.uploadLimit, downloadLimit: this.downloadLimit,
    });
    log(`joined the fleet as ${this.swarm.peerId} on ${this.swarm.addresses().join(' ') || '(no addresses)'}`);
  }

  async stop(): Promise<void> {
    const swarm = this.swarm;
    this.swarm = null;
    this.stopping.abort();
    this.uploadLimit.close();
    this.downloadLimit.close();
    if (swarm) await swarm.stop().catch((err) => log(`error while leaving the fleet: ${(err as Error).message}`));
    const server = this.server;
    this.server = null;
    if (server) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fs.rm(this.config.socket, { force: true });
    }
    // Let a publish in progress finish or fail before the store closes under it.
    await this.mutex.run(async () => {});
    await this.store.close();
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
      const result = await publishPackage(
        { store: this.store, runtimes: this.runtimes, publisherKey, limits: this.limits(), owner: this.owner },
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
      log(result.unchanged
        ? `publish ${result.name}@${result.version}: already installed with the same content (${result.manifestId})`
        : `published ${result.name}@${result.version} as ${result.manifestId}: ${result.chunks} chunks, ${result.newChunks} new`);
      const { signed, ...rest } = result;
      if (!result.unchanged) void this.swarm?.announcePublished(signed);
      return rest;
    });
  }

  /** The fleet as seen from here; alone (no fleet key), just this host. */
  private fleetView(): Promise<FleetHostView[]> {
    return this.swarm ? this.swarm.fleetHosts() : aloneView(this.store, this.peerId, this.config.zone);
  }

  private async waitFor(args: Record<string, unknown>, progress: (p: Record<string, unknown>) => void) {
    const { sm, goal, timeoutMs } = waitRequest(await this.store.index.listManifests(), args);
    log(`a client waits for ${sm.manifest.runtime.name}@${sm.manifest.runtime.version} (${sm.id}) to be installed, up to ${timeoutMs / 1000} s`);
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
    if (this.swarm) return this.swarm.removeRuntime(name, version ?? null);
    return this.mutex.run(async () => {
      const all = await this.store.index.listInstalls();
      const victims = all.filter((r) => r.name === name && (version === undefined || r.version === version));
      if (victims.length === 0) throw new UserError(`${version ? `${name}@${version}` : name} is not installed`);
      for (const r of victims) {
        await this.runtimes.remove(r.name, r.version);
        await this.store.index.deleteInstall(r.name, r.version);
        const stillUsed = (await this.store.index.listInstalls()).some((o) => o.manifestId === r.manifestId);
        if (!stillUsed) await this.store.index.deleteManifest(r.manifestId);
        log(`removed ${r.name}@${r.version} from ${r.path}`);
      }
      const gc = await this.store.gc({ chunkGraceMs: 0 });
      return { removed: victims.map((r) => ({ name: r.name, version: r.version, path: r.path })), freedBytes: gc.bytes };
    });
  }

  /** Re-hash every chunk that a stored manifest references; report the corrupt and the missing. */
  private async verify() {
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
    if (corrupt.length) log(`verify: ${corrupt.length} corrupt chunk(s): ${corrupt.map((c) => c.id).join(' ')}`);
    return { checked: ids.size, corrupt, missing };
  }

  async status() {
    const [usage, runtimes, manifests] = await Promise.all([
      this.store.chunks.usage(), this.store.index.listInstalls(), this.store.index.listManifests(),
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
      publisher: this.publisherKey ? publicKeyOf(this.publisherKey) : null,
      trust: this.config.trust,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      memory: memoryNow(),
      bandwidth: { upload: this.uploadLimit.stats(), download: this.downloadLimit.stats() },
      store: { chunks: usage.chunks, bytes: usage.bytes, manifests: manifests.length },
      runtimes,
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
        log(`${r.name}@${r.version} is no longer at ${r.path}; forgetting the install record`);
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
  log(`TEST FAULT ACTIVE: ${v}`);
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
