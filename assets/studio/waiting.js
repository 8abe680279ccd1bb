() => {
  const banner = document.createElement('div');
  banner.id = 'opd-wait';
  banner.setAttribute('role', 'status');
  banner.setAttribute('aria-live', 'polite');
  setInterval(() => {
    const status = document.getElementById('opd-status');
    if (status && banner.parentNode !== status.parentNode) status.parentNode.insertBefore(banner, status);
    let place = null;  // the nearest place of this page's queued actions, from Gradio's own trackers
    for (const tracker of document.querySelectorAll('[data-testid=status-tracker]')) {
      const match = (tracker.textContent || '').match(/queue:\s*(\d+)\s*\//);
      if (match) place = Math.min(place ?? Infinity, Number(match[1]));
    }
    if (place === null) { banner.classList.remove('opd-shown'); banner.textContent = ''; return; }
    banner.textContent = `Waiting for the model: ${place} action${place === 1 ? '' : 's'} ahead of yours. ` +
      'Your result will appear here.';
    banner.classList.add('opd-shown');
  }, 250);
}
