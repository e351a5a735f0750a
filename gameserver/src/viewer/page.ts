/** The viewer page: a canvas that polls /viewer/state and draws the shard. No external assets. */
export const VIEWER_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>AeThex shard viewer</title>
<style>
  body { margin: 0; background: #0e1116; color: #c9d1d9; font: 13px system-ui, sans-serif; }
  header { padding: 6px 10px; display: flex; gap: 16px; align-items: center; }
  canvas { display: block; margin: 0 auto; background: #161b22; }
  .npc { color: #8b949e; } .player { color: #3fb950; } .focus { color: #f0883e; }
</style>
</head>
<body>
<header>
  <strong id="title">shard</strong>
  <span id="stats"></span>
  <label>area of interest of <select id="focus"><option value="">(none)</option></select></label>
  <span class="npc">● NPC</span><span class="player">● player</span><span class="focus">● visible to the chosen player</span>
</header>
<canvas id="view" width="900" height="900"></canvas>
<script>
const canvas = document.getElementById('view');
const ctx = canvas.getContext('2d');
const select = document.getElementById('focus');
let drawn = 0;
async function frame() {
  try {
    const q = select.value ? '?focus=' + encodeURIComponent(select.value) : '';
    const res = await fetch('/viewer/state' + q, { cache: 'no-store' });
    const s = await res.json();
    draw(s);
  } catch (e) {
    document.getElementById('stats').textContent = 'disconnected: ' + e.message;
  }
  setTimeout(frame, 100);
}
function draw(s) {
  const b = s.bounds;
  const scale = Math.min(canvas.width / (b.maxX - b.minX), canvas.height / (b.maxY - b.minY));
  const X = (x) => (x - b.minX) * scale;
  const Y = (y) => canvas.height - (y - b.minY) * scale;
  ctx.fillStyle = '#161b22';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = '#30363d';
  ctx.strokeRect(X(s.region.minX), Y(s.region.maxY), (s.region.maxX - s.region.minX) * scale, (s.region.maxY - s.region.minY) * scale);
  const visible = new Set(s.focus ? s.focus.visible : []);
  const r = Math.max(1.5, Math.min(4, 3000 / Math.sqrt(s.entities.length / 4 + 1) / 60));
  for (let i = 0; i < s.entities.length; i += 4) {
    const kind = s.entities[i + 2];
    const id = s.entities[i + 3];
    ctx.fillStyle = visible.has(id) ? '#f0883e' : kind === 1 ? '#3fb950' : '#8b949e';
    ctx.fillRect(X(s.entities[i]) - r / 2, Y(s.entities[i + 1]) - r / 2, r, r);
  }
  if (s.focus) {
    ctx.strokeStyle = '#f0883e';
    ctx.beginPath();
    ctx.arc(X(s.focus.x), Y(s.focus.y), s.aoiRadius * scale, 0, Math.PI * 2);
    ctx.stroke();
  }
  const known = new Set([...select.options].map((o) => o.value));
  for (const id of s.players.slice(0, 500)) if (!known.has(String(id))) select.add(new Option('entity ' + id, String(id)));
  document.getElementById('title').textContent = s.shard;
  document.getElementById('stats').textContent = 'tick ' + s.tick + ' · ' + s.entities.length / 4 + ' entities · ' + s.players.length + ' players';
  drawn++;
  document.body.dataset.frames = String(drawn);
}
frame();
</script>
</body>
</html>
`;
