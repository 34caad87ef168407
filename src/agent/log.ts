/** One line per event on stderr; journald adds its own timestamps, a terminal gets ours. */
export function log(message: string): void {
  const stamp = process.stderr.isTTY ? new Date().toISOString() + ' ' : '';
  process.stderr.write(`${stamp}${message}\n`);
}
