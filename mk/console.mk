# The web console (services/console): `make up` starts it with the services and prints its
# URL (PAYSAGA_CONSOLE_ADDRESS, default 127.0.0.1:8088). Its browser tests
# (tests/e2e/test_console.py) drive Debian's `chromium` through Playwright: browsers cannot
# be downloaded here, so `check-chromium` finds the machine's own (CHROMIUM=path, else
# `chromium` on PATH) and says how to install it when there is none.

CHROMIUM ?=
export CHROMIUM

.PHONY: check-chromium console
check-chromium:
	@found='$(CHROMIUM)'; [ -n "$$found" ] || found=$$(command -v chromium || true); \
	  [ -n "$$found" ] && [ -x "$$found" ] || { echo "error: chromium not found: install Debian's chromium package (apt-get install chromium) or set CHROMIUM=/path" >&2; exit 1; }

console: venv ## serve the console in the foreground (PAYSAGA_CONSOLE_ADDRESS, default 127.0.0.1:8088)
	@$(PY) -m services.console
