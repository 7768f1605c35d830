# IQ-720 trading-bot operator — developer entry points.
#   make test   every check CI runs (fmt, clippy, unit + integration + e2e tests on a
#               real local cluster, CRD drift, helm lint/template)
#   make demo   local control plane + operator + a paper-trading bot
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# CI keeps the Rust build outside the fresh clone so that warm runs are fast.
ifeq ($(CI),true)
CARGO_TARGET_DIR ?= $(HOME)/.cache/iq720/target
endif
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
export IQ720_CACHE_DIR ?= $(HOME)/.cache/iq720
export IQ720_RUN_DIR ?= $(CURDIR)/.run/cluster
CHART := charts/iq720-operator

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: test
test: lint crds-check chart-test chart-validate monitoring-test demo-test test-rust ## run every test (what CI runs)

.PHONY: lint
lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

.PHONY: test-rust
test-rust: ## unit, integration and e2e tests (brings the local cluster up and down)
	bash tests/scripts/with-cluster.sh cargo test --workspace --locked --no-fail-fast

.PHONY: test-unit
test-unit: ## tests that need no cluster
	cargo test --locked -p iq720-crds -p iq720-operator -p iq720-bot

.PHONY: crds
crds: ## regenerate the CRD YAML under charts/iq720-operator/crds
	cargo run --quiet --locked -p iq720-operator -- crd --out-dir $(CHART)/crds

.PHONY: crds-check
crds-check: ## fail when the committed CRDs differ from the generator
	cargo test --locked -p iq720-crds --test crd_drift

.PHONY: chart-test
chart-test: ## helm lint and helm template with default and non-default values
	bash tests/scripts/chart-test.sh

.PHONY: chart-validate
chart-validate: ## rendered chart vs the Kubernetes 1.34 schemas: kubeconform (offline), helm install and kubectl apply --dry-run=server
	IQ720_SKIP_NODE=1 bash tests/scripts/with-cluster.sh bash tests/scripts/chart-validate.sh

.PHONY: monitoring-test
monitoring-test: ## promtool tests of the alert rules (file and rendered PrometheusRule), Argo CD health checks in Lua
	bash tests/monitoring/run.sh

.PHONY: cluster-up
cluster-up: ## start the local control plane, node agent and MinIO
	bash tests/scripts/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## stop the local cluster (no process left behind)
	bash tests/scripts/cluster-down.sh

.PHONY: demo
demo: ## local cluster + operator + a paper-trading bot
	bash tests/scripts/demo.sh

.PHONY: demo-test
demo-test: ## `make demo` on a new cluster (own run dir, CRDs never seen), then helm upgrades of the operator with 1 and 2 replicas
	bash tests/scripts/demo-test.sh

.PHONY: bench
bench: ## bot engine benchmarks (criterion; figures in README.md)
	cargo bench -p iq720-bot --bench engine

.PHONY: bench-backup
bench-backup: ## BackupSchedule on a new cluster: 1 GiB database (operator RSS growth, throughput vs aws s3 cp), 100 bots in one schedule (DB_BYTES, BOTS)
	DB_BYTES=$(or $(DB_BYTES),1073741824) BOTS=$(or $(BOTS),100) bash tests/scripts/bench-backup.sh

.PHONY: bench-e2e
bench-e2e: ## emergency-stop latency and leader takeover on the local cluster
	bash tests/scripts/with-cluster.sh cargo test --locked -p iq720-tests --test operator_e2e -- \
	  --nocapture bot_lifecycle standby_operator 2>&1 | grep -E '^BENCH|test result'

.PHONY: bench-scale
bench-scale: ## one operator, N bots (N=1000) on a new cluster: converge time, RSS, polling CPU, apiserver writes (IDLE_SECONDS=600)
	N=$(or $(N),1000) IDLE_SECONDS=$(or $(IDLE_SECONDS),600) bash tests/scripts/bench-scale.sh

.PHONY: clean
clean: cluster-down ## stop the cluster and remove build output
	cargo clean
	rm -rf .run
