const strip = () => element.querySelector('.opd-strip');
const tokens = () => Array.from(element.querySelectorAll('.opd-tok[data-i]'));
let shown = null, quiet = false;  // the token whose details are up; a focus the script moves shows nothing new
const show = (target) => {
  const chip = target && target.closest && target.closest('.opd-tok[data-i]');
  const panel = element.querySelector('.opd-detail');
  const tip = chip && chip.querySelector('.opd-tip');
  if (panel && tip) { panel.innerHTML = tip.innerHTML; shown = chip.dataset.i; }
  else if (panel && chip && windowed()) { detailsOf(panel, chip); shown = chip.dataset.i; }
};
const cue = (message) => {
  const panel = element.querySelector('.opd-detail');
  if (panel) { panel.textContent = message; panel.classList.add('opd-flash');
               setTimeout(() => panel.classList.remove('opd-flash'), 900); }
  if (window.opdCue) window.opdCue(message);
};
// -- the windowed strip (long trajectories): the server sends the tokens as data (`strip.strip_data`); the page draws
// the part around what the reader looks at, at most `data-elements` tokens, and a minimap of the whole trajectory.
// Token text is set with textContent only (it is untrusted).
const F = {error: 1, target: 2, pending: 4, style: 8, mapped: 16, low: 32, highkl: 64, newline: 128, student: 256};
const long = {data: null, root: null, items: [], itemOf: null, range: [0, 0], folded: new Set(), record: null,
              anchor: null, local: null, kOf: new Map(), foldAt: new Map(), roleAt: new Map(), hintsAt: new Map()};
window.opdLongStrip = long;  // what the page holds of a long strip (the browser tests and the benchmark read it)
const visibleText = (t) => t.replaceAll(' ', '·').replaceAll('\n', '↵').replaceAll('\t', '→');
const windowed = () => { const root = strip(); return root && root.dataset.windowed === '1' && long.root === root; };
const buildItems = () => {
  const d = long.data, n = d.i.length;
  long.items = []; long.itemOf = new Int32Array(n);
  for (let k = 0; k < n;) {
    const fold = long.foldAt.get(k);
    if (fold && long.folded.has(k)) {  // a folded span is one item: -1 - its first token
      for (let j = k; j < fold[1]; j++) long.itemOf[j] = long.items.length;
      long.items.push(-1 - k); k = fold[1];
    } else { long.itemOf[k] = long.items.length; long.items.push(k); k++; }
  }
};
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};
const chipOf = (k) => {
  const d = long.data, f = d.f[k], chip = el('span', 'opd-tok ' + (f & F.student ? 'opd-student' : 'opd-context'));
  const local = long.local && (f & F.student) && d.i[k] >= long.local.from;
  if (f & F.error) chip.classList.add('opd-error');
  if (f & F.target) chip.classList.add('opd-target');
  if ((f & F.pending) || local) chip.classList.add('opd-pending');
  if (f & F.style) chip.classList.add('opd-style');
  if (f & F.mapped) chip.classList.add('opd-mapped');
  chip.dataset.i = d.i[k];
  if (d.p[k] !== null) {
    chip.dataset.p = d.p[k]; chip.dataset.q = d.q[k]; chip.dataset.kl = d.kl[k];
    chip.dataset.low = f & F.low ? '1' : '0'; chip.dataset.highkl = f & F.highkl ? '1' : '0';
  }
  if (f & F.student) chip.tabIndex = 0;
  chip.style.background = d.c[k];
  chip.textContent = visibleText(d.t[k]);
  return chip;
};
const renderAround = (k) => {
  const d = long.data, half = Math.floor(Number(long.root.dataset.elements) / 2);
  const at = long.itemOf[k], total = long.items.length;
  const a = Math.max(0, Math.min(at - half, total - 2 * half)), b = Math.min(total, a + 2 * half);
  const slice = document.createDocumentFragment();
  for (let item = a; item < b; item++) {
    const v = long.items[item];
    if (v < 0) {
      const fold = long.foldAt.get(-1 - v), chip = el('span', 'opd-fold',
        `▸ ${fold[2]} · ${(fold[1] - fold[0]).toLocaleString()} tokens folded (click to show)`);
      chip.dataset.fold = fold[0]; chip.tabIndex = 0; slice.append(chip);
      continue;
    }
    const role = long.roleAt.get(v);
    if (role !== undefined) slice.append(el('span', 'opd-role opd-role-' + role.replace(/[^a-z]/g, ''), role));
    const fold = long.foldAt.get(v);
    if (fold) { const toggle = el('span', 'opd-fold-toggle', `▾ fold this ${fold[2]}`); toggle.dataset.fold = v;
                slice.append(toggle); }
    const ghosts = long.local ? (long.local.k === v ? [long.local.text] : []) : (long.hintsAt.get(v) || []);
    for (const text of ghosts) slice.append(el('span', 'opd-ghost', visibleText(text)));
    slice.append(chipOf(v));
    if (d.f[v] & F.newline) slice.append(document.createElement('br'));
  }
  const had = long.root.contains(document.activeElement) && document.activeElement.dataset.i;
  long.root.querySelector('.opd-slice').replaceChildren(slice);
  long.range = [a, b];
  const again = had && long.root.querySelector(`.opd-slice .opd-tok[data-i='${had}']`);
  if (again) { quiet = true; again.focus({preventScroll: true}); quiet = false; }  // the focus stays on its token
};
const scrollBox = () => long.root.querySelector('.opd-scroll');
const drawn = (k) => long.root.querySelector(long.items[long.itemOf[k]] < 0
  ? `.opd-fold[data-fold='${-1 - long.items[long.itemOf[k]]}']` : `.opd-tok[data-i='${long.data.i[k]}']`);
const shownChips = () => Array.from(long.root.querySelectorAll('.opd-slice .opd-tok, .opd-slice .opd-fold'));
const kOfChip = (chip) => chip.dataset.fold !== undefined ? Number(chip.dataset.fold) : long.kOf.get(Number(chip.dataset.i));
const onScreen = () => {  // the first and last chips in the scroll box's view
  const box = scrollBox(), top = box.scrollTop, bottom = top + box.clientHeight;
  let first = null, last = null;
  for (const chip of shownChips()) {
    if (chip.offsetTop + chip.offsetHeight <= top) continue;
    if (chip.offsetTop >= bottom) break;
    if (first === null) first = chip;
    last = chip;
  }
  return [first, last];
};
const keepAt = (k, offset) => { const chip = drawn(k); if (chip) scrollBox().scrollTop = chip.offsetTop - offset; };
const center = (k) => {
  const chip = drawn(k), box = scrollBox();
  if (chip) box.scrollTop = chip.offsetTop - box.clientHeight / 2 + chip.offsetHeight / 2;
};
const jump = (k, focus) => {  // show token k (unfolding it), centred; returns its chip
  for (const start of Array.from(long.folded)) {
    const fold = long.foldAt.get(start);
    if (fold && fold[0] <= k && k < fold[1]) { long.folded.delete(start); buildItems(); }
  }
  const item = long.itemOf[k], margin = Math.floor(Number(long.root.dataset.elements) / 6);
  if (item < long.range[0] + margin && long.range[0] > 0 || item >= long.range[1] - margin &&
      long.range[1] < long.items.length || item < long.range[0] || item >= long.range[1]) renderAround(k);
  center(k);
  const chip = drawn(k);
  if (focus && chip) { quiet = true; chip.focus({preventScroll: true}); quiet = false; show(chip); }
  const box = scrollBox(), rect = box.getBoundingClientRect();
  if (rect.bottom < 0 || rect.top > window.innerHeight) box.scrollIntoView({block: 'nearest'});
  moved();
  return chip;
};
const moved = () => {  // after any scroll: remember the place, slide the window near its edges, redraw the map's view
  const [first, last] = onScreen();
  if (!first) return;
  const box = scrollBox(), kFirst = kOfChip(first), kLast = kOfChip(last);
  long.anchor = {i: long.data.i[kFirst], offset: first.offsetTop - box.scrollTop};
  const [a, b] = long.range, margin = Math.min(box.clientHeight, (box.scrollHeight - box.clientHeight) / 4);
  if ((box.scrollTop < margin && a > 0) || (box.scrollTop + 2 * margin > box.scrollHeight && b < long.items.length)) {
    const offset = first.offsetTop - box.scrollTop;
    renderAround(kFirst); keepAt(kFirst, offset);
  }
  const geometry = mapGeometry(), view = long.root.querySelector('.opd-map-view');
  const top = Math.floor(kFirst / geometry.cols) * geometry.cellH;
  view.style.top = `${top}px`;
  view.style.height = `${Math.max(4, (Math.floor(kLast / geometry.cols) + 1) * geometry.cellH - top)}px`;
  const d = long.data, where = long.root.querySelector('.opd-where');
  where.textContent = `tokens ${d.i[kFirst].toLocaleString()}–${d.i[kLast].toLocaleString()} of ` +
    `${(d.i[d.i.length - 1] + 1).toLocaleString()} · minimap: click or drag to go there · n / m: next low-p / high-KL token` +
    (long.folded.size ? ` · ${long.folded.size} span(s) folded` : '');
};
const mapGeometry = () => {
  const canvas = long.root.querySelector('.opd-map'), n = long.data.i.length;
  const width = canvas.width - 12, height = 520;
  let cell = Math.max(1, Math.floor(Math.sqrt(width * height / n)));
  while (cell > 1 && Math.ceil(n / Math.floor(width / cell)) * cell > height) cell--;
  const cols = Math.floor(width / cell), rows = Math.ceil(n / cols);
  return {cell, cols, rows, cellH: Math.min(cell, height / rows), x0: 6, width};
};
const drawMap = () => {
  const d = long.data, canvas = long.root.querySelector('.opd-map'), g = mapGeometry();
  canvas.height = Math.ceil(g.rows * g.cellH) + 2;
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const at = (k) => [g.x0 + (k % g.cols) * g.cell, Math.floor(k / g.cols) * g.cellH];
  for (let k = 0; k < d.i.length; k++) {
    const [x, y] = at(k), c = d.c[k];
    ctx.fillStyle = c === 'transparent' ? (d.f[k] & F.student ? '#e5e7eb' : '#f3f4f6') : c;
    ctx.fillRect(x, y, g.cell, g.cellH);
    const row = Math.floor(k / g.cols) * g.cellH, h = Math.max(1, g.cellH);
    if (d.f[k] & F.target) { ctx.fillStyle = '#111827'; ctx.fillRect(0, row, 3, h); }
    if (d.f[k] & F.highkl) { ctx.fillStyle = '#7c3aed'; ctx.fillRect(g.x0 + g.width + 1, row, 5, h); }
    if (d.f[k] & F.error) { ctx.fillStyle = '#f59e0b'; ctx.fillRect(x, y, g.cell, g.cellH);
                            ctx.fillRect(g.x0 + g.width + 1, row, 5, h); }
  }
  for (const [k] of d.hints) {  // the hint: a line across the map at its row
    const y = Math.floor(k / g.cols) * g.cellH;
    ctx.fillStyle = '#7c3aed'; ctx.fillRect(0, Math.max(0, y - 1), canvas.width, 2);
  }
  const box = long.root.querySelector('.opd-map-box');
  box.style.height = `${canvas.height}px`;
};
const mapPick = (event) => {
  const canvas = long.root.querySelector('.opd-map'), rect = canvas.getBoundingClientRect(), g = mapGeometry();
  const x = (event.clientX - rect.left) * canvas.width / rect.width;
  const y = (event.clientY - rect.top) * canvas.height / rect.height;
  const col = Math.max(0, Math.min(g.cols - 1, Math.floor((x - g.x0) / g.cell)));
  const k = Math.min(long.data.i.length - 1, Math.max(0, Math.floor(y / g.cellH) * g.cols + col));
  jump(k, false);
};
// `strip.pack_strip`'s payload back to `strip.strip_data`'s columns: texts and colours from their tables, top
// alternatives as [text, p] pairs, and each after-column's nulls (equal to the before-column) filled from it
const unpackStrip = (packed) => {
  const s = packed.s, d = {...packed};
  const tops = (flat) => {
    const pairs = [];
    for (let n = 0; n < flat.length; n += 2) pairs.push([s[flat[n]], flat[n + 1] / 1000]);
    return pairs;
  };
  d.t = packed.t.map((n) => s[n]);
  d.c = packed.c.map((n) => packed.palette[n]);
  d.tb = packed.tb.map(tops);
  d.ta = packed.ta.map((flat, k) => (flat === null ? d.tb[k] : tops(flat)));
  for (const [after, before] of [['q', 'p'], ['ra', 'rb'], ['ea', 'eb']])
    d[after] = packed[after].map((v, k) => (v === null ? d[before][k] : v));
  delete d.s; delete d.palette;
  return d;
};
window.opdUnpackStrip = unpackStrip;  // the round trip is tested against the server's columns
const setupWindowed = (root) => {
  const holder = root.querySelector('.opd-data');
  const d = unpackStrip(JSON.parse(holder.textContent));  // the text as sent (a redraw may patch it in place)
  const same = long.record === root.dataset.record;
  long.data = d; long.root = root; long.local = null;
  long.kOf = new Map(d.i.map((i, k) => [i, k]));
  long.foldAt = new Map(d.folds.map((fold) => [fold[0], fold]));
  long.roleAt = new Map(d.roles.map(([k, role]) => [k, role]));
  long.hintsAt = new Map();
  for (const [k, text] of d.hints) long.hintsAt.set(k, [...(long.hintsAt.get(k) || []), text]);
  if (!same) long.folded = new Set(d.folds.filter((fold) => fold[3]).map((fold) => fold[0]));
  else long.folded = new Set(Array.from(long.folded).filter((start) => long.foldAt.has(start)));
  long.record = root.dataset.record;
  buildItems();
  const kept = same && long.anchor ? long.kOf.get(long.anchor.i) : undefined;
  const k = kept !== undefined ? kept : (d.hint_k ?? d.error_k ?? 0);
  renderAround(k);
  if (kept !== undefined) keepAt(k, long.anchor.offset); else center(k);  // a new record opens at its hint
  drawMap();
  const box = scrollBox(), canvas = root.querySelector('.opd-map');
  let ticking = false;
  box.addEventListener('scroll', () => {
    if (!ticking) { ticking = true; requestAnimationFrame(() => { ticking = false; moved(); }); }
  });
  let dragging = false;
  canvas.addEventListener('pointerdown', (event) => { dragging = true; canvas.setPointerCapture(event.pointerId);
                                                      mapPick(event); event.preventDefault(); });
  canvas.addEventListener('pointermove', (event) => { if (dragging) mapPick(event); });
  for (const name of ['pointerup', 'pointercancel']) canvas.addEventListener(name, () => { dragging = false; });
  moved();
};
const toggleFold = (start) => {
  const [first] = onScreen(), k = first ? kOfChip(first) : start;
  if (long.folded.has(start)) long.folded.delete(start); else long.folded.add(start);
  buildItems(); renderAround(long.folded.has(start) ? start : k);
  center(long.folded.has(start) ? start : k); moved();
};
const detailsOf = (panel, chip) => {
  const d = long.data, k = long.kOf.get(Number(chip.dataset.i)), fmt = (x, n = 3) => x === null ? '—' : x.toFixed(n);
  panel.replaceChildren(el('b', '', `#${d.i[k]} ${visibleText(d.t[k])}`));
  if (d.p[k] === null) return;
  if ((d.f[k] & F.pending) || (long.local && d.i[k] >= long.local.from)) {
    panel.append(el('span', '', `p before ${fmt(d.p[k])} · the hinted numbers are on the way`)); return;
  }
  panel.append(el('span', '', `p ${fmt(d.p[k])} → ${fmt(d.q[k])} · rank ${d.rb[k] ?? '—'} → ${d.ra[k] ?? '—'}`));
  panel.append(el('span', '', `entropy ${fmt(d.eb[k], 2)} → ${fmt(d.ea[k], 2)} · KL ${fmt(d.kl[k])}` +
                                (d.z ? ` · p placebo ${fmt(d.z[k])}` : '')));
  const table = el('table'), head = el('tr');
  head.append(el('th', '', 'before'), el('th'), el('th', '', 'after'), el('th'));
  table.append(head);
  for (let n = 0; n < Math.max(d.tb[k].length, d.ta[k].length); n++) {
    const row = el('tr'), b = d.tb[k][n] || ['', 0], a = d.ta[k][n] || ['', 0];
    row.append(el('td', '', visibleText(b[0])), el('td', '', fmt(b[1])), el('td', '', visibleText(a[0])),
               el('td', '', fmt(a[1])));
    table.append(row);
  }
  panel.append(table);
  const push = d.g && d.g[k];  // the gradient map at this token: where the target pushes (`_gradient_lines`)
  if (push) {
    const [pStudent, pTarget, nats, weight, trained, topStudent, topTarget] = push;
    panel.append(el('span', 'opd-push', `gradient map (${d.g_target} target): p ${fmt(pStudent)} → ` +
      `${fmt(pTarget)} · push ${nats >= 0 ? '+' : ''}${fmt(nats, 2)} nats · weight ${fmt(weight)}` +
      (trained ? '' : " · held at the student's own distribution (not trained)")));
    const tops = el('table'), top = el('tr');
    top.append(el('th', '', 'student'), el('th'), el('th', '', 'target'), el('th'));
    tops.append(top);
    for (let n = 0; n < Math.max(topStudent.length, topTarget.length); n++) {
      const row = el('tr'), s = topStudent[n] || ['', 0], t = topTarget[n] || ['', 0];
      row.append(el('td', '', visibleText(s[0])), el('td', '', fmt(s[1])), el('td', '', visibleText(t[0])),
                 el('td', '', fmt(t[1])));
      tops.append(row);
    }
    panel.append(tops);
  }
};
const windowedKey = (event, chip) => {  // the strip's keys over the whole trajectory; true when the key was used
  const d = long.data, k = long.kOf.get(Number(chip.dataset.i)), n = d.i.length;
  const step = (from, dir, flag) => { for (let j = from + dir; j >= 0 && j < n; j += dir)
    if ((d.f[j] & F.student) && (d.f[j] & flag)) return j; return null; };
  let target = null;
  if (event.shiftKey && (event.key === 'ArrowRight' || event.key === 'ArrowLeft')) {
    const hinted = long.kOf.get(Number(strip().dataset.hint));
    const j = step(hinted !== undefined ? hinted : k, event.key === 'ArrowRight' ? 1 : -1, F.student);
    if (j === null) cue('the hint cannot move further'); else place(jump(j, true));
    return true;
  }
  if (event.key === 'ArrowRight') target = step(k, 1, F.student) ?? cue('this is the last token');
  else if (event.key === 'ArrowLeft') target = step(k, -1, F.student) ?? cue('this is the first token');
  else if (event.key === 'n') target = step(k, 1, F.low) ?? cue('no later token below p 0.1');
  else if (event.key === 'm') target = step(k, 1, F.highkl) ?? cue('no later token with KL above 1');
  else if (event.key === 'Enter' || event.key === ' ') place(chip);
  else return false;
  if (typeof target === 'number') jump(target, true);
  return true;
};
window.opdStripHint = () => {  // `s` and Escape: back to the hint, wherever it is in a long trajectory
  if (!windowed()) return false;
  const d = long.data, hinted = long.kOf.get(Number(strip().dataset.hint));
  const k = hinted ?? d.hint_k ?? d.error_k ?? long.kOf.get(Number((shownChips()[0] || {dataset: {}}).dataset.i));
  if (k === undefined) return false;
  jump(k, true);
  return true;
};
element.addEventListener('mouseover', (event) => show(event.target));
element.addEventListener('focusin', (event) => { if (!quiet) show(event.target); });
const preview = (chip) => {
  const root = strip();
  if (!root || root.dataset.oneshot === '1' || root.dataset.placement === 'feedback') return;
  if (windowed()) {  // redraw the slice with the hint at the chip and what follows it pending
    const k = long.kOf.get(Number(chip.dataset.i)), old = Number(root.dataset.hint);
    const first = long.data.hints.length ? long.data.hints[0][1] : ' (Hint: check this step again.)';
    long.local = {k, from: Math.min(Number.isNaN(old) ? k : old, Number(chip.dataset.i)),
                  text: long.local ? long.local.text : first};
    const offset = chip.offsetTop - scrollBox().scrollTop;
    renderAround(k); keepAt(k, offset);
    root.dataset.stage = 'local'; root.dataset.hint = chip.dataset.i;
    return;
  }
  let ghost = root.querySelector('.opd-ghost');
  const old = ghost && ghost.nextElementSibling && ghost.nextElementSibling.dataset
    ? Number(ghost.nextElementSibling.dataset.i) : Number(chip.dataset.i);
  if (!ghost) { ghost = document.createElement('span'); ghost.className = 'opd-ghost';
                ghost.textContent = '·(Hint:·check·this·step·again.)'; }
  chip.before(ghost);
  const from = Math.min(old, Number(chip.dataset.i));
  for (const t of tokens()) if (Number(t.dataset.i) >= from && t.classList.contains('opd-student'))
    t.classList.add('opd-pending');
  root.dataset.stage = 'local'; root.dataset.hint = chip.dataset.i;
};
const place = (chip) => {
  if (!chip.classList.contains('opd-student')) {
    cue('prompt tokens cannot take a hint: click a generated token'); return;
  }
  preview(chip);
  trigger('click', {token: Number(chip.dataset.i)});
};
let pressTimer = null, pressed = false;
element.addEventListener('pointerdown', (event) => {
  if (event.pointerType !== 'touch') return;
  pressed = false; clearTimeout(pressTimer);
  const target = event.target;
  pressTimer = setTimeout(() => { pressed = true; show(target); }, 450);
});
for (const name of ['pointerup', 'pointercancel', 'pointermove'])
  element.addEventListener(name, () => clearTimeout(pressTimer));
element.addEventListener('contextmenu', (event) => { if (pressed) event.preventDefault(); });
element.addEventListener('click', (event) => {
  if (pressed) { pressed = false; return; }
  const fold = event.target.closest('.opd-fold, .opd-fold-toggle');
  if (fold && windowed()) { toggleFold(Number(fold.dataset.fold)); return; }
  const chip = event.target.closest('.opd-tok[data-i]');
  if (chip) place(chip);
});
element.addEventListener('keydown', (event) => {
  const chip = event.target.closest('.opd-tok[data-i]');
  if (windowed() && (event.key === 'Enter' || event.key === ' ') && event.target.closest('.opd-fold')) {
    toggleFold(Number(event.target.closest('.opd-fold').dataset.fold)); event.preventDefault(); return;
  }
  if (!chip) return;
  if (windowed()) {
    if (windowedKey(event, chip)) { event.preventDefault(); event.stopPropagation(); }
    return;
  }
  const all = tokens().filter((t) => t.classList.contains('opd-student')); const at = all.indexOf(chip);
  const jump = (flag) => { for (let k = at + 1; k < all.length; k++) if (all[k].dataset[flag] === '1') return all[k]; };
  let next = null;
  if (event.shiftKey && (event.key === 'ArrowRight' || event.key === 'ArrowLeft')) {  // move the hint itself
    const root = strip();
    const hinted = all.findIndex((t) => t.dataset.i === (root && root.dataset.hint));
    const from = hinted >= 0 ? hinted : at;
    const target = all[from + (event.key === 'ArrowRight' ? 1 : -1)];
    if (target) { place(target); target.focus(); } else cue('the hint cannot move further');
    event.preventDefault(); event.stopPropagation();
    return;
  }
  if (event.key === 'ArrowRight') next = all[at + 1] || cue('this is the last token');
  else if (event.key === 'ArrowLeft') next = all[at - 1] || cue('this is the first token');
  else if (event.key === 'n') next = jump('low') || cue('no later token below p 0.1');
  else if (event.key === 'm') next = jump('highkl') || cue('no later token with KL above 1');
  else if (event.key === 'Enter' || event.key === ' ') place(chip);
  else return;
  event.preventDefault(); event.stopPropagation();
  if (next) next.focus();
});
const typing = (t) => t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
  (t.tagName === 'INPUT' && !['radio', 'checkbox', 'range', 'button', 'submit', 'file'].includes(t.type)));
let rendered = null;
new MutationObserver(() => {
  const root = strip();
  if (!root || root.dataset.render === rendered) return;  // only a new render from the server, not a hover
  rendered = root.dataset.render;
  if (root.dataset.windowed === '1') setupWindowed(root);
  if (shown !== null) show(root.querySelector(`.opd-tok[data-i='${shown}']`));  // the same token's new numbers
  const active = document.activeElement;
  if (typing(active) || (element.contains(active) && active !== root) || !element.offsetParent) return;
  const target = root && (root.querySelector(`.opd-tok[data-i='${root.dataset.hint}']`) ||
                          root.querySelector('.opd-tok.opd-student'));
  if (target) { quiet = true; target.focus({preventScroll: true}); quiet = false; }
}).observe(element, {childList: true, subtree: true});
