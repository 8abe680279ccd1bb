"""Waiting says so: while an action waits for the model behind others, the page says how many are ahead of it.

Gradio already knows each queued action's place and sends it to the page, where its status tracker shows it as
`queue: 3/4` over the action's outputs. The model work of every session waits in one queue (concurrency id
"model", one at a time: `annotate_tab`), and one action runs while the rest wait, so place k means k actions
ahead of yours (k − 1 waiting and the one running). This script reads that place from Gradio's trackers and says it
in words above the status line; it invents no queue of its own.
"""

WAIT_CSS = """
#opd-wait { display: none; margin: 0 0 6px; padding: 6px 10px; border-radius: 6px; font-weight: 600;
            background: var(--color-accent-soft); color: var(--body-text-color); }
#opd-wait.opd-shown { display: block; }
"""

WAIT_JS = """
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
      const match = (tracker.textContent || '').match(/queue:\\s*(\\d+)\\s*\\//);
      if (match) place = Math.min(place ?? Infinity, Number(match[1]));
    }
    if (place === null) { banner.classList.remove('opd-shown'); banner.textContent = ''; return; }
    banner.textContent = `Waiting for the model: ${place} action${place === 1 ? '' : 's'} ahead of yours. ` +
      'Your result will appear here.';
    banner.classList.add('opd-shown');
  }, 250);
}
"""
