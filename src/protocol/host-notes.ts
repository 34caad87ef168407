/**
 * Per-manifest notes a host announces about itself, next to the ids it has installed: the manifests it
 * failed to install (with the error) and the ones it skips on purpose (with the reason). They let a CI
 * gate (`joblet-agent wait`) and `info` say why a host does not have a runtime instead of only that it
 * does not. Both directions are bounded: a host sends at most MAX_NOTES notes of at most MAX_NOTE_CHARS
 * each, and a receiver drops anything else, so a peer cannot grow another's memory through them.
 */

export const MAX_NOTES = 256;
export const MAX_NOTE_CHARS = 300;
const ID_RE = /^sha256:[0-9a-f]{64}$/;

/** One note on the wire: a manifest id and a short text. */
export interface ManifestNote { id: string; text: string }

/**
 * Shorten a text for a note: one line, bounded, without control characters (a peer's text ends up on an
 * operator's terminal, where escape sequences must not get through).
 */
export function noteText(text: string): string {
  // eslint-disable-next-line no-control-regex
  const line = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').replace(/\s+/g, ' ').trim();
  return line.length <= MAX_NOTE_CHARS ? line : `${line.slice(0, MAX_NOTE_CHARS - 1)}…`;
}

/** The notes to send, from id -> text, bounded in count and length. */
export function encodeNotes(notes: Iterable<[string, string]>): ManifestNote[] {
  const out: ManifestNote[] = [];
  for (const [id, text] of notes) {
    if (out.length >= MAX_NOTES) break;
    out.push({ id, text: noteText(text) });
  }
  return out;
}

/** What a peer sent, checked: malformed entries are dropped, not trusted; absent means none. */
export function decodeNotes(value: unknown): Map<string, string> {
  const out = new Map<string, string>();
  if (!Array.isArray(value)) return out;
  for (const entry of value.slice(0, MAX_NOTES)) {
    const e = entry as { id?: unknown; text?: unknown };
    if (typeof e !== 'object' || e === null || typeof e.id !== 'string' || !ID_RE.test(e.id) || typeof e.text !== 'string') continue;
    out.set(e.id, noteText(e.text));
  }
  return out;
}
