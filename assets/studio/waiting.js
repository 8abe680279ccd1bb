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
    // written only when it changes: this runs four times a second on every open page
    const text = place === null ? '' : `Waiting for the model: ${place} action${place === 1 ? '' : 's'} ahead of ` +
      'yours. Your result will appear here.';
    if (banner.textContent !== text) banner.textContent = text;
    banner.classList.toggle('opd-shown', place !== null);
  }, 250);
}
