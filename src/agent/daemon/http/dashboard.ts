// The fleet dashboard served at GET /. Kept in source as strings, so it ships inside any bundle of
// the agent and needs nothing from outside: no CDN, no web font, no request but to this agent.
// The script polls /api/status once a second and rebuilds the page from it. Everything that comes from
// the fleet (runtime names, errors, host names) is untrusted text: it is only ever set as textContent.

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>joblet-agent fleet</title>
<link rel="stylesheet" href="/dashboard.css">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
</head>
<body>
<header>
  <div class="title"><span class="logo">&#9673;</span> joblet-agent <span class="muted">fleet</span></div>
  <div id="agent" class="agent"></div>
  <div id="live" class="live stale">connecting&hellip;</div>
</header>
<main>
  <section id="cards" class="cards"></section>
  <section class="panel">
    <h2>Runtimes across the fleet</h2>
    <div class="legend">
      <span class="pill installed">installed</span><span class="pill downloading">downloading</span>
      <span class="pill waiting">not yet</span><span class="pill skipped">skipped: architecture</span><span class="pill failed">failed</span>
    </div>
    <div class="scroll"><table id="grid" class="grid"></table></div>
  </section>
  <div class="columns">
    <section class="panel">
      <h2>Transfers on this host</h2>
      <div id="transfers"></div>
    </section>
    <section class="panel">
      <h2>Peers</h2>
      <div class="scroll"><table id="peers" class="list"></table></div>
    </section>
  </div>
  <section class="panel">
    <h2>Recent events</h2>
    <div class="scroll events"><table id="events" class="list"></table></div>
  </section>
</main>
<script src="/dashboard.js"></script>
</body>
</html>
`;

export const DASHBOARD_CSS = `
:root {
  --bg: #f5f6f8; --panel: #fff; --text: #1d2330; --muted: #6b7385; --line: #e3e6ec;
  --green: #1f9d55; --green-bg: #e3f5ea; --blue: #2563eb; --blue-bg: #e6eefc;
  --red: #c8352c; --red-bg: #fbe7e5; --grey: #8a91a0; --grey-bg: #eef0f3; --amber: #b7791f;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { display: flex; align-items: center; gap: 24px; padding: 14px 28px; background: #1d2330; color: #fff; }
header .title { font-size: 18px; font-weight: 600; white-space: nowrap; }
header .logo { color: #5ec38a; }
header .muted { color: #9aa3b5; font-weight: 400; }
header .agent { flex: 1; color: #c9cfdb; font-size: 13px; }
header .agent b { color: #fff; font-weight: 600; }
.live { font-size: 12px; padding: 3px 10px; border-radius: 999px; background: #2c6e49; white-space: nowrap; }
.live.stale { background: #8a3b33; }
main { padding: 20px 28px 40px; max-width: 1500px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-bottom: 18px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 14px 18px; margin-bottom: 18px; }
.panel h2 { margin: 0 0 10px; font-size: 15px; font-weight: 600; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.columns .panel { margin-bottom: 18px; min-width: 0; }
@media (max-width: 1000px) { .columns { grid-template-columns: 1fr; } }
.scroll { overflow-x: auto; }
.events { max-height: 320px; overflow-y: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); vertical-align: middle; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #fafbfc; white-space: nowrap; }
.grid th.rt { text-align: center; }
.grid th.rt .ver { display: block; font-weight: 400; }
.grid td.cell { text-align: center; min-width: 120px; }
.host .name { font-weight: 600; }
.grid th.hostcol { width: 220px; } .grid th.zonecol { width: 90px; }
.nowrap, .mono { white-space: nowrap; }
.host .id, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; color: var(--muted); }
.badge { display: inline-block; font-size: 11px; padding: 0 7px; border-radius: 999px; background: var(--grey-bg); color: var(--muted); margin-left: 6px; }
.badge.self { background: #1d2330; color: #fff; }
.pill { display: inline-block; padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.legend { display: flex; gap: 8px; flex-wrap: wrap; margin-bottom: 10px; }
.installed { background: var(--green-bg); color: var(--green); }
.downloading { background: var(--blue-bg); color: var(--blue); }
.failed { background: var(--red-bg); color: var(--red); }
.skipped { background: var(--grey-bg); color: var(--grey); }
.waiting { background: #fff; color: var(--muted); border: 1px dashed #c9ced8; }
.cell .err { display: block; color: var(--red); font-size: 11px; max-width: 220px; margin: 3px auto 0; overflow-wrap: anywhere; }
.bar { height: 6px; background: var(--grey-bg); border-radius: 3px; overflow: hidden; margin-top: 4px; min-width: 80px; }
.bar > div { height: 100%; background: var(--blue); }
.cell .bar { max-width: 140px; margin: 5px auto 0; }
.transfer { padding: 8px 0; border-bottom: 1px solid var(--line); }
.transfer:last-child { border-bottom: 0; }
.transfer .top { display: flex; justify-content: space-between; gap: 12px; }
.transfer .sources { color: var(--muted); font-size: 12px; margin-top: 3px; }
.empty { color: var(--muted); padding: 6px 0; }
.lvl { font-size: 11px; font-weight: 700; text-transform: uppercase; }
.lvl.warn { color: var(--amber); } .lvl.error { color: var(--red); } .lvl.info { color: var(--muted); }
.fields { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.fields b { color: var(--text); font-weight: 500; }
`;

export const DASHBOARD_JS = `'use strict';
(function () {
  var POLL_MS = 1000;
  var lastOk = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) { for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]); return parent; }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function short(id) { return id && id.length > 14 ? '\\u2026' + id.slice(-8) : (id || ''); }
  function bytes(n) {
    if (n === null || n === undefined) return '-';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
  }
  function ago(iso) {
    var s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
  }
  function clock(iso) { var d = new Date(iso); return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (x) { return x < 10 ? '0' + x : String(x); }).join(':'); }
  function bar(pct) { var b = el('div', 'bar'), f = el('div'); f.style.width = Math.max(0, Math.min(100, pct)) + '%'; return add(b, f); }

  function header(s) {
    var a = clear(document.getElementById('agent'));
    var host = (s.swarm && s.swarm.hosts || []).filter(function (h) { return h.self; })[0];
    add(a, el('b', null, host && host.hostname ? host.hostname : short(s.peerId)),
      el('span', null, '  ' + short(s.peerId) + ' \\u00b7 v' + s.version + ' \\u00b7 ' + s.arch +
        (s.zone ? ' \\u00b7 zone ' + s.zone : '') + ' \\u00b7 up ' + s.uptimeSeconds + ' s'));
  }

  function cards(s) {
    var w = s.swarm, c = clear(document.getElementById('cards'));
    var fleet = w ? w.fleet : [], hosts = w ? w.hosts.length : 1;
    var done = 0, want = 0;
    fleet.forEach(function (f) { done += f.hosts.length; want += Math.max(0, hosts - f.skipped.length); });
    [['hosts', hosts], ['runtimes', fleet.length], ['installs', want ? done + ' / ' + want : '-'],
      ['transfers here', w ? w.transfers.length : 0], ['peers', w ? w.peers.length : 0],
      ['store', bytes(s.store.bytes)], ['served', w ? bytes(w.uploads.bytesServed) : '-']].forEach(function (kv) {
      add(c, add(el('div', 'card'), el('div', 'v', kv[1]), el('div', 'k', kv[0])));
    });
  }

  function cellFor(f, h) {
    var td = el('td', 'cell'), pill, extra = null, state;
    var dl = f.downloading.filter(function (d) { return d.peerId === h.peerId; })[0];
    var fl = f.failed.filter(function (d) { return d.peerId === h.peerId; })[0];
    if (f.hosts.indexOf(h.peerId) >= 0) { state = 'installed'; pill = el('span', 'pill installed', '\\u2713 installed'); }
    else if (dl) { state = 'downloading'; pill = el('span', 'pill downloading', dl.pct + '%'); extra = bar(dl.pct); }
    else if (fl) { state = 'failed'; pill = el('span', 'pill failed', 'failed'); extra = el('span', 'err', fl.error); td.title = fl.error; }
    else if (f.skipped.indexOf(h.peerId) >= 0) {
      state = 'skipped'; pill = el('span', 'pill skipped', f.architectures ? 'skipped: needs ' + f.architectures.join('/') : 'skipped');
      td.title = h.self && f.skippedHere ? f.skippedHere : 'this runtime does not support ' + h.arch;
    } else { state = 'waiting'; pill = el('span', 'pill waiting', 'not yet'); }
    td.setAttribute('data-state', state);
    td.setAttribute('data-host', h.peerId);
    td.setAttribute('data-manifest', f.manifestId);
    return add(td, pill, extra);
  }

  function grid(s) {
    var t = clear(document.getElementById('grid'));
    var w = s.swarm;
    if (!w) { add(t, add(el('tr'), el('td', 'empty', 'This agent has no fleet key: it works alone.'))); return; }
    var fleet = w.fleet.slice().sort(function (a, b) { return a.name < b.name ? -1 : a.name > b.name ? 1 : a.createdAt < b.createdAt ? -1 : 1; });
    var hosts = w.hosts.slice().sort(function (a, b) {
      if (a.self !== b.self) return a.self ? -1 : 1;
      var ka = (a.zone || '') + (a.hostname || '') + a.peerId, kb = (b.zone || '') + (b.hostname || '') + b.peerId;
      return ka < kb ? -1 : 1;
    });
    var head = add(el('tr'), el('th', 'hostcol', 'host'), el('th', 'zonecol', 'zone'));
    fleet.forEach(function (f) {
      var th = add(el('th', 'rt'), document.createTextNode(f.name), el('span', 'ver mono', f.version));
      th.title = f.manifestId;
      head.appendChild(th);
    });
    add(t, add(el('thead'), head));
    var body = el('tbody');
    if (!fleet.length) add(body, add(el('tr'), el('td', 'empty', 'No runtime published yet.')));
    hosts.forEach(function (h) {
      var tr = el('tr');
      tr.setAttribute('data-host', h.peerId);
      var name = add(el('td', 'host'), el('span', 'name', h.hostname || short(h.peerId)),
        h.self ? el('span', 'badge self', 'this agent') : null, el('div', 'id', short(h.peerId) + ' \\u00b7 ' + h.arch));
      if (!fleet.length) { add(body, add(tr, name, el('td', null, h.zone || '-'))); return; }
      add(tr, name, el('td', null, h.zone || '-'));
      fleet.forEach(function (f) { tr.appendChild(cellFor(f, h)); });
      body.appendChild(tr);
    });
    t.appendChild(body);
  }

  function transfers(s) {
    var box = clear(document.getElementById('transfers'));
    var list = s.swarm ? s.swarm.transfers : [];
    if (!list.length) { box.appendChild(el('div', 'empty', 'No download in progress.')); return; }
    list.forEach(function (tr) {
      var pct = tr.bytesTotal ? Math.floor(100 * tr.bytesHave / tr.bytesTotal) : 0;
      var srcs = tr.sources.map(function (x) { return short(x.peer) + ' ' + bytes(x.bytes); }).join(', ') || 'no source yet';
      add(box, add(el('div', 'transfer'),
        add(el('div', 'top'), el('b', null, tr.name + '@' + tr.version),
          el('span', 'mono', pct + '%  ' + bytes(tr.bytesHave) + ' / ' + bytes(tr.bytesTotal) + '  ' + bytes(tr.rateBps) + '/s')),
        bar(pct), el('div', 'sources', 'from ' + srcs + ' \\u00b7 ' + tr.chunksHave + '/' + tr.chunks + ' chunks')));
    });
  }

  function peers(s) {
    var t = clear(document.getElementById('peers'));
    // One row per peer, though two hosts that dialed each other at once may share two connections.
    var seen = {};
    var list = (s.swarm ? s.swarm.peers : []).filter(function (p) { if (seen[p.peerId]) return false; seen[p.peerId] = true; return true; });
    if (!list.length) { add(t, add(el('tr'), el('td', 'empty', 'No peer connected.'))); return; }
    var names = {};
    (s.swarm.hosts || []).forEach(function (h) { names[h.peerId] = h.hostname; });
    add(t, add(el('thead'), add(el('tr'), el('th', null, 'peer'), el('th', null, 'zone'), el('th', null, 'RTT'), el('th', null, 'address'))));
    var body = el('tbody');
    list.forEach(function (p) {
      var who = add(el('td', 'nowrap'), el('b', null, names[p.peerId] || ''), el('span', 'mono', ' ' + short(p.peerId)),
        p.banned ? el('span', 'badge', 'avoided') : null);
      who.title = p.peerId;
      var addr = el('td', 'mono', p.address.replace(/\\/p2p\\/.*$/, '') + '  ' + (p.direction === 'inbound' ? '\\u2190 in' : '\\u2192 out'));
      addr.title = p.address;
      add(body, add(el('tr'), who, el('td', null, p.zone || '-'), el('td', 'mono', p.rttMs === null ? '-' : p.rttMs + ' ms'), addr));
    });
    t.appendChild(body);
  }

  function events(s) {
    var t = clear(document.getElementById('events'));
    var list = s.events || [];
    if (!list.length) { add(t, add(el('tr'), el('td', 'empty', 'No event yet.'))); return; }
    var body = el('tbody');
    list.forEach(function (e) {
      var fields = el('td', 'fields');
      Object.keys(e).forEach(function (k) {
        if (k === 'time' || k === 'level' || k === 'event') return;
        var v = Array.isArray(e[k]) ? e[k].join(', ') : String(e[k]);
        var b = el('b', null, /^sha256:[0-9a-f]{64}$/.test(v) ? v.slice(0, 19) + '\\u2026' : /^12D3Koo\\w{40,}$/.test(v) ? short(v) : v);
        b.title = v;
        add(fields, document.createTextNode(k + '='), b, document.createTextNode('  '));
      });
      var when = el('td', 'mono', clock(e.time));
      when.title = e.time;
      add(body, add(el('tr'), when, el('td', 'lvl ' + e.level, e.level), el('td', null, e.event), fields));
    });
    t.appendChild(body);
  }

  function render(s) {
    header(s); cards(s); grid(s); transfers(s); peers(s); events(s);
    document.body.setAttribute('data-updated', s.generatedAt);
  }

  function live() {
    var l = document.getElementById('live');
    var fresh = Date.now() - lastOk < 5000;
    l.className = 'live' + (fresh ? '' : ' stale');
    l.textContent = fresh ? 'live \\u00b7 updated ' + clock(new Date(lastOk).toISOString()) : (lastOk ? 'agent not answering since ' + ago(new Date(lastOk).toISOString()) : 'connecting\\u2026');
  }

  function poll() {
    fetch('/api/status', { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    }).then(function (s) { lastOk = Date.now(); render(s); }, function () { /* shown as stale below */ })
      .then(function () { live(); setTimeout(poll, POLL_MS); });
  }
  poll();
})();
`;

export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#1d2330"/><circle cx="8" cy="8" r="3.5" fill="#5ec38a"/></svg>
`;
