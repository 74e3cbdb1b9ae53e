# Every target has a "## description" on its line: `make help` prints them.
.DEFAULT_GOAL := help
SHELL := bash

GO           ?= go
PKGS         ?= ./...
TEST_TIMEOUT ?= 30m
FUZZTIME     ?= 10s

.PHONY: help
help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_.-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: demo
demo: ## Run the worker on embedded defaults (in-process Kafka, SQLite, sandbox) with a sample; print the report
	$(GO) run ./cmd/closedloop demo $(DEMO_FLAGS)

.PHONY: build
build: ## Build bin/closedloop
	$(GO) build -o bin/closedloop ./cmd/closedloop

.PHONY: test
test: ## go test -race ./... against real Kafka and PostgreSQL (started and stopped here unless CLOSEDLOOP_TEST_* are set)
	scripts/ensure-chromium.sh
	scripts/with-services.sh $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: services-up
services-up: ## Start the test PostgreSQL and Kafka; prints the CLOSEDLOOP_TEST_*=... lines to export
	@scripts/postgres.sh start
	@scripts/kafka.sh start

.PHONY: services-down
services-down: ## Stop the test PostgreSQL and Kafka started by services-up
	@rc=0; scripts/kafka.sh stop || rc=1; scripts/postgres.sh stop || rc=1; exit $$rc

.PHONY: lint
lint: ## gofmt -l (must list nothing) and go vet ./...
	@files=$$(find . -name '*.go' -not -path '*/testdata/*' -not -path './.*' -print0 | xargs -0 gofmt -l); \
	if [ -n "$$files" ]; then echo "gofmt -w needed for:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...

.PHONY: fuzz
fuzz: ## Fuzz every Fuzz* target for FUZZTIME each (default 10s)
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

.PHONY: bench
bench: ## Benchmark vs the raw ceiling on real Kafka+PostgreSQL (N=1000000; `N=100000 make bench`); writes testdata/bench/
	scripts/with-services.sh $(GO) run ./cmd/clbench -n $(or $(N),1000000) -out testdata/bench/results.json -md testdata/bench/README.md -pprof $${TMPDIR:-/tmp}/closedloop-bench-cpu.pprof

.PHONY: chaos
chaos: ## Full fault suite: 20,000 stage changes through kill -9, broker and database restarts, platform faults
	CLOSEDLOOP_CHAOS=full $(GO) test -count=1 -v -timeout 30m -run TestFaults ./internal/chaos
