// The `--http ADDR` / `http:` setting: HOST:PORT (IPv6 in brackets), or `off`.

export interface HttpAddress { host: string; port: number }

export const DEFAULT_HTTP = '127.0.0.1:7947';

/** null for `off`; undefined when the text is not a valid address. */
export function parseHttpAddress(text: string): HttpAddress | null | undefined {
  if (text === 'off') return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? m[2], port };
}
