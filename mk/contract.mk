# The contract: pinned tools (buf, grpcurl), code generation, and the checks that
# keep protos/, gen/ and the released baseline from drifting apart.

BUF_VERSION := v1.75.0
GRPCURL_VERSION := v1.9.4
BUF := $(TOOLS_BIN)/buf
GRPCURL := $(TOOLS_BIN)/grpcurl

PROTO_DIR := protos
# The public contract (paysaga.v1) and the operators' API (paysaga.admin.v1).
PROTOS := $(sort $(wildcard $(PROTO_DIR)/paysaga/v1/*.proto $(PROTO_DIR)/paysaga/admin/v1/*.proto))
GEN_DIR := gen
# The released contract that `buf breaking` compares against: a buf image, which
# buf never reads as a source (it only takes .proto files from the module).
BASELINE := $(PROTO_DIR)/baseline/paysaga-v1.binpb

# go-install-pinned(binary, module path, version): install unless the binary is
# already built from that module version (read back from its embedded build info).
define go-install-pinned
	@have=$$(go version -m $(TOOLS_BIN)/$(1) 2>/dev/null | awk '$$1 == "mod" {print $$3}' || true); \
	if [ "$$have" = "$(3)" ]; then \
	  echo "==> $(1) $(3) already in $(TOOLS_BIN)"; \
	else \
	  echo "==> installing $(1) $(3) into $(TOOLS_BIN) (go install $(2)@$(3))"; \
	  GOBIN=$(TOOLS_BIN) go install $(2)@$(3); \
	fi
endef

.PHONY: tools
tools: | check-go ## install pinned buf and grpcurl into .tools/bin
	@mkdir -p $(TOOLS_BIN)
	$(call go-install-pinned,buf,github.com/bufbuild/buf/cmd/buf,$(BUF_VERSION))
	$(call go-install-pinned,grpcurl,github.com/fullstorydev/grpcurl/cmd/grpcurl,$(GRPCURL_VERSION))

.PHONY: gen
gen: venv ## regenerate gen/ (pb2, pb2_grpc, pyi) from protos/
	@echo "==> generating $(GEN_DIR)/paysaga from $(PROTO_DIR)/"
	@rm -rf $(GEN_DIR)/paysaga
	@mkdir -p $(GEN_DIR)/paysaga/v1 $(GEN_DIR)/paysaga/admin/v1
	$(PY) -m grpc_tools.protoc -I$(PROTO_DIR) \
	  --python_out=$(GEN_DIR) --pyi_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) $(PROTOS)
	@# setuptools installs gen/paysaga as the package `paysaga`: it needs these; py.typed
	@# lets a client's type checker use the .pyi stubs.
	@touch $(GEN_DIR)/paysaga/__init__.py $(GEN_DIR)/paysaga/v1/__init__.py $(GEN_DIR)/paysaga/py.typed \
	  $(GEN_DIR)/paysaga/admin/__init__.py $(GEN_DIR)/paysaga/admin/v1/__init__.py

.PHONY: contract
contract: venv tools ## buf lint, buf breaking against the baseline, contract tests
	@echo "==> buf lint"
	$(BUF) lint
	@echo "==> buf breaking against $(BASELINE)"
	$(BUF) breaking --against $(BASELINE)
	@echo "==> contract tests"
	$(PY) -m pytest tests/contract -q

.PHONY: contract-baseline
contract-baseline: tools ## refresh the released-contract baseline (on purpose only)
	@echo "==> REFRESHING the contract baseline $(BASELINE) from $(PROTO_DIR)/"
	@echo "    buf breaking will from now on compare against the protos as they are now;"
	@echo "    commit $(BASELINE) only when this contract is released."
	@mkdir -p $(dir $(BASELINE))
	$(BUF) build -o $(BASELINE)
