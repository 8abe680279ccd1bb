(text) => {
  const root = document.querySelector('#opd-strip .opd-strip');
  const ghost = root && root.querySelector('.opd-ghost');
  if (ghost && text && text.trim() && root.dataset.oneshot !== '1') {
    ghost.textContent = text.replaceAll(' ', '·').replaceAll('\n', '↵');
    const from = Number(root.dataset.hint);
    for (const t of root.querySelectorAll('.opd-tok.opd-student'))
      if (Number(t.dataset.i) >= from) t.classList.add('opd-pending');
    root.dataset.stage = 'local';
  }
  return text;
}
