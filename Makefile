# Two entry points for a fresh machine (see README):
#   make dev    install what is missing, build, apply D1 migrations, run wrangler dev
#   make test   install what is missing, then every test (scripts/test.sh): lint, unit, fuzz-short,
#               end-to-end and conformance, ending with one line "N passed, N failed"
# and the long runs: `make soak`, `make fuzz`, `make bench`.
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

RUST_SOURCES := $(shell find src -name '*.rs' -o -name '*.html') Cargo.toml Cargo.lock
EXAMPLE := examples/token-auth
EXAMPLE_SOURCES := $(shell find $(EXAMPLE)/src -name '*.rs') $(EXAMPLE)/Cargo.toml

# npm packages: installed with `npm ci` from the committed locks (the tree stays clean), again only
# when a lock changes. client-ts/ has what the Worker ships and the tools that build and run it
# (wrangler, esbuild, wasm-opt); tests/ the test clients; tests/conformance/ the conformance suite.
NPM_DIRS := client-ts tests tests/conformance
NPM_STAMPS := $(addsuffix /node_modules/.setup-stamp,$(NPM_DIRS))

.PHONY: dev test setup tools npm worker worker-faults example-token-auth cli builds deploy-check lint typecheck unit fuzz-short fuzz e2e conformance bench bench-streams profile soak soak-crash soak-load clean

setup: tools npm

tools:
	@bash scripts/setup-tools.sh

npm: $(NPM_STAMPS)

%/node_modules/.setup-stamp: %/package-lock.json %/package.json
	cd $* && npm ci --no-audit --no-fund
	@touch $@

# wrangler's [build] command; also run before tests so build errors surface early.
worker: build/index.js

# Every worker-build holds this lock: the builds share target/ (and the file cargo writes there last),
# and test Workers started at once may each run their wrangler [build] command.
BUILD_LOCK := flock target/.worker-build.lock

build/index.js: $(RUST_SOURCES) client-ts/node_modules/.setup-stamp
	@mkdir -p target
	$(BUILD_LOCK) worker-build --release
	@touch $@

# The fault-injection test Worker (tests/workers/faults/): the same crate with the Cargo feature
# `fault-injection` (crash points, src/faults.rs), in its own output dir (never the shipped build/).
# It shares target/ with the shipped build, so it reuses every compiled dependency and recompiles
# only this crate (about 8 s; a target dir of its own, even without LTO, costs a minute on a fresh
# clone); size does not matter for it, so no wasm-opt.
worker-faults: build-faults/index.js

build-faults/index.js: $(RUST_SOURCES) client-ts/node_modules/.setup-stamp
	@mkdir -p target
	$(BUILD_LOCK) worker-build --release --no-opt --out-dir build-faults . --features fault-injection
	@touch $@

# The example custom Worker (its wrangler [build] command).
example-token-auth: $(EXAMPLE)/build/index.js

$(EXAMPLE)/build/index.js: $(RUST_SOURCES) $(EXAMPLE_SOURCES) client-ts/node_modules/.setup-stamp
	@mkdir -p target
	cd $(EXAMPLE) && flock ../../target/.worker-build.lock worker-build --release
	@touch $@

# Every Worker the tests run.
builds: worker worker-faults example-token-auth cli

# The command-line tool (cli/), which tests/cli/ runs against the Worker.
cli:
	cargo build -p livestore-sync-cli

# Both Workers bundle for deployment (offline: --dry-run uploads nothing).
deploy-check: worker example-token-auth
	$(WRANGLER) deploy --dry-run --outdir .wrangler/deploy/root
	cd $(EXAMPLE) && $(WRANGLER) deploy --dry-run --outdir ../../.wrangler/deploy/token-auth

dev: setup worker
	$(WRANGLER) d1 migrations apply $(D1_NAME) --local
	$(WRANGLER) dev --ip 127.0.0.1 --port $(PORT) --var DS_WEBHOOK_ALLOW_LOOPBACK:true

lint: typecheck
	cargo fmt --all --check
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo clippy -p livestore-sync-rs --all-targets -- -D warnings
	cargo clippy -p livestore-sync-cli --all-targets -- -D warnings
	cargo clippy --workspace --exclude livestore-sync-cli --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p livestore-sync-rs --target wasm32-unknown-unknown --features fault-injection -- -D warnings
	cargo clippy --manifest-path fuzz/Cargo.toml -- -D warnings

# The TypeScript the Worker ships (client-ts/src), against the runtime's types.
typecheck: client-ts/node_modules/.setup-stamp
	cd client-ts && $(NODE_BIN)/tsc -p .

unit:
	cargo test --all-targets
	cargo test -p livestore-sync-cli

# libFuzzer over every decoder reachable from the network (fuzz/, see RELIABILITY.md):
# a short run of each target from the committed corpora, as part of `make test`...
FUZZ_SHORT_SECONDS ?= 8
fuzz-short: tools
	bash scripts/fuzz.sh $(FUZZ_SHORT_SECONDS)

# ...and the long form, which also merges inputs that add coverage into fuzz/corpus/.
FUZZ_SECONDS ?= 300
fuzz: tools
	bash scripts/fuzz.sh $(FUZZ_SECONDS) --merge

# The end-to-end suite (tests/, vitest): shared Workers started once per configuration, each
# storage-dependent file once per storage (projects d1 and do-sqlite). VITEST_ARGS picks files
# or tests, e.g. `make e2e VITEST_ARGS="sync/contract.test.mjs -t ServerAhead"`.
VITEST_ARGS ?=
e2e: npm builds
	@mkdir -p .wrangler/test-logs
	cd tests && npx vitest run $(VITEST_ARGS)

# The official Durable Streams conformance suite (tests/conformance/, pinned npm packages) against
# the Worker under wrangler dev on fresh state; prints the suite's counts per group.
conformance: npm worker
	node tests/conformance/run.mjs

# Everything, as CI runs it; see scripts/test.sh.
test:
	@bash scripts/test.sh

# Crash soak (RELIABILITY.md, "Crashes"): the crash tests with many SIGKILLs under load instead of 2,
# once per storage; results in .wrangler/test-logs/crash-<storage>.json.
CRASH_KILLS ?= 10

soak-crash: setup builds
	@mkdir -p .wrangler/test-logs
	cd tests && CRASH_KILLS=$(CRASH_KILLS) npx vitest run crash/

# Side-by-side benchmark (bench/, see README "Benchmarks"; not part of the tests): our Worker
# with D1 and with DO SQLite, a bare JS Durable Object ceiling and the TypeScript reference
# (@livestore/sync-cf 0.4.0 from bench/node_modules, pinned in bench/package.json), each under
# its own wrangler dev on fresh state; at most ~10 minutes. Prints a table and writes
# .wrangler/bench/bench.json. BENCH_ONLY=<scenarios,targets> runs a subset.
bench: setup worker bench/node_modules/.setup-stamp
	node bench/run.mjs

# Only the Durable Streams scenarios (our Worker with D1 storage).
bench-streams: setup worker bench/node_modules/.setup-stamp
	BENCH_ONLY=streams node bench/run.mjs

# A CPU profile of the Worker under one benchmark scenario: `make profile SCENARIO=catch-up-ws
# PROFILE_STORAGE=do-sqlite` (see bench/profile.mjs).
profile: setup worker bench/node_modules/.setup-stamp
	SCENARIO=$(SCENARIO) node bench/profile.mjs

# Long runs, not part of `make test`. `soak` runs every soak target.
soak: soak-crash soak-load

# Load soak (RELIABILITY.md § Load): 1,000 WebSocket clients on 10 stores with live pulls, 50 of them
# (real makeWsSync clients) pushing 20 batches each, once with D1 and once with DO SQLite storage.
# Prints delivery latency p50/p99/max and memory per idle socket; writes
# .wrangler/test-logs/load-<storage>-1000.json (progress: .wrangler/test-logs/load-progress-<storage>.log).
# `make test` runs the same test small (200 clients on 4 stores, 20 pushers).
SOAK_LOAD := LOAD_CLIENTS=1000 LOAD_STORES=10 LOAD_PUSHERS=50 LOAD_PUSHES=20

soak-load: setup worker
	cd tests && $(SOAK_LOAD) npx vitest run load/load.test.mjs

clean:
	rm -rf build build-faults target .wrangler $(addsuffix /node_modules,$(NPM_DIRS)) bench/node_modules fuzz/target fuzz/work fuzz/logs
