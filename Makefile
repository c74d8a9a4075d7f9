# FODC proxy and agent.

GO              ?= go
PROTOC          ?= protoc
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN           ?= $(shell $(GO) env GOPATH)/bin
PROTO_DIR       := api/proto
PROTO_FILES     := $(shell find $(PROTO_DIR) -name '*.proto' | sort)
STATICCHECK_VERSION := v0.8.2

.PHONY: all build test test-short lint vet fmt proto check-generated bench bench-load demo tools image clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

## test: the whole suite, race detector on (what CI runs).
test:
	$(GO) test -race -shuffle=on -count=1 -timeout 15m ./...

test-short:
	$(GO) test -count=1 -short ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

## tools: install the pinned protoc plugins.
tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

## proto: regenerate the committed Go code from api/proto (needs Debian's protobuf-compiler and libprotobuf-dev).
proto: tools
	PATH="$(GOBIN):$$PATH" $(PROTOC) -I $(PROTO_DIR) -I /usr/include \
		--go_out=paths=source_relative:$(PROTO_DIR) \
		--go-grpc_out=paths=source_relative:$(PROTO_DIR) \
		$(patsubst $(PROTO_DIR)/%,%,$(PROTO_FILES))

check-generated: proto
	git diff --exit-code -- $(PROTO_DIR)

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=6 ./internal/... | tee bench.txt

## bench-load: the 1 M-series scrape of docs/performance.md against the proxy binary.
bench-load: build
	bin/fodc-bench --spawn-proxy bin/fodc-proxy --agents 100 --series 10000 \
		--scrapers 1 --scrapes 5 --warmup 1 --scrape-timeout 10s

demo:
	$(GO) run ./cmd/fodc-demo

## image: container images of the proxy and the agent (needs docker or podman).
DOCKER  ?= docker
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
image:
	$(DOCKER) build -f deploy/docker/Dockerfile --build-arg BIN=fodc-proxy --build-arg VERSION=$(VERSION) -t fodc-proxy:$(VERSION) .
	$(DOCKER) build -f deploy/docker/Dockerfile --build-arg BIN=fodc-agent --build-arg VERSION=$(VERSION) -t fodc-agent:$(VERSION) .

clean:
	rm -rf bin bench.txt
