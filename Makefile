# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
export GOTOOLCHAIN := local
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
SWAG := $(GO) run github.com/swaggo/swag/cmd/swag@v1.16.6
SWAG_INIT := init -g main.go --outputTypes go,json,yaml --quiet

.PHONY: run test build docs docs-check vet fmt-check deps image loadtest fuzz reliability bench

IMAGE ?= couponsvc:$(VERSION)
LOADTEST_ARGS ?=

## run: serve on :8080 with the demo coupons, starting local PostgreSQL/Redis when none is reachable
run:
	scripts/run.sh

## test: every test, integration tests included, plus gofmt, go vet and the docs/ freshness check
test: deps fmt-check vet docs-check
	# One package at a time: the fault and crowd tests measure latencies that a JVM (the JMeter
	# smoke) or another crowd on the same two cores would distort.
	$(GO) test -count=1 -p 1 -timeout 25m ./...
	# The manifests' tests are modules of their own, so that the service's go.mod lists only what
	# the service needs: k8s (kustomize, the Kubernetes API types, a real API server) and
	# k8s/monitoring (the Prometheus Operator's types, Prometheus's parser).
	cd k8s && $(GO) vet ./... && $(GO) test -count=1 -timeout 15m ./...
	cd k8s/monitoring && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

FUZZTIME ?= 60s
## fuzz: fuzz the request decoding and validation (FUZZTIME, default 60s; make test runs 10s)
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeIssueRequest -fuzztime $(FUZZTIME) ./handler

## reliability: run the fault and hostile-input tests and regenerate docs/RELIABILITY.md from them
reliability:
	scripts/reliability.sh

## build: the couponsvc binary
build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o couponsvc .

deps:
	scripts/deps.sh test

## docs: regenerate the OpenAPI document in docs/ from the swag annotations
docs:
	$(SWAG) $(SWAG_INIT) -o docs

## docs-check: fail when docs/ is not what swag generates from the code
docs-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(SWAG) $(SWAG_INIT) -o $$tmp/docs >/dev/null && \
	for f in docs.go swagger.json swagger.yaml; do cmp -s docs/$$f $$tmp/docs/$$f || { \
	  echo "docs/ is stale: run 'make docs' and commit it"; diff -u docs/$$f $$tmp/docs/$$f | head -40; exit 1; }; done

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## image: the container image (Dockerfile) as $(IMAGE), built with Docker (or Podman) when one is available
image:
	@if docker info >/dev/null 2>&1; then engine=docker; \
	elif podman info >/dev/null 2>&1; then engine=podman; \
	else echo "image: no Docker daemon (or Podman) available; install Docker, or for minikube: eval \$$(minikube docker-env) (see k8s/README.md)" >&2; exit 1; fi; \
	echo "$$engine build --build-arg VERSION=$(VERSION) -t $(IMAGE) ."; \
	$$engine build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

## loadtest: the JMeter flash crowd (jmeter/) against the service on 127.0.0.1:8080 (make run);
## more -J properties in LOADTEST_ARGS, e.g. make loadtest LOADTEST_ARGS='-Jhost=192.168.49.2 -Jport=80'
loadtest:
	$(GO) run ./jmeter/cmd/loadtest -- $(LOADTEST_ARGS)

## bench: couponsvc vs the reference design (Redisson-style lock around read-check-insert-increment)
## on the four workloads, W5 (100 coupons at once), W6 (the opening moment) and W7 (W1 with
## identity on: what verifying tokens costs), one instance
## direct, one and N behind nginx as ingress-nginx, next to pgbench/redis-benchmark; writes
## cmd/bench/RESULTS.md and docs/dashboard.png (the Grafana dashboard's panels, from W4's scraped /metrics). E.g. make bench BENCH_ARGS='-quick -instances 2 -deployments nginx-N'
## (flags: go run ./cmd/bench -h)
bench:
	scripts/deps.sh
	$(GO) run ./cmd/bench -out cmd/bench/RESULTS.md -dashboard docs/dashboard.png $(BENCH_ARGS)
