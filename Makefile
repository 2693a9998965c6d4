# Two entry points for a fresh machine (see README):
#   make dev    install what is missing, build, apply D1 migrations, run wrangler dev
#   make test   install what is missing, then lint, unit tests and the end-to-end suite
# and `make soak`, the long crash run (RELIABILITY.md).
SHELL := /bin/bash
.DEFAULT_GOAL := dev
export PATH := $(HOME)/.cargo/bin:$(PATH)

PORT ?= 8787
NODE_BIN := $(CURDIR)/client-ts/node_modules/.bin
WRANGLER := $(NODE_BIN)/wrangler
D1_NAME := livestore-sync

# Keep wrangler and worker-build offline: local tool binaries, no telemetry, no cf fetch.
export CLOUDFLARE_CF_FETCH_ENABLED := false
export WRANGLER_SEND_METRICS := false
export WASM_BINDGEN_BIN := wasm-bindgen
export WASM_OPT_BIN := $(NODE_BIN)/wasm-opt
export ESBUILD_BIN := $(NODE_BIN)/esbuild

RUST_SOURCES := $(shell find src -name '*.rs') Cargo.toml Cargo.lock
NPM_STAMP := client-ts/node_modules/.setup-stamp
EXAMPLE := examples/token-auth
EXAMPLE_SOURCES := $(shell find $(EXAMPLE)/src -name '*.rs') $(EXAMPLE)/Cargo.toml

.PHONY: dev test setup tools npm worker worker-faults example-token-auth deploy-check lint unit fuzz-short fuzz e2e conformance bench bench-streams soak soak-crash soak-load clean

setup: tools npm

tools:
	@bash scripts/setup-tools.sh

npm: $(NPM_STAMP)

$(NPM_STAMP): client-ts/package.json
	cd client-ts && npm install --no-audit --no-fund
	@touch $@

# wrangler's [build] command; also run before tests so build errors surface early.
worker: build/index.js

build/index.js: $(RUST_SOURCES) $(NPM_STAMP)
	worker-build --release
	@touch $@

# The fault-injection test Worker (client-ts/test/faults/): the same crate with the Cargo feature
# `fault-injection` (crash points, src/faults.rs), in its own output and target dirs so it never
# mixes with the shipped build/ nor makes cargo rebuild one for the other.
worker-faults: build-faults/index.js

build-faults/index.js: $(RUST_SOURCES) $(NPM_STAMP)
	CARGO_TARGET_DIR=target/fault-injection worker-build --release --out-dir build-faults . --features fault-injection
	@touch $@

# The example custom Worker (its wrangler [build] command).
example-token-auth: $(EXAMPLE)/build/index.js

$(EXAMPLE)/build/index.js: $(RUST_SOURCES) $(EXAMPLE_SOURCES) $(NPM_STAMP)
	cd $(EXAMPLE) && worker-build --release
	@touch $@

# Both Workers bundle for deployment (offline: --dry-run uploads nothing).
deploy-check: worker example-token-auth
	$(WRANGLER) deploy --dry-run --outdir .wrangler/deploy/root
	cd $(EXAMPLE) && $(WRANGLER) deploy --dry-run --outdir ../../.wrangler/deploy/token-auth

dev: setup worker
	$(WRANGLER) d1 migrations apply $(D1_NAME) --local
	$(WRANGLER) dev --ip 127.0.0.1 --port $(PORT)

lint:
	cargo fmt --all --check
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo clippy -p livestore-sync-rs --all-targets -- -D warnings
	cargo clippy --workspace --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p livestore-sync-rs --target wasm32-unknown-unknown --features fault-injection -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml -- -D warnings

unit:
	cargo test --all-targets

# libFuzzer over every decoder reachable from the network (fuzz/, see RELIABILITY.md):
# a short run of each target from the committed corpora, as part of `make test`...
FUZZ_SHORT_SECONDS ?= 8
fuzz-short: tools
	bash scripts/fuzz.sh $(FUZZ_SHORT_SECONDS)

# ...and the long form, which also merges inputs that add coverage into fuzz/corpus/.
FUZZ_SECONDS ?= 300
fuzz: tools
	bash scripts/fuzz.sh $(FUZZ_SECONDS) --merge

# The end-to-end suite starts its own wrangler dev instances on fresh state and stops them.
# It runs twice: everything with D1 storage, then the storage-dependent files with DO SQLite
# (hooks.test.mjs drives the example Worker, which always uses DO SQLite).
E2E_DO_SQLITE := test/ws-sync.test.mjs test/restart.test.mjs test/bad-input.test.mjs test/http-sync.test.mjs test/transports-cors.test.mjs test/do-rpc.test.mjs \
  test/crash.test.mjs test/crash-points.test.mjs test/load.test.mjs test/load-contention.test.mjs test/auth.test.mjs
E2E_REPORTS := ../.wrangler/test-logs/vitest-d1.json ../.wrangler/test-logs/vitest-do-sqlite.json

e2e: worker worker-faults example-token-auth
	@mkdir -p .wrangler/test-logs
	@rm -f .wrangler/test-logs/vitest-*.json
	cd client-ts && \
	  E2E_STORAGE=d1 npx vitest run --reporter=default --reporter=json --outputFile=../.wrangler/test-logs/vitest-d1.json; s1=$$?; \
	  E2E_STORAGE=do-sqlite npx vitest run $(E2E_DO_SQLITE) --reporter=default --reporter=json --outputFile=../.wrangler/test-logs/vitest-do-sqlite.json; s2=$$?; \
	  node scripts/summary.mjs $(E2E_REPORTS); s3=$$?; \
	  exit $$((s1 | s2 | s3))

# The official Durable Streams conformance suite (conformance/, pinned npm packages) against
# the Worker under wrangler dev on fresh state; prints the suite's counts per group.
CONFORMANCE_STAMP := conformance/node_modules/.setup-stamp

$(CONFORMANCE_STAMP): conformance/package.json
	cd conformance && npm install --no-audit --no-fund
	@touch $@

conformance: $(CONFORMANCE_STAMP) worker
	node conformance/run.mjs

# Crash soak (RELIABILITY.md, "Crashes"): the crash tests of the e2e suite with many SIGKILLs under
# load instead of 2, once per storage; results in .wrangler/test-logs/crash-<storage>.json.
CRASH_KILLS ?= 10
CRASH_TESTS := test/crash.test.mjs test/crash-points.test.mjs

soak-crash: setup worker worker-faults
	@mkdir -p .wrangler/test-logs
	cd client-ts && \
	  E2E_STORAGE=d1 CRASH_KILLS=$(CRASH_KILLS) npx vitest run $(CRASH_TESTS); s1=$$?; \
	  E2E_STORAGE=do-sqlite CRASH_KILLS=$(CRASH_KILLS) npx vitest run $(CRASH_TESTS); s2=$$?; \
	  exit $$((s1 | s2))

# Side-by-side benchmark (bench/, see README "Benchmarks"; not part of the tests): our Worker
# with D1 and with DO SQLite, a bare JS Durable Object ceiling and the TypeScript reference
# (@livestore/sync-cf 0.4.0 from bench/node_modules, pinned in bench/package.json), each under
# its own wrangler dev on fresh state; at most ~10 minutes. Prints a table and writes
# .wrangler/bench/bench.json. BENCH_ONLY=<scenarios,targets> runs a subset.
BENCH_STAMP := bench/node_modules/.setup-stamp

$(BENCH_STAMP): bench/package.json
	cd bench && npm install --no-audit --no-fund
	@touch $@

bench: setup worker $(BENCH_STAMP)
	node bench/run.mjs

# Only the Durable Streams scenarios (our Worker with D1 storage).
bench-streams: setup worker $(BENCH_STAMP)
	BENCH_ONLY=streams node bench/run.mjs

test: setup lint unit fuzz-short deploy-check e2e conformance

# Long runs, not part of `make test`. `soak` runs every soak target.
soak: soak-crash soak-load

# Load soak (RELIABILITY.md § Load): 1,000 WebSocket clients on 10 stores with live pulls, 50 of them
# (real makeWsSync clients) pushing 20 batches each, once with D1 and once with DO SQLite storage.
# Prints delivery latency p50/p99/max and memory per idle socket; writes
# .wrangler/test-logs/load-<storage>-1000.json (progress: .wrangler/test-logs/load-progress-<storage>.log).
# `make test` runs the same test small (200 clients on 4 stores, 20 pushers).
SOAK_LOAD := LOAD_CLIENTS=1000 LOAD_STORES=10 LOAD_PUSHERS=50 LOAD_PUSHES=20

soak-load: setup worker
	cd client-ts && \
	  E2E_STORAGE=d1 $(SOAK_LOAD) npx vitest run test/load.test.mjs; s1=$$?; \
	  E2E_STORAGE=do-sqlite $(SOAK_LOAD) npx vitest run test/load.test.mjs; s2=$$?; \
	  exit $$((s1 | s2))

clean:
	rm -rf build build-faults target .wrangler client-ts/node_modules fuzz/target fuzz/work fuzz/logs
