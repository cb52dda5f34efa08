# edgefabric — the two commands a newcomer needs are `make demo` and `make test`.
# Every target sets up what it needs first; each set-up step is idempotent and cached.

SHELL := /bin/bash
PY    := venv/bin/python
STACK ?= local
FROM  ?= dev
TO    ?= staging
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k failover -x"`.
PYTEST_ARGS ?=

.PHONY: help setup contracts contracts-toolchain engine pdns mqtt k8s k8s-provider demo test test-unit lint render promote-check local-env-up local-env-down bench bench-render bench-registry bench-failover bench-dataflow bench-local-stack clean

help:
	@echo "make demo           real 'pulumi up' of the local stack, then a live failover"
	@echo "make test           the whole test suite (starts the services it needs)"
	@echo "make setup          venv from requirements.txt (cached, idempotent)"
	@echo "make contracts      solc + anvil from npm, compile contracts/build/ServiceRegistry.json"
	@echo "make engine         build the Pulumi CLI from Go modules into .tools/bin (cached)"
	@echo "make k8s            etcd + Kubernetes control-plane binaries and kwok from Go modules (cached)"
	@echo "make lint           ruff, mypy, the README config reference"
	@echo "make render STACK=prod            Markdown summary of a stack rendered under mocks"
	@echo "make promote-check FROM=dev TO=staging   schema check between two stack configs"
	@echo "make bench          all benchmarks (render, registry, failover, dataflow, local-stack); each prints figures and ratios"

setup:
	@scripts/bootstrap.sh venv

# The npm toolchain only; the tests and the demo use the committed artifact, and a test
# fails when it is stale, so `make test` must not regenerate it first.
contracts-toolchain:
	@scripts/bootstrap.sh contracts

contracts: setup contracts-toolchain
	@$(PY) contracts/compile.py

engine:
	@tools/pulumi-engine/build.sh

pdns:
	@scripts/bootstrap.sh pdns

mqtt:
	@scripts/bootstrap.sh mqtt

# Local Kubernetes control planes: Debian's etcd, and kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok built from Go modules (cached; ~12 min cold on 2 cores).
k8s:
	@scripts/bootstrap.sh k8s
	@tools/kubernetes/build.sh

# The Kubernetes provider plugin from Go modules (cached; ~10 min cold on 2 cores).
k8s-provider: engine
	@tools/pulumi-kubernetes/build.sh

demo: setup contracts-toolchain engine pdns mqtt k8s k8s-provider
	@$(PY) scripts/demo.py

test: setup contracts-toolchain engine pdns mqtt k8s k8s-provider
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	@venv/bin/ruff check .
	@venv/bin/mypy
	@$(PY) -m tooling.config_reference --check

render: setup
	@$(PY) -m tooling.report --stack $(STACK)

promote-check: setup
	@$(PY) -m tooling.promote_check --from $(FROM) --to $(TO)

bench: bench-render bench-registry bench-failover bench-dataflow bench-local-stack

bench-render: setup
	@$(PY) bench/render.py

bench-registry: setup contracts-toolchain
	@$(PY) bench/registry.py

bench-failover: setup pdns
	@$(PY) bench/failover.py

bench-dataflow: setup mqtt
	@$(PY) bench/dataflow.py

# A first `up` of every tier onto the local clusters, the no-change preview, the control planes'
# memory, against the same objects created straight through the API servers (~8 min).
bench-local-stack: setup contracts-toolchain engine pdns mqtt k8s k8s-provider
	@$(PY) bench/local_stack.py

local-env-up: setup contracts-toolchain pdns
	@scripts/local-env up

local-env-down:
	@scripts/local-env down

clean:
	rm -rf .tools .pulumi-home .state .local-env .render
