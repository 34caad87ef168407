// What each host of the fleet says about itself in its 'state' gossip, beyond the installed set:
// what it is downloading (with progress), what failed (with the error) and what its architecture
// excludes. The dashboard's hosts x runtimes grid is built from it, and so are the CI gate's per-host
// "why" lines (wait.ts), with `skipReasons` (host-notes.ts) saying why a host skips one. Bounded on both
// ends, so a state message stays small and a peer cannot make us keep much.
import { decodeNotes, encodeNotes, type ManifestNote } from '../../protocol/host-notes.js';

export interface HostProgress {
  downloading: { id: string; pct: number }[];
  failed: { id: string; error: string }[];
  skipped: string[];
  /** Why it skips them (e.g. architecture, --no-install), by manifest id. */
  skipReasons: Map<string, string>;
  hostname: string | null;
}

/** The wire form of a HostProgress (skipReasons as a bounded note list). */
export type WireProgress = Omit<HostProgress, 'skipReasons'> & { skipReasons: ManifestNote[] };

const MAX_ITEMS = 64;
const MAX_ERROR_CHARS = 200;

/** Progress is announced in steps of this many percent, so a download sends a handful of messages, not one per chunk. */
export const PROGRESS_STEP = 20;

/** This host's part of a state message. */
export function localProgress(
  downloads: Iterable<{ id: string; bytesHave: number; bytesTotal: number }>,
  failures: Iterable<[string, { error: string }]>,
  skipped: Iterable<[string, string]>,
  hostname: string,
): HostProgress {
  const downloading = [...downloads].slice(0, MAX_ITEMS).map((d) => ({ id: d.id, pct: percent(d.bytesHave, d.bytesTotal) }));
  const busy = new Set(downloading.map((d) => d.id));
  const failed = [...failures].filter(([id]) => !busy.has(id)).slice(0, MAX_ITEMS)
    .map(([id, f]) => ({ id, error: f.error.slice(0, MAX_ERROR_CHARS) }));
  const skips = [...skipped].slice(0, MAX_ITEMS);
  return { downloading, failed, skipped: skips.map(([id]) => id), skipReasons: new Map(skips), hostname };
}

/** What goes into a state message. */
export function wireProgress(p: HostProgress): WireProgress {
  return { ...p, skipReasons: encodeNotes(p.skipReasons) };
}

/** Changes when a state message would say something new (a progress step, a failure, a skip). */
export function progressSignature(p: HostProgress): string {
  return JSON.stringify([
    p.downloading.map((d) => [d.id, Math.floor(d.pct / PROGRESS_STEP)]),
    p.failed.map((f) => f.id),
    p.skipped,
  ]);
}

/** Read the progress fields of a peer's state message; anything malformed is dropped, not trusted. */
export function parseProgress(msg: Record<string, unknown>): HostProgress {
  const list = (v: unknown): unknown[] => (Array.isArray(v) ? v.slice(0, MAX_ITEMS) : []);
  const obj = (v: unknown) => (typeof v === 'object' && v !== null ? v as Record<string, unknown> : {});
  return {
    downloading: list(msg.downloading).map(obj)
      .filter((d) => typeof d.id === 'string' && typeof d.pct === 'number' && d.pct >= 0 && d.pct <= 100)
      .map((d) => ({ id: d.id as string, pct: Math.floor(d.pct as number) })),
    failed: list(msg.failed).map(obj).filter((f) => typeof f.id === 'string' && typeof f.error === 'string')
      .map((f) => ({ id: f.id as string, error: (f.error as string).slice(0, MAX_ERROR_CHARS) })),
    skipped: list(msg.skipped).filter((s): s is string => typeof s === 'string'),
    skipReasons: decodeNotes(list(msg.skipReasons)),
    hostname: typeof msg.hostname === 'string' ? msg.hostname.slice(0, 64) : null,
  };
}

function percent(have: number, total: number): number {
  return total > 0 ? Math.min(100, Math.floor((100 * have) / total)) : 0;
}

/** Which hosts are downloading, failed or skipped one manifest, from each host's last progress. */
export function manifestProgress(manifestId: string, hosts: Iterable<[string, HostProgress | undefined]>) {
  const downloading: { peerId: string; pct: number }[] = [];
  const failed: { peerId: string; error: string }[] = [];
  const skipped: string[] = [];
  for (const [peerId, p] of hosts) {
    if (!p) continue;
    const d = p.downloading.find((x) => x.id === manifestId);
    if (d) downloading.push({ peerId, pct: d.pct });
    const f = p.failed.find((x) => x.id === manifestId);
    if (f) failed.push({ peerId, error: f.error });
    if (p.skipped.includes(manifestId)) skipped.push(peerId);
  }
  return { downloading, failed, skipped };
}

/**
 * A host's failures and skips as its catalog listing states them (host-notes.ts), over what it last
 * announced: absent notes (an older agent) keep the announced progress as it is.
 */
export function progressFromNotes(before: HostProgress | undefined, failedNotes: unknown, skippedNotes: unknown): HostProgress | undefined {
  if (failedNotes === undefined && skippedNotes === undefined) return undefined;
  const failed = [...decodeNotes(failedNotes)].slice(0, MAX_ITEMS).map(([id, error]) => ({ id, error: error.slice(0, MAX_ERROR_CHARS) }));
  const skipReasons = new Map([...decodeNotes(skippedNotes)].slice(0, MAX_ITEMS));
  return { downloading: before?.downloading ?? [], hostname: before?.hostname ?? null, failed, skipped: [...skipReasons.keys()], skipReasons };
}
