# nser-pipeline front doors. Variables: DATASET, DATA_ROOT, SNR, NOISE, MODEL, OUT, EPOCHS.
PYTHON ?= python3
DATASET ?= emodb
MODEL ?= openai/whisper-small
SNR ?= clean
NOISE ?=
DATA_ROOT ?= data/$(DATASET)
CACHE_ROOT ?= caches
MODEL_TAG = $(subst /,_,$(subst :,_,$(MODEL)))
CONDITION = $(if $(filter clean,$(SNR)),clean,$(notdir $(NOISE))_$(SNR)dB)
OUT ?= $(CACHE_ROOT)/$(DATASET)/$(CONDITION)/$(MODEL_TAG).zarr
NOISE_ARGS = $(if $(filter clean,$(SNR)),,--noise $(NOISE) --snr $(SNR))

DEMO_DIR ?= demo_out
DEMO_MODEL ?= bundled:base
DEMO_SNR ?= 0
DEMO_EPOCHS ?= 10

.PHONY: install test extract demo clean-demo

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e '.[bundled,test]'

test:
	$(PYTHON) -m pytest -q

## make extract DATASET=emodb DATA_ROOT=/path NOISE=/path/to/babble SNR=-5 MODEL=openai/whisper-small
extract:
	@if [ "$(SNR)" != clean ] && [ -z "$(NOISE)" ]; then echo "SNR=$(SNR) needs NOISE=<folder of noise recordings>"; exit 2; fi
	nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(MODEL) $(NOISE_ARGS) --out $(OUT)
	nser cache info $(OUT)

## Synthetic espeak-ng corpus + synthetic babble -> bundled Whisper base -> layer adapter -> results table.
demo:
	nser demo-corpus $(DEMO_DIR)
	nser-extract --corpus csv --data-root $(DEMO_DIR)/corpus --model $(DEMO_MODEL) \
	  --noise $(DEMO_DIR)/noise/babble --noise-type babble --snr $(DEMO_SNR) --out $(DEMO_DIR)/cache.zarr
	nser cache info $(DEMO_DIR)/cache.zarr
	nser-train --cache $(DEMO_DIR)/cache.zarr --layers enc:all,dec:all --epochs $(DEMO_EPOCHS) \
	  --out $(DEMO_DIR)/run --quiet

clean-demo:
	rm -rf $(DEMO_DIR)
