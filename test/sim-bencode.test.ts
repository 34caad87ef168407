import test from 'ava';
import { createHash } from 'node:crypto';
import { infoHash } from '../scripts/sim/bittorrent.js';

// A single-file torrent laid out as mktorrent writes one, keys sorted; the info dictionary holds a
// nested list and binary piece hashes, so the parser must skip every kind of value by its length.
const info = Buffer.concat([
  Buffer.from('d6:lengthi3000000e4:name5:f.bin12:piece lengthi262144e6:pieces20:'),
  Buffer.from(Array.from({ length: 20 }, (_, i) => (i * 37 + 0x65) & 0xff)), // holds 'e' and ':' bytes
  Buffer.from('7:privatei1e1:xl1:a1:bee'),
]);
const announce = 'http://198.18.0.1:6969/announce';
const torrent = Buffer.concat([
  Buffer.from(`d8:announce${announce.length}:${announce}13:creation datei1796158980e4:info`), info,
  Buffer.from('e'),
]);

test('the info hash is the SHA-1 of the info dictionary exactly as written', (t) => {
  t.is(infoHash(torrent), createHash('sha1').update(info).digest('hex'));
  t.regex(infoHash(torrent), /^[0-9a-f]{40}$/);
});

test('keys after info do not matter, keys before it are skipped whatever their type', (t) => {
  const withMore = Buffer.concat([torrent.subarray(0, torrent.length - 1), Buffer.from('7:comment2:hie')]);
  t.is(infoHash(withMore), infoHash(torrent));
});

test('malformed torrents are refused with a reason', (t) => {
  t.throws(() => infoHash(Buffer.from('l4:infoe')), { message: /not a bencoded dictionary/ });
  t.throws(() => infoHash(Buffer.from('d8:announce3:abce')), { message: /no "info" dictionary/ });
  t.throws(() => infoHash(Buffer.from('d4:info3:abce')), { message: /"info" is not a dictionary/ });
  t.throws(() => infoHash(torrent.subarray(0, 60)), { message: /bencode/ });
  t.throws(() => infoHash(Buffer.from('d4:infod6:pieces99:abcee')), { message: /bad string length/ });
});
