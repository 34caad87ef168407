// `joblet-agent info NAME[@VERSION]`: one runtime as this agent knows it, and where in the fleet it is.
import type { SignedManifest, InstallRecord } from '../../store/types.js';
import { manifestChunks } from '../../store/manifest.js';
import { compareVersions } from '../../store/index-db.js';
import type { FleetHostView } from '../swarm/swarm.js';
import { rolloutOf, type HostRollout } from './wait.js';

export interface RuntimeInfo {
  name: string;
  version: string;
  manifestId: string;
  publisher: string;
  createdAt: string;
  /** The runtime.yml metadata the manifest carries (name, version, language, description, architectures). */
  runtime: SignedManifest['manifest']['runtime'];
  /** Bytes of the runtime's canonical tar (what an install unpacks), and what its chunks take stored and on the wire. */
  sizeBytes: number;
  storedBytes: number;
  chunks: number;
  /** This host: the install record if installed here, else null; and why not, if it skips it. */
  here: { installed: InstallRecord | null; skipped: string | null };
  /** Every host this agent knows of, itself included; see `wait --json` for the fields. */
  hosts: { installed: string[]; notInstalled: HostRollout[] };
  /** Other versions of this runtime known here, newest first. */
  otherVersions: string[];
}

export { pickManifest } from './wait.js';

export function runtimeInfo(sm: SignedManifest, all: SignedManifest[], hosts: FleetHostView[], install: InstallRecord | undefined): RuntimeInfo {
  const chunks = manifestChunks(sm.manifest);
  const rollout = rolloutOf(sm, hosts, {});
  const self = rollout.hosts.find((h) => h.self);
  const { name, version } = sm.manifest.runtime;
  const otherVersions = [...new Set(all.filter((x) => x.manifest.runtime.name === name && x.manifest.runtime.version !== version)
    .map((x) => x.manifest.runtime.version))].sort((a, b) => compareVersions(b, a));
  return {
    name, version, manifestId: sm.id, publisher: sm.manifest.publisher, createdAt: sm.manifest.createdAt,
    runtime: sm.manifest.runtime,
    sizeBytes: chunks.reduce((n, c) => n + c.size, 0),
    storedBytes: chunks.reduce((n, c) => n + c.storedSize, 0),
    chunks: chunks.length,
    here: {
      installed: install && install.manifestId === sm.id ? install : null,
      skipped: self?.state === 'skipped' ? self.reason : null,
    },
    hosts: {
      installed: rollout.hosts.filter((h) => h.state === 'installed').map((h) => h.peerId),
      notInstalled: rollout.hosts.filter((h) => h.state !== 'installed'),
    },
    otherVersions,
  };
}
