# Two commands do all set-up: `make run` (whole pipeline on the synthetic default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov (manifest/Dockerfile scanner) does not fit the main lock: it gets its own venv.
TOOLS  := .venv-tools
TSTAMP := $(TOOLS)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-all lint format lock bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(TSTAMP): constraints-tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q -c constraints-tools.txt checkov
	touch $(TSTAMP)

install: $(STAMP) $(TSTAMP)

## run: the whole pipeline (data -> preprocess -> train -> evaluate -> export -> register) via
## DVC, then the promotion decision (a refused candidate is a result, not a failure)
run: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc push -q || echo "dvc push failed (local remote); outputs are still in the cache"
	@echo; $(BIN)/python -c "import json; r = json.load(open('metrics/register.json')); print('Registered:', r['model_uri'])"
	@$(BIN)/cyclegan promote --params params.yaml --version "$$($(BIN)/python -c "import json; print(json.load(open('metrics/register.json'))['version'])")"; \
	  rc=$$?; case $$rc in 0) ;; 1) echo "Promotion refused: @champion unchanged (table above)";; *) exit $$rc;; esac
	@echo; echo "Done. Metrics: metrics/eval.json  Report: reports/eval/eval_report.html  MLflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

## test: the suite CI runs (slow real-data tests are included when they fit; see README)
test: $(STAMP) $(TSTAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q

test-all: $(STAMP) $(TSTAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## lock: regenerate constraints.txt from the current environment
lock: $(STAMP)
	{ head -n 3 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^-e' | sort -f; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py --size 64 --generator resnet_6blocks
	$(BIN)/python benchmarks/inference.py --quick

clean:
	rm -rf runs models metrics reports plots mlflow.db .pytest_cache

## image: the project image (Dockerfile) with docker or podman; VARIANT=cpu|cuda
IMAGE   ?= cyclegan-mlops
TAG     ?= 0.1.0
VARIANT ?= cpu
.PHONY: image
image:
	@engine=$$(command -v docker || command -v podman || true); \
	if [ -z "$$engine" ]; then \
	  echo "make image: neither docker nor podman is installed here; install one of them (or build this Dockerfile in CI). No image was built." >&2; \
	  exit 1; \
	fi; \
	if ! $$engine info >/dev/null 2>&1; then \
	  echo "make image: $$engine is installed but its engine is not reachable ('$$engine info' failed): start the docker daemon or podman service. No image was built." >&2; \
	  exit 1; \
	fi; \
	echo "building $(IMAGE):$(TAG)-$(VARIANT) with $$engine"; \
	$$engine build --build-arg VARIANT=$(VARIANT) -t $(IMAGE):$(TAG)-$(VARIANT) .
