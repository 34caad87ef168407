// Fetch the chunks of a manifest that the store lacks, with the download machinery but without an install:
// for a repair of an installed runtime, and after a chunk file failed verification and was dropped.
import { manifestChunks } from '../../store/manifest.js';
import type { SignedManifest } from '../../store/types.js';
import { Download, type DownloadHost } from './download.js';
import { log, errorText } from '../log.js';

/** Seconds without any connected peer after which a refetch gives up. */
const NO_PEER_TICKS = 5;

export interface RefetchHooks {
  /** The download is running (the swarm lists it among its transfers, and no second one starts). */
  started(d: Download): void;
  ended(d: Download): void;
}

/** Indexes of the chunks of `sm` not in the store. */
export async function missingChunks(host: Pick<DownloadHost, 'store'>, sm: SignedManifest): Promise<number[]> {
  const refs = manifestChunks(sm.manifest);
  const have = await Promise.all(refs.map((c) => host.store.chunks.has(c.id)));
  return have.flatMap((h, i) => (h ? [] : [i]));
}

/**
 * Runs a download of the missing chunks until all are stored or no chunk arrived for `idleMs` (no peer
 * holds them, or none is reachable). Returns how many are still missing.
 */
export async function fetchMissingChunks(host: DownloadHost, sm: SignedManifest, idleMs: number, hooks: RefetchHooks): Promise<number> {
  const refs = manifestChunks(sm.manifest);
  const have = await Promise.all(refs.map((c) => host.store.chunks.has(c.id)));
  const wanted = have.filter((h) => !h).length;
  if (wanted === 0) return 0;
  const { name, version } = sm.manifest.runtime;
  const d = new Download(host, sm, have);
  hooks.started(d);
  log.info('refetch_started', { name, version, manifestId: sm.id, chunks: wanted });
  let seen = d.status().chunksHave;
  let lastProgress = Date.now();
  let alone = 0;
  const watchdog = setInterval(() => {
    const now = d.status().chunksHave;
    // With no peer connected at all there is nobody to wait for: give up after a few seconds, not idleMs.
    alone = host.usablePeers().length === 0 ? alone + 1 : 0;
    if (now !== seen) {
      seen = now;
      lastProgress = Date.now();
    } else if (Date.now() - lastProgress > idleMs || alone >= NO_PEER_TICKS) {
      d.stop();
    }
  }, 1000);
  try {
    await d.run();
  } catch (err) {
    log.debug('refetch_stopped', { name, version, manifestId: sm.id, error: errorText(err) });
  } finally {
    clearInterval(watchdog);
    hooks.ended(d);
  }
  const left = (await missingChunks(host, sm)).length;
  const st = d.status();
  if (left === 0) log.info('refetched', { name, version, manifestId: sm.id, chunks: st.fetchedChunks, bytes: st.fetchedBytes, peers: st.sources.length });
  else log.warn('refetch_incomplete', { name, version, manifestId: sm.id, missing: left, peers: host.usablePeers().length,
    hint: 'no reachable peer sent the missing chunks; they are asked for again when needed' });
  return left;
}
