# The two commands a newcomer needs: `make run` (set up + the main job) and `make test`.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint format bench lock clean stack-deps browser-deps player-deps wasm-deps navidrome-plugin stack-up stack-down stack-status

# Create the virtual environment and install the locked dependency set (re-runs when the lock changes).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# The main job on the embedded defaults: demo corpus -> manifest -> features -> triplet model (MLflow, gate)
# -> Milvus Lite collection behind the alias `tracks` (the champion if it beats the baselines, else the
# strongest baseline; the refresh says which) -> recommendations. A second run recomputes nothing
# that did not change (training re-runs only when the feature store or the recipe changed).
run: $(STAMP)
	$(BIN)/musicrec data fetch-demo
	$(BIN)/musicrec features build
	$(BIN)/musicrec train --if-changed
	$(BIN)/musicrec index refresh --model-version best
	$(BIN)/musicrec recommend --examples 3

test: $(STAMP) stack-deps browser-deps player-deps wasm-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

# The local service stack (`musicrec stack`): Debian's PostgreSQL 15 and Redis, everything else from the lock.
stack-deps:
	@if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || ! command -v redis-server >/dev/null; then \
	  echo "installing postgresql-15 and redis-server (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-15 redis-server >/dev/null; \
	fi

# The web page's browser tests: Debian's headless Chromium and its chromedriver.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# The player tests: Debian's Music Player Daemon and its command-line client, started by the tests themselves.
player-deps:
	@if ! command -v mpd >/dev/null || ! command -v mpc >/dev/null; then \
	  echo "installing mpd and mpc (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mpd mpc >/dev/null; \
	fi

# The Navidrome plugin's toolchain: Debian's rustc and cargo, the wasm32 standard library and the packaged
# crates it builds from offline (integrations/navidrome/.cargo/config.toml).
WASM_APT := rustc cargo libstd-rust-dev-wasm32 lld-14 librust-serde-dev librust-serde-json-dev
wasm-deps:
	@if [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/wasm32-unknown-unknown ] || [ ! -x /usr/bin/lld-14 ] || \
	    ! ls -d /usr/share/cargo/registry/serde_json-1.* >/dev/null 2>&1; then \
	  echo "installing $(WASM_APT) (apt-get)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(WASM_APT) >/dev/null; \
	fi

# The Navidrome plugin (docs/navidrome.md): Rust -> wasm32 with Debian's rustc (not rustup's), packed as an .ndp.
ND := integrations/navidrome
ND_WASM := build/navidrome-plugin/wasm32-unknown-unknown/release/musicrec_navidrome.wasm
navidrome-plugin: $(ND)/dist/musicrec.ndp

$(ND_WASM): $(ND)/src/lib.rs $(ND)/Cargo.toml $(ND)/.cargo/config.toml
	cd $(ND) && RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --quiet

$(ND)/dist/musicrec.ndp: $(ND_WASM) $(ND)/manifest.json $(ND)/package.py
	$(PYTHON) $(ND)/package.py $(ND)/manifest.json $(ND_WASM) $@

stack-up: $(STAMP) stack-deps
	$(BIN)/musicrec stack up

stack-down: $(STAMP)
	$(BIN)/musicrec stack down

stack-status: $(STAMP)
	$(BIN)/musicrec stack status

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Re-resolve the direct dependencies in requirements.in into a fresh lock (needs the package index).
lock:
	rm -rf /tmp/musicrec-lock && $(PYTHON) -m venv /tmp/musicrec-lock
	/tmp/musicrec-lock/bin/pip install --quiet -r requirements.in
	{ echo "# Locked dependency set for musicrec: pip freeze of requirements.in on Python 3.11 (x86_64)."; \
	  /tmp/musicrec-lock/bin/pip freeze | grep -v '^-e'; } > requirements.lock

clean:
	rm -rf $(VENV) data .stack
