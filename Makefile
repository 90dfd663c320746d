# Set-up and the two jobs the README promises. Everything installs into .venv in this checkout; the broker
# and the browser that the integration tests use come from Debian's packages (skipped, with the reason, where
# they cannot be installed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
SYSTEM_PACKAGES := mosquitto mosquitto-clients chromium

.PHONY: demo test lint clean system-deps serve-env

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Triton server (edge-anomaly serve): PyTriton's Python backend is built for numpy 1, so it gets an
# environment of its own, where the project runs on numpy 1.26 and OpenCV 4 (the serve tests use it).
$(SERVE_STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(SERVE_VENV)/bin/pip install --quiet -e '.[serve]'
	touch $(SERVE_STAMP)

serve-env: $(SERVE_STAMP)

system-deps:
	@if command -v mosquitto_sub >/dev/null && { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } \
		&& command -v chromium >/dev/null; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null \
		|| echo "could not install $(SYSTEM_PACKAGES): the broker and browser tests will be skipped"; \
	else echo "$(SYSTEM_PACKAGES) missing and no root apt-get: the broker and browser tests will be skipped"; fi

demo: $(STAMP)
	rm -rf demo-output
	$(VENV)/bin/edge-anomaly demo --out demo-output

test: $(STAMP) $(SERVE_STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) $(SERVE_VENV) demo-output .pytest_cache
