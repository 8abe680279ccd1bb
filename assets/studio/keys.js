() => {
  const typing = (t) => t && (t.tagName === 'TEXTAREA' || t.isContentEditable || t.tagName === 'SELECT' ||
    (t.tagName === 'INPUT' && !['radio', 'checkbox', 'range', 'button', 'submit', 'file'].includes(t.type)));
  let cueTimer = null;
  window.opdCue = (message) => {
    let box = document.getElementById('opd-keycue');
    if (!box) { box = document.createElement('div'); box.id = 'opd-keycue'; box.setAttribute('role', 'status');
                document.body.appendChild(box); }
    box.textContent = message; box.classList.add('opd-shown');
    clearTimeout(cueTimer); cueTimer = setTimeout(() => box.classList.remove('opd-shown'), 1600);
  };
  const focusStrip = () => {
    const root = document.querySelector('#opd-strip .opd-strip');
    if (!root || (window.opdStripHint && window.opdStripHint())) return;
    const chip = root.querySelector(`.opd-tok[data-i='${root.dataset.hint}']`) || root.querySelector('.opd-student');
    (chip || root).focus({preventScroll: false});
  };
  const press = (id, what) => {
    const button = document.getElementById(id);
    if (!button || button.disabled) { window.opdCue(`${what}: open a record first (Generate or upload)`); return; }
    button.click();
  };
  const buttons = {a: ['opd-accept', 'accept'], x: ['opd-reject', 'reject'], r: ['opd-right', 'keep as right'],
                   u: ['opd-undo', 'undo'], j: ['opd-next', 'next'], k: ['opd-prev', 'previous']};
  document.addEventListener('keydown', (event) => {
    const t = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(t)) {
      if (event.key === 'Escape') { t.blur(); focusStrip(); event.preventDefault(); }
      return;
    }
    const legend = document.getElementById('opd-keys');
    if (buttons[event.key]) press(...buttons[event.key]);
    else if (event.key === 'e') {
      const box = document.querySelector('#opd-hint-text textarea');
      if (box) box.focus();
    } else if (event.key === 's') focusStrip();
    else if (event.key === '?' && legend) legend.classList.toggle('opd-shown');
    else if (event.key === 'Escape' && legend) legend.classList.remove('opd-shown');
    else return;
    event.preventDefault();
  });
}
