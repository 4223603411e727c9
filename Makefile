# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
export GOTOOLCHAIN := local
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
SWAG := $(GO) run github.com/swaggo/swag/cmd/swag@v1.16.6
SWAG_INIT := init -g main.go --outputTypes go,json,yaml --quiet

.PHONY: run test build docs docs-check vet fmt-check deps

## run: serve on :8080 with the demo coupons, starting local PostgreSQL/Redis when none is reachable
run:
	scripts/run.sh

## test: every test, integration tests included, plus gofmt, go vet and the docs/ freshness check
test: deps fmt-check vet docs-check
	$(GO) test -count=1 -timeout 25m ./...

## build: the couponsvc binary
build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o couponsvc .

deps:
	scripts/deps.sh

## docs: regenerate the OpenAPI document in docs/ from the swag annotations
docs:
	$(SWAG) $(SWAG_INIT) -o docs

## docs-check: fail when docs/ is not what swag generates from the code
docs-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(SWAG) $(SWAG_INIT) -o $$tmp >/dev/null && \
	diff -r docs $$tmp >/dev/null || { echo "docs/ is stale: run 'make docs' and commit it"; diff -ru docs $$tmp | head -40; exit 1; }

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
