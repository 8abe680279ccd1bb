"""Waiting says so: while an action waits for the model behind others, the page says how many are ahead of it.

Gradio already knows each queued action's place and sends it to the page, where its status tracker shows it as
`queue: 3/4` over the action's outputs. The model work of every session waits in one queue (concurrency id
"model", one at a time: `annotate_tab`), and one action runs while the rest wait, so place k means k actions
ahead of yours (k − 1 waiting and the one running). Its script (assets/studio/waiting.js) reads that place from
Gradio's trackers and says it in words above the status line; it invents no queue of its own.
"""

from ..workspace import asset_text

WAIT_CSS = asset_text("waiting.css")
WAIT_JS = asset_text("waiting.js")

