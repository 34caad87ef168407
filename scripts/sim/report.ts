// Figures from a scenario: per-method summaries against the fluid bound S/B, a plain-text table, and an
// SVG of hosts installed over time (one step line per method).

export interface MethodSummary {
  /** Seconds from the start of the method to each receiving host's install, in host order. */
  finishedS: number[];
  lastS: number;
  medianS: number;
  /** lastS and medianS divided by S/B; null when the links are not shaped. */
  lastRatio: number | null;
  medianRatio: number | null;
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** S/B in seconds: the package's bytes over the per-host rate; null when unshaped. */
export function fluidBoundS(packageBytes: number, hostMbit: number): number | null {
  return hostMbit > 0 ? (packageBytes * 8) / (hostMbit * 1e6) : null;
}

export function summarize(finishedS: number[], bound: number | null): MethodSummary {
  const lastS = Math.max(...finishedS);
  const medianS = median(finishedS);
  const ratio = (x: number) => (bound ? round(x / bound, 3) : null);
  return { finishedS: finishedS.map((x) => round(x, 3)), lastS: round(lastS, 3), medianS: round(medianS, 3), lastRatio: ratio(lastS), medianRatio: ratio(medianS) };
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Left-aligned columns separated by two spaces; the first row is the header. */
export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

export function methodTable(methods: Record<string, MethodSummary>, bound: number | null): string {
  const rows: (string | number)[][] = [['method', 'last host s', 'median host s', 'last / (S/B)', 'median / (S/B)']];
  for (const [name, m] of Object.entries(methods)) {
    rows.push([name, m.lastS.toFixed(2), m.medianS.toFixed(2), m.lastRatio?.toFixed(2) ?? '-', m.medianRatio?.toFixed(2) ?? '-']);
  }
  if (bound) rows.push(['fluid bound S/B', bound.toFixed(2), bound.toFixed(2), '1.00', '1.00']);
  return table(rows);
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A step chart: x = seconds, y = hosts installed so far; a dashed line marks S/B when known. */
export function installSvg(title: string, series: Record<string, number[]>, bound: number | null, hostCount: number): string {
  const W = 760, H = 420, L = 60, R = 20, T = 40, B = 50;
  const all = Object.values(series).flat();
  const xMax = niceCeil(Math.max(bound ?? 0, ...all, 1) * 1.05);
  const x = (s: number) => L + (s / xMax) * (W - L - R);
  const y = (n: number) => H - B - (n / hostCount) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">seconds after the package is ready</text>`,
    `<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">hosts installed</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const s = (xMax * i) / 5;
    out.push(`<line x1="${x(s)}" y1="${H - B}" x2="${x(s)}" y2="${H - B + 5}" stroke="black"/>`,
      `<text x="${x(s)}" y="${H - B + 18}" text-anchor="middle">${round(s, 1)}</text>`);
  }
  const yStep = Math.max(1, Math.ceil(hostCount / 8));
  for (let n = 0; n <= hostCount; n += yStep) {
    out.push(`<line x1="${L - 5}" y1="${y(n)}" x2="${L}" y2="${y(n)}" stroke="black"/>`,
      `<text x="${L - 8}" y="${y(n) + 4}" text-anchor="end">${n}</text>`);
  }
  if (bound) {
    out.push(`<line x1="${x(bound)}" y1="${T}" x2="${x(bound)}" y2="${H - B}" stroke="gray" stroke-dasharray="4 4"/>`,
      `<text x="${x(bound) + 4}" y="${T + 12}" fill="gray">S/B = ${bound.toFixed(1)} s</text>`);
  }
  Object.entries(series).forEach(([name, times], i) => {
    const sorted = [...times].sort((a, b) => a - b);
    let d = `M ${x(0)} ${y(0)}`;
    sorted.forEach((t, k) => { d += ` L ${x(t)} ${y(k)} L ${x(t)} ${y(k + 1)}`; });
    const color = COLORS[i % COLORS.length];
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`,
      `<rect x="${W - R - 190}" y="${T + 10 + i * 18}" width="12" height="3" fill="${color}"/>`,
      `<text x="${W - R - 172}" y="${T + 15 + i * 18}">${esc(name)} (last ${round(Math.max(...times), 1)} s)</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** 1, 2 or 5 times a power of ten, at or above x, so axis ticks fall on readable values. */
export function niceCeil(x: number): number {
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}
