# Set-up and the two jobs the README promises. Everything installs into .venv in this checkout; the broker
# and the browser that the integration tests use come from Debian's packages (skipped, with the reason, where
# they cannot be installed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := mosquitto mosquitto-clients chromium

.PHONY: demo test lint clean system-deps

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

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

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) demo-output .pytest_cache
