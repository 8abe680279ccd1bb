"""OPD Studio: `python app.py` (also the Hugging Face Space entry point)."""

from opd_studio.ui import build_app, launch

if __name__ == "__main__":
    launch(build_app())
