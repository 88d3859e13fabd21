# Each target creates the virtual environment it needs; nothing is assumed installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# tflite-runtime 2.14 (what Raspberry Pi images ship) fails with numpy 2: it gets its own venv, without torch.
TFLRT_VENV := .venv-tflrt
TFLRT_STAMP := $(TFLRT_VENV)/.installed-stamp
PIP_FLAGS := -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint bench venv tflrt clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[export,micro,train,dev,executorch,ort]'
	touch $@

tflrt: $(TFLRT_STAMP)

$(TFLRT_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(TFLRT_VENV)
	$(TFLRT_VENV)/bin/python -m pip install $(PIP_FLAGS) 'numpy<2' 'tflite-runtime==2.14.0'
	touch $@

# edge-lstm train (a fixed number of epochs: the same figures on every run), then edge-lstm export.
demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) $(TFLRT_STAMP)
	$(VENV)/bin/ruff check edge_lstm tests examples benchmarks
	EDGE_LSTM_TFLRT_PYTHON=$(abspath $(TFLRT_VENV))/bin/python $(VENV)/bin/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check edge_lstm tests examples benchmarks
	$(VENV)/bin/mypy edge_lstm

bench: $(STAMP)
	$(PY) benchmarks/tflite.py
	$(PY) benchmarks/profile_overhead.py
	$(PY) benchmarks/quantize.py
	$(PY) benchmarks/firmware.py
	$(PY) benchmarks/predict.py

clean:
	rm -rf $(VENV) $(TFLRT_VENV) examples/out
