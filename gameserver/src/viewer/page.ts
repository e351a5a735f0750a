/**
 * The viewer page: a canvas that polls /viewer/state and draws the shard — or, opened as
 * `/viewer?shards=<opsUrl>,<opsUrl>,…`, every listed shard of a world in one picture (each
 * shard's /viewer/state allows loopback origins, so on one machine the page served by one shard
 * can read the others; see http.ts). No external assets.
 */
export const VIEWER_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>AeThex shard viewer</title>
<style>
  body { margin: 0; background: #0e1116; color: #c9d1d9; font: 13px system-ui, sans-serif; }
  header { padding: 6px 10px; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
  canvas { display: block; margin: 0 auto; background: #161b22; }
  #legend { padding: 0 10px 6px; display: flex; gap: 14px; flex-wrap: wrap; align-items: center; }
  #shards { margin: 0 10px 6px; border-collapse: collapse; }
  #shards th, #shards td { padding: 1px 8px; text-align: right; font-variant-numeric: tabular-nums; }
  #shards th:first-child, #shards td:first-child { text-align: left; }
  #shards tr.down td { color: #f85149; }
  .sw { display: inline-block; width: 9px; height: 9px; margin-right: 4px; vertical-align: middle; }
  .sw.small { width: 6px; height: 6px; }
  .sw.hollow { background: transparent; border: 1px solid #8b949e; width: 8px; height: 8px; }
</style>
</head>
<body>
<header>
  <strong id="title">shard</strong>
  <span id="stats"></span>
  <label>area of interest of <select id="focus"><option value="">(none)</option></select></label>
</header>
<div id="legend">
  <span><span class="sw" style="background:#c9d1d9"></span>player · <span class="sw small" style="background:#6e7681"></span>NPC, owned, in its shard's colour</span>
  <span><span class="sw hollow"></span>ghost: read-only mirror of a neighbour's entity</span>
  <span><span class="sw" style="background:#ff4fd8"></span>in handoff (offered or held)</span>
  <span><span class="sw" style="background:#f0883e"></span>visible to the chosen player</span>
  <span><span class="sw" style="background:transparent;border:1px dashed #f85149"></span>shard down</span>
</div>
<table id="shards">
  <thead><tr><th>shard</th><th>tick</th><th>owned</th><th>players</th><th>ghosts</th><th>in handoff</th><th>status</th></tr></thead>
  <tbody></tbody>
</table>
<canvas id="view" width="900" height="900"></canvas>
<script>
// Per shard: the player colour and a dimmer one for its NPCs (exact colours, so tests can count
// pixels). Cycles past six shards; neighbours rarely share one then.
const PALETTE = [
  ['#3fb950', '#26733a'],
  ['#58a6ff', '#3a6ca6'],
  ['#d2a8ff', '#8a6fae'],
  ['#56d4dd', '#368a90'],
  ['#e3b341', '#94752b'],
  ['#ff7b72', '#a8514b'],
];
const BG = '#161b22', GHOST = '#8b949e', HANDOFF = '#ff4fd8', FOCUS = '#f0883e', DOWN = '#f85149';
const MODE_OWNED = 0, MODE_GHOST = 1, MODE_OFFERED = 2, KIND_PLAYER = 1;
const MAX_SIDE = 900;

const canvas = document.getElementById('view');
const ctx = canvas.getContext('2d');
const select = document.getElementById('focus');
const statsEl = document.getElementById('stats');
const tbody = document.querySelector('#shards tbody');

// Without ?shards= the page shows the shard that serves it, as it always did.
const listed = (new URLSearchParams(location.search).get('shards') || '').split(',').map((u) => u.trim()).filter(Boolean);
const multi = listed.length > 0;
const shards = (multi ? listed : [location.origin]).map((u, k) => {
  const row = tbody.insertRow();
  const cells = [];
  for (let c = 0; c < 7; c++) cells.push(row.insertCell());
  const [player, npc] = PALETTE[k % PALETTE.length];
  const name = document.createElement('span');
  name.textContent = u;
  cells[0].append(swatch(player, false), swatch(npc, true), name);
  return { base: u.replace(/\\/+$/, ''), player, npc, state: null, up: false, error: 'not polled yet', row, cells, name };
});
document.getElementById('title').textContent = multi ? 'world: ' + shards.length + ' shards' : 'shard';
let drawn = 0;

function swatch(colour, small) {
  const s = document.createElement('span');
  s.className = small ? 'sw small' : 'sw';
  s.style.background = colour;
  return s;
}

// The shard that owns the focused player asks for its area of interest; a player that left
// every shard's list is simply not focused any more.
function focusOwner(id) {
  if (id === '') return undefined;
  if (!multi) return shards[0];
  return shards.find((s) => s.state && s.state.players.includes(Number(id)));
}

async function poll(s, focus) {
  // A shard that hangs must not stall the others' picture.
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 2000);
  try {
    const q = focus === undefined ? '' : '?focus=' + encodeURIComponent(focus);
    const res = await fetch(s.base + '/viewer/state' + q, { cache: 'no-store', signal: ctl.signal });
    // A busy viewer (503: it is sending as many responses as it may at once) is up: the last
    // picture stays until the next poll.
    if (res.status === 503 && s.up) return;
    if (!res.ok) throw new Error('HTTP ' + res.status);
    s.state = await res.json();
    s.up = true;
    s.error = '';
  } catch (e) {
    s.up = false;
    s.error = e.name === 'AbortError' ? 'timed out' : e.message;
  } finally {
    clearTimeout(timer);
  }
}

async function frame() {
  const owner = focusOwner(select.value);
  await Promise.all(shards.map((s) => poll(s, s === owner ? select.value : undefined)));
  try {
    draw();
  } catch (e) {
    statsEl.textContent = 'cannot draw: ' + e.message;
  }
  setTimeout(frame, 100);
}

function draw() {
  const up = shards.filter((s) => s.up);
  // Regions and bounds stay known from a shard's last answer, so a shard that went down still
  // shows where it was.
  const anyState = shards.find((s) => s.state);
  let owned = 0, players = 0, ghosts = 0, handoff = 0;
  // Held ids are entities a neighbour offered; they show wherever they are drawn (the sender's
  // frozen copy, or the receiver's ghost of it).
  const held = new Set();
  for (const s of up) for (const id of s.state.held) held.add(id);
  const focusShard = focusOwner(select.value);
  const focus = focusShard && focusShard.up ? focusShard.state.focus : undefined;
  const visible = new Set(focus ? focus.visible : []);

  if (anyState) {
    const b = anyState.state.bounds;
    const w = b.maxX - b.minX, h = b.maxY - b.minY;
    const cw = Math.round(w >= h ? MAX_SIDE : Math.max(200, (MAX_SIDE * w) / h));
    const ch = Math.round(h >= w ? MAX_SIDE : Math.max(200, (MAX_SIDE * h) / w));
    if (canvas.width !== cw || canvas.height !== ch) {
      canvas.width = cw;
      canvas.height = ch;
    }
    const scale = Math.min(canvas.width / w, canvas.height / h);
    const X = (x) => (x - b.minX) * scale;
    const Y = (y) => canvas.height - (y - b.minY) * scale;
    ctx.fillStyle = BG;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = '#30363d';
    ctx.setLineDash([]);
    ctx.strokeRect(0.5, 0.5, w * scale - 1, h * scale - 1);

    let total = 0;
    for (const s of up) total += s.state.entities.length / 5;
    const r = Math.max(1.5, Math.min(4, 3000 / Math.sqrt(total + 1) / 60));
    const size = (kind) => (kind === KIND_PLAYER ? r * 1.6 : r);

    // Region borders and names are translucent, so their pixels never match an entity colour.
    ctx.font = '12px system-ui, sans-serif';
    for (const s of shards) {
      if (!s.state) continue;
      const g = s.state.region;
      ctx.globalAlpha = 0.7;
      ctx.strokeStyle = s.up ? s.player : DOWN;
      ctx.setLineDash(s.up ? [] : [6, 4]);
      ctx.strokeRect(X(g.minX) + 0.5, Y(g.maxY) + 0.5, (g.maxX - g.minX) * scale - 1, (g.maxY - g.minY) * scale - 1);
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(s.state.shard + (s.up ? '' : ' (down)'), X(g.minX) + 5, Y(g.maxY) + 15);
      ctx.globalAlpha = 1;
    }
    ctx.setLineDash([]);

    // Ghosts first, a little larger and hollow: the owner's filled square lands inside the ring.
    ctx.lineWidth = 1;
    for (const s of up) {
      const e = s.state.entities;
      for (let i = 0; i < e.length; i += 5) {
        if (e[i + 4] !== MODE_GHOST) continue;
        const id = e[i + 3];
        const q = size(e[i + 2]) + 3;
        ctx.strokeStyle = held.has(id) ? HANDOFF : visible.has(id) && s === focusShard ? FOCUS : GHOST;
        ctx.strokeRect(X(e[i]) - q / 2, Y(e[i + 1]) - q / 2, q, q);
      }
    }
    // Owned and offered entities; dormant ones (mode 3) are not in the world's picture.
    for (const s of up) {
      const e = s.state.entities;
      for (let i = 0; i < e.length; i += 5) {
        const mode = e[i + 4];
        if (mode !== MODE_OWNED && mode !== MODE_OFFERED) continue;
        const kind = e[i + 2];
        const id = e[i + 3];
        const q = size(kind);
        if (mode === MODE_OFFERED || held.has(id)) ctx.fillStyle = HANDOFF;
        else if (visible.has(id) && s === focusShard) ctx.fillStyle = FOCUS;
        else ctx.fillStyle = kind === KIND_PLAYER ? s.player : s.npc;
        ctx.fillRect(X(e[i]) - q / 2, Y(e[i + 1]) - q / 2, q, q);
      }
    }
    if (focus) {
      ctx.strokeStyle = FOCUS;
      ctx.beginPath();
      ctx.arc(X(focus.x), Y(focus.y), focusShard.state.aoiRadius * scale, 0, Math.PI * 2);
      ctx.stroke();
    }
  }

  // The stats table and the focus list.
  const known = new Set([...select.options].map((o) => o.value));
  const present = new Set();
  for (const s of shards) {
    if (s.state) s.name.textContent = s.state.shard;
    s.row.className = s.up ? '' : 'down';
    if (!s.up) {
      for (let c = 1; c < 6; c++) s.cells[c].textContent = '–';
      s.cells[6].textContent = 'down: ' + s.error;
      continue;
    }
    const st = s.state;
    let o = 0, gh = 0, off = 0;
    for (let i = 4; i < st.entities.length; i += 5) {
      const mode = st.entities[i];
      if (mode === MODE_OWNED) o++;
      else if (mode === MODE_GHOST) gh++;
      else if (mode === MODE_OFFERED) off++;
    }
    const values = [st.tick, o, st.players.length, gh, off + st.held.length, 'up'];
    values.forEach((v, c) => (s.cells[c + 1].textContent = String(v)));
    owned += o;
    players += st.players.length;
    ghosts += gh;
    handoff += off + st.held.length;
    for (const id of st.players) present.add(String(id));
    for (const id of st.players.slice(0, 500)) {
      if (known.has(String(id))) continue;
      known.add(String(id));
      select.add(new Option('entity ' + id + (multi ? ' (' + st.shard + ')' : ''), String(id)));
    }
  }
  // Players who left go from the list (but the one shown), once every shard could say who is there.
  if (up.length === shards.length) {
    for (const o of [...select.options]) if (o.value !== '' && o.value !== select.value && !present.has(o.value)) o.remove();
  }
  if (!multi && shards[0].state) document.getElementById('title').textContent = shards[0].state.shard;
  statsEl.textContent = up.length === 0
    ? 'disconnected: ' + shards.map((s) => s.error).join('; ')
    : up.length + '/' + shards.length + ' shards up · ' + owned + ' owned entities · ' + players + ' players · ' + ghosts + ' ghosts · ' + handoff + ' in handoff';
  document.body.dataset.shards = String(up.length);
  document.body.dataset.entities = String(owned);
  document.body.dataset.ghosts = String(ghosts);
  // A frame counts when something answered: what the tests wait for.
  if (up.length > 0) {
    drawn++;
    document.body.dataset.frames = String(drawn);
  }
}
frame();
</script>
</body>
</html>
`;
