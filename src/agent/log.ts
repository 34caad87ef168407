// Structured logging: one line per event on stderr, for journald or a terminal.
// An event has a short stable name (`installed`, `install_failed`) and fields (name, version, manifestId,
// peer, bytes, ms, error, ...). `--log-format json` prints one JSON object per line for log shippers;
// the default text form prints `event key=value ...`, readable by a person. A `hint` field tells the
// operator what to do about an event they can act on.
// The last events are also kept in memory, for the dashboard's "recent events".

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'text' | 'json';
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];

export type LogValue = string | number | boolean | null | undefined | readonly string[];
export type LogFields = Record<string, LogValue>;

export interface LogRecord {
  time: string;
  level: LogLevel;
  event: string;
  [field: string]: unknown;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const RECENT_MAX = 200;

let format: LogFormat = 'text';
let minLevel: LogLevel = 'info';
const recent: LogRecord[] = [];

/** Set from `--log-format` / `--log-level` (or the config) once the daemon knows them. */
export function configureLog(opts: { format?: LogFormat; level?: LogLevel }): void {
  if (opts.format) format = opts.format;
  if (opts.level) minLevel = opts.level;
}

function emit(level: LogLevel, event: string, fields: LogFields = {}): void {
  const rec: LogRecord = { time: new Date().toISOString(), level, event };
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) rec[k] = v;
  if (RANK[level] < RANK[minLevel]) return;
  if (level !== 'debug') {
    recent.push(rec);
    if (recent.length > RECENT_MAX) recent.splice(0, recent.length - RECENT_MAX);
  }
  process.stderr.write((format === 'json' ? JSON.stringify(rec) : textLine(rec)) + '\n');
}

/** `[time ]LEVEL event k=v ...`; journald adds its own timestamps, so only a terminal gets ours. */
function textLine(rec: LogRecord): string {
  const { time, level, event, ...fields } = rec;
  const parts: string[] = [];
  if (process.stderr.isTTY) parts.push(time);
  if (level !== 'info') parts.push(level.toUpperCase());
  parts.push(event);
  for (const [k, v] of Object.entries(fields)) parts.push(`${k}=${textValue(v)}`);
  return parts.join(' ');
}

function textValue(v: unknown): string {
  const s = Array.isArray(v) ? v.join(',') : String(v);
  return s === '' || /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

export const log = {
  debug: (event: string, fields?: LogFields) => emit('debug', event, fields),
  info: (event: string, fields?: LogFields) => emit('info', event, fields),
  warn: (event: string, fields?: LogFields) => emit('warn', event, fields),
  error: (event: string, fields?: LogFields) => emit('error', event, fields),
};

/** The newest events first, at most `n`: what the dashboard shows. */
export function recentEvents(n = 50): LogRecord[] {
  return recent.slice(-n).reverse();
}

/** The message of an unknown thrown value, for an `error` field. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Text that came from a peer, made safe for a terminal or a log line: anything but printable ASCII becomes '?'
 * (no escape sequence reaches the operator's terminal), and the length is capped.
 */
export function printable(text: string, max = 64): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}
