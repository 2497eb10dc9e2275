# smtpout: a Fluent Bit output plugin that delivers every record as one signed email.

GO       ?= go
GOFLAGS  ?=
MAILPIT_VERSION ?= v1.33.1
BIN      := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

.PHONY: all test unit lint mailpit bench bench-fluentbit fuzz soak demo docker clean

all: smtpout.so smtpout

SOURCES := $(shell find . \( -name '*.go' -o -name '*.h' \) -not -path './test/*' -not -name '*_test.go') go.mod go.sum

# The plugin Fluent Bit loads with -e.
smtpout.so: $(SOURCES)
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -trimpath -ldflags="-s -w" -o $@ .

# The operators' tool: check, probe, send, verify.
smtpout: $(SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $@ ./cmd/smtpout

# mailpit is the real SMTP server the tests start; installed into ./bin when missing.
mailpit: $(BIN)/mailpit
$(BIN)/mailpit:
	@if command -v mailpit >/dev/null 2>&1; then mkdir -p $(BIN) && ln -sf "$$(command -v mailpit)" $@; \
	else GOBIN=$(BIN) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION); fi

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every test, race detector on; mailpit-backed tests fail rather than skip when SMTPOUT_REQUIRE_MAILPIT=1.
test: mailpit
	SMTPOUT_REQUIRE_MAILPIT=1 MAILPIT=$(BIN)/mailpit $(GO) test -race -count=1 $(GOFLAGS) ./...

unit:
	CGO_ENABLED=0 $(GO) test -count=1 ./config/... ./output/... ./mailer/... ./chunk/... ./fbconf/... ./cmd/... ./internal/...

# Micro-benchmarks, then the engine (go run ./test/bench): defaults (100,000 emails of a 2 KB
# record, machine format, implicit TLS, 4 connections, 2 workers, peak RSS also read at 10,000),
# then at a simulated 10 ms RTT with PIPELINING+CHUNKING, PIPELINING only, and neither; then
# the real host (bench-fluentbit).
BENCHTIME ?= 1s
bench: smtpout.so
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./output ./chunk ./mailer ./internal/pipeline ./test/bench
	$(GO) run ./test/bench -so ./smtpout.so
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 4000
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 2000 -chunking off
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 2000 -pipelining off
	@$(MAKE) --no-print-directory bench-fluentbit

# The real host: each Fluent Bit in FLUENT_BIT_DIR/<version>/fluent-bit tails BENCH_FB_RECORDS
# 2 KB JSON lines into smtpout.so (defaults, Workers 2, implicit TLS) and then into a null
# output, BENCH_FB_REPEAT times each; it prints the medians (about 30 s per version).
FLUENT_BIT_DIR      ?= ../shared/fluent-bit
FLUENT_BIT_VERSIONS ?= 4.2.8 5.1.1
BENCH_FB_RECORDS    ?= 10000
BENCH_FB_REPEAT     ?= 3
bench-fluentbit: smtpout.so
	@if [ ! -d "$(FLUENT_BIT_DIR)" ]; then \
		echo "bench-fluentbit: SKIPPED: $(FLUENT_BIT_DIR) does not exist (set FLUENT_BIT_DIR to a directory holding <version>/fluent-bit)"; \
		exit 0; fi; \
	for v in $(FLUENT_BIT_VERSIONS); do \
		fb="$(FLUENT_BIT_DIR)/$$v/fluent-bit"; \
		if [ ! -x "$$fb" ]; then echo "bench-fluentbit: SKIPPED Fluent Bit $$v: $$fb not found"; continue; fi; \
		$(GO) run ./test/bench -so ./smtpout.so -fluent-bit "$$fb" -records $(BENCH_FB_RECORDS) -repeat $(BENCH_FB_REPEAT) || exit 1; \
	done

# Each fuzz target for a bounded time (FUZZTIME each); the seed corpora also run in make test.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./chunk -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./output -run '^$$' -fuzz '^FuzzRender$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s

# 20,000 records with faults in 5% of transactions, reported (not part of make test).
soak:
	SMTPOUT_SOAK=1 $(GO) test -count=1 -run '^TestSoak$$' -timeout 10m -v ./test

clean:
	rm -f smtpout.so smtpout.h smtpout
	rm -rf $(BIN)

demo:
	./demo/run.sh

docker:
	docker build -t smtpout .
