/** One line per event on stderr; journald adds its own timestamps, a terminal gets ours. */
export function log(message: string): void {
  const stamp = process.stderr.isTTY ? new Date().toISOString() + ' ' : '';
  process.stderr.write(`${stamp}${message}\n`);
}

/**
 * Text that came from a peer, made safe for a terminal or a log line: anything but printable ASCII becomes '?'
 * (no escape sequence reaches the operator's terminal), and the length is capped.
 */
export function printable(text: string, max = 64): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
