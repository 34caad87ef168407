import test from 'ava';
import { capRates } from '../scripts/sim/cap-rates.js';
import { median, summarize, fluidBoundS, table, installSvg, niceCeil, methodTable } from '../scripts/sim/report.js';

test('median of odd and even counts', (t) => {
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 3, 2]), 2.5);
  t.true(Number.isNaN(median([])));
});

test('fluid bound is bytes over the per-host rate, none when unshaped', (t) => {
  t.is(fluidBoundS(50e6 / 8 * 10, 50), 10);
  t.is(fluidBoundS(1e6, 0), null);
});

test('summaries give last and median hosts and their ratios to S/B', (t) => {
  const s = summarize([12, 10, 15, 11], 10);
  t.is(s.lastS, 15);
  t.is(s.medianS, 11.5);
  t.is(s.lastRatio, 1.5);
  t.is(s.medianRatio, 1.15);
  t.deepEqual(s.finishedS, [12, 10, 15, 11]);
  t.is(summarize([1, 2], null).lastRatio, null);
});

test('tables align their columns', (t) => {
  const out = table([['a', 'bbb'], ['cccc', 'd']]).split('\n');
  t.deepEqual(out, ['a     bbb', 'cccc  d']);
  const m = methodTable({ x: summarize([20], 10) }, 10);
  t.regex(m, /x\s+20\.00\s+20\.00\s+2\.00\s+2\.00/);
  t.regex(m, /fluid bound S\/B\s+10\.00/);
});

test('the SVG has one step line per method, a legend and the S/B marker', (t) => {
  const svg = installSvg('N = 3 <test>', { agent: [1, 2, 3], central: [3, 6, 9] }, 2.5, 3);
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  t.true(svg.trimEnd().endsWith('</svg>'));
  t.is(svg.match(/<path /g)?.length, 2);
  t.true(svg.includes('agent (last 3 s)'));
  t.true(svg.includes('central (last 9 s)'));
  t.true(svg.includes('S/B = 2.5 s'));
  t.true(svg.includes('N = 3 &lt;test&gt;'));
  // The central line ends at 9 s, which must lie inside the plot (x axis up to a nice value >= 9.45).
  const xs = [...svg.matchAll(/L ([\d.]+) /g)].map((m) => Number(m[1]));
  t.true(Math.max(...xs) <= 760 - 20);
});

test('axis ends are 1, 2 or 5 times a power of ten', (t) => {
  t.is(niceCeil(9.45), 10);
  t.is(niceCeil(11), 20);
  t.is(niceCeil(180), 200);
  t.is(niceCeil(0.3), 0.5);
});

test('cap rates: the mean while active leaves out the idle head and tail, the 5 s window catches a burst', (t) => {
  const cap = 1_000_000;
  // Host 0 runs at the cap for 10 s, with 2 MB extra in the second 8; host 1 idles 5 s, then runs at half.
  const samples = Array.from({ length: 21 }, (_, k) => {
    const tS = k * 0.5;
    const h0 = tS * cap + (tS >= 8 ? 2_000_000 : 0);
    const h1 = tS <= 5 ? 0 : (tS - 5) * cap / 2;
    return { t: tS, up: [h0, h1], down: [0, 0] };
  });
  const [h0, h1] = capRates(samples, 'up', cap);
  t.is(Math.round(h0!.meanActiveBps), 1_200_000);
  t.is(Math.round(h0!.maxWindowBps), 1_400_000);
  t.is(Math.round(h1!.meanActiveBps), cap / 2);
  t.is(Math.round(h1!.maxWindowBps), cap / 2);
  t.deepEqual(capRates(samples.slice(0, 1), 'up', cap), []);
});
