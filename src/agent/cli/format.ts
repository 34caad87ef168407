// Human output of the CLI. The --json output is the daemon's result as is.

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Columns padded to the widest cell; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  return all
    .map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  '))
    .join('\n');
}

export { printable } from '../log.js';

export function shortId(id: string): string {
  return id.startsWith('sha256:') ? id.slice(0, 7 + 12) : id;
}

/** A one-line progress bar for a TTY, redrawn in place. */
export class ProgressBar {
  private readonly started = Date.now();
  private drawn = false;
  constructor(private readonly out: NodeJS.WriteStream, private readonly label: string) {}

  update(done: number, total: number): void {
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = 30;
    const filled = Math.round(frac * width);
    const secs = (Date.now() - this.started) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    const line = `${this.label} ${String(Math.floor(frac * 100)).padStart(3)}% [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ` +
      `${formatBytes(done)}/${formatBytes(total)} ${formatBytes(rate)}/s`;
    this.out.write(`\r${line}\x1b[K`);
    this.drawn = true;
  }

  finish(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
  }
}
