# nser-pipeline front doors; `make help` lists the targets and variables with their defaults.
PYTHON ?= python3
DATASET ?= emodb
MODEL ?= openai/whisper-small
SNR ?= clean
NOISE ?=
NOISE_PRESET ?=
DEMAND_ROOT ?= data/DEMAND
NOISE_PRESETS ?= human park traffic
DATA_ROOT ?= data/$(DATASET)
CACHE_ROOT ?= caches
DEVICE ?= auto
BATCH ?= 8
EPOCHS ?= 50
FUSION ?= l-adapter
LAYERS ?= enc:blocks,dec:blocks
RUN_DIR ?= runs/$(DATASET)/$(CONDITION)/$(MODEL_TAG)/$(FUSION)
GRID ?= grids/emodb_fusions.yaml
GRID_OUT ?=
MODEL_TAG = $(subst /,_,$(subst :,_,$(MODEL)))
CONDITION = $(if $(filter clean,$(SNR)),clean,$(if $(NOISE_PRESET),$(NOISE_PRESET),$(notdir $(patsubst %/,%,$(NOISE))))_$(SNR)dB)
OUT ?= $(CACHE_ROOT)/$(DATASET)/$(CONDITION)/$(MODEL_TAG).zarr
EXTRACT_ARGS = --device $(DEVICE) --batch-size $(BATCH)
NOISE_ARGS = $(if $(filter clean,$(SNR)),,--noise $(NOISE) --snr $(SNR)$(if $(NOISE_PRESET), --noise-preset $(NOISE_PRESET)))

DEMO_DIR ?= demo_out
DEMO_MODEL ?= bundled:base
DEMO_SNR ?= 0
DEMO_EPOCHS ?= 12

.PHONY: help install test extract extract-all estimate train grid report paper paper-baselines paper-text demo clean-demo

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e '.[bundled,test]'

test:
	$(PYTHON) -m pytest -q

help:
	@echo "Targets:"
	@echo "  install       pip install the CPU torch and this package with its extras"
	@echo "  test          the test suite (python -m pytest -q)"
	@echo "  extract       one cache per condition: SNR=clean, or SNR=<dB> with NOISE=<folder|file>"
	@echo "                [NOISE_PRESET=human|park|traffic]; SNR=<dB> without NOISE extracts the paper's"
	@echo "                three DEMAND conditions (NOISE_PRESETS) at that SNR from DEMAND_ROOT"
	@echo "  extract-all   clean + NOISES x SNRS (DEMAND_ROOT presets, or NOISE_ROOT subfolders); make -j N runs N at once"
	@echo "  train         nser-train on the cache \`extract\` writes (OUT), FUSION over LAYERS, EPOCHS, DEVICE"
	@echo "  grid          nser-grid GRID [--out GRID_OUT] (a fusion/layer grid on caches already extracted)"
	@echo "  report        nser-report of GRID's results folder (GRID_OUT, else the spec's out:)"
	@echo "  estimate      nser-extract --dry-run: utterances, audio hours, cache GB and time for extract-all's conditions"
	@echo "  paper         the paper's grid end to end: extract-all's Whisper caches, the baseline (PAPER_BASELINES)"
	@echo "                and TEXT_MODEL caches at PAPER_CONDITIONS, nser-grid PAPER_GRID into PAPER_OUT, nser-report"
	@echo "                with the paper's values (Tables III-VI; Figs 3, 5, 6); make -j N extracts N at once"
	@echo "  demo          synthetic espeak-ng corpus -> bundled Whisper base -> layer adapter"
	@echo "Variables (default):"
	@echo "  DATASET=$(DATASET)  DATA_ROOT=$(DATA_ROOT)  MODEL=$(MODEL)"
	@echo "  SNR=$(SNR)  NOISE=$(NOISE)  NOISE_PRESET=$(NOISE_PRESET)  DEMAND_ROOT=$(DEMAND_ROOT)"
	@echo "  NOISE_PRESETS=$(NOISE_PRESETS)  SNRS=$(SNRS)  NOISE_ROOT=$(NOISE_ROOT)"
	@echo "  CACHE_ROOT=$(CACHE_ROOT)  OUT=$(OUT)  DEVICE=$(DEVICE)  BATCH=$(BATCH) (extraction batch)"
	@echo "  FUSION=$(FUSION)  LAYERS=$(LAYERS)  EPOCHS=$(EPOCHS)  RUN_DIR=$(RUN_DIR)"
	@echo "  GRID=$(GRID)  GRID_OUT=$(GRID_OUT)"
	@echo "  PAPER_GRID=$(PAPER_GRID)  PAPER_OUT=$(PAPER_OUT)  PAPER_CONDITIONS=$(PAPER_CONDITIONS)"
	@echo "  HSF_SETS=$(HSF_SETS)  SSL_MODELS=$(SSL_MODELS)  TEXT_MODEL=$(TEXT_MODEL)"
	@echo "  DEMO_DIR=$(DEMO_DIR)  DEMO_MODEL=$(DEMO_MODEL)  DEMO_SNR=$(DEMO_SNR)  DEMO_EPOCHS=$(DEMO_EPOCHS)"

## make extract DATASET=iemocap SNR=-5                       (DEMAND human, park, traffic at -5 dB)
## make extract DATASET=emodb DATA_ROOT=/path NOISE=/path/to/babble SNR=-5 MODEL=openai/whisper-small
## make extract DATASET=emodb SNR=clean
extract:
	@test -d "$(DATA_ROOT)" || { echo "DATA_ROOT=$(DATA_ROOT) does not exist: set DATA_ROOT=<the $(DATASET) folder> (layouts: docs/corpora.md)"; exit 2; }
ifeq ($(SNR),clean)
	nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(MODEL) $(EXTRACT_ARGS) --out $(OUT)
	nser cache info $(OUT)
else ifneq ($(NOISE),)
	nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(MODEL) $(EXTRACT_ARGS) $(NOISE_ARGS) --out $(OUT)
	nser cache info $(OUT)
else
	@test -d "$(DEMAND_ROOT)" || { echo "SNR=$(SNR) without NOISE uses the paper's DEMAND conditions ($(NOISE_PRESETS)), but DEMAND_ROOT=$(DEMAND_ROOT) does not exist: set DEMAND_ROOT=<folder holding OMEETING, NPARK, STRAFFIC>, or NOISE=<folder of noise recordings>"; exit 2; }
	$(foreach p,$(NOISE_PRESETS),nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(MODEL) $(EXTRACT_ARGS) --noise $(DEMAND_ROOT) --noise-preset $(p) --snr $(SNR) --out $(CACHE_ROOT)/$(DATASET)/$(p)_$(SNR)dB/$(MODEL_TAG).zarr && nser cache info $(CACHE_ROOT)/$(DATASET)/$(p)_$(SNR)dB/$(MODEL_TAG).zarr &&) true
endif

## The paper's grid: NOISES x SNRS + clean, each cache at the path `make extract` uses
## ($(CACHE_ROOT)/$(DATASET)/<noise>_<snr>dB/$(MODEL_TAG).zarr and .../clean/...).
##   make extract-all DATASET=iemocap DATA_ROOT=/data/IEMOCAP_full_release DEMAND_ROOT=/data/DEMAND
##     NOISES are then --noise-preset names (human park traffic; DEMAND channel ch01 only)
##   make extract-all DATASET=emodb DATA_ROOT=../shared/data/emodb NOISE_ROOT=../shared/data/noise
##     NOISES are then subfolders of NOISE_ROOT, by default all of them (NOISE_ROOT wins over DEMAND_ROOT)
## Reruns are cheap: nser-extract resumes and skips finished utterances, so a complete condition
## costs only the manifest scan and model loading; an interrupted one continues where it stopped.
SNRS ?= -10 -5 0 5 10
NOISE_ROOT ?=
NOISES ?= $(if $(NOISE_ROOT),$(sort $(notdir $(patsubst %/,%,$(wildcard $(NOISE_ROOT)/*/)))),human park traffic)
GRID_NOISE_ARGS = $(if $(NOISE_ROOT),--noise $(NOISE_ROOT)/$(1),--noise $(DEMAND_ROOT) --noise-preset $(1))
CONDITIONS = clean $(foreach n,$(NOISES),$(foreach s,$(SNRS),$(n)_$(s)dB))
# One target per condition, so that `make -j N extract-all` runs N extractions at a time; a condition
# name is <noise>_<snr>dB, split at its last underscore (noise folder names may hold underscores).
cond_snr = $(patsubst %dB,%,$(lastword $(subst _, ,$(1))))
cond_noise = $(patsubst %_$(lastword $(subst _, ,$(1))),%,$(1))

extract-all: $(addprefix extract-condition-,$(CONDITIONS))

extract-condition-%:
	nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(MODEL) $(EXTRACT_ARGS)$(if $(filter clean,$*),, $(call GRID_NOISE_ARGS,$(call cond_noise,$*)) --snr $(call cond_snr,$*)) --out $(CACHE_ROOT)/$(DATASET)/$*/$(MODEL_TAG).zarr

## make train DATASET=emodb SNR=0 NOISE=../shared/data/noise/babble MODEL=bundled:base EPOCHS=50
##   trains on the cache `make extract` wrote with the same variables (OUT), into RUN_DIR.
train:
	@test -d "$(OUT)" || { echo "no cache at OUT=$(OUT): run \`make extract\` with the same variables first, or set OUT=<cache>"; exit 2; }
	nser-train --cache $(OUT) --fusion $(FUSION) --layers $(LAYERS) --epochs $(EPOCHS) --device $(DEVICE) --out $(RUN_DIR)

## make grid GRID=grids/emodb_fusions.yaml [GRID_OUT=runs/elsewhere]; make report GRID=... (same GRID_OUT)
GRID_OUT_ARG = $(if $(GRID_OUT),--out $(GRID_OUT))
GRID_RESULTS = $(or $(GRID_OUT),$(shell sed -n 's/^out:[[:space:]]*//p' $(GRID) 2>/dev/null))
grid:
	nser-grid $(GRID) $(GRID_OUT_ARG)

report:
	@test -n "$(GRID_RESULTS)" || { echo "no results folder: set GRID_OUT=<folder> or GRID=<spec with out:>"; exit 2; }
	nser-report $(GRID_RESULTS)

## What extract-all will take, before any model run (docs/gpu.md): per condition and for all of CONDITIONS.
estimate:
	nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(MODEL) $(EXTRACT_ARGS) --out $(OUT) --dry-run $(words $(CONDITIONS))

## The paper's grid on one dataset, end to end (docs/grid.md; disk and time first: make estimate, docs/gpu.md):
##   make paper DATASET=iemocap DATA_ROOT=/data/IEMOCAP_full_release DEMAND_ROOT=/data/DEMAND [MODEL=...] [-j 2]
## 1. extract-all: the Whisper caches, clean + DEMAND human/park/traffic at each of SNRS (resumable);
## 2. at PAPER_CONDITIONS (clean and 0 dB: Tables III, VI) the baseline caches: mel, the openSMILE HSF_SETS,
##    the SSL_MODELS (an SSL model that cannot be loaded, e.g. offline, is skipped with a message), and
##    TEXT_MODEL on the transcripts (once, beside clean) and on each condition's Whisper hypotheses;
## 3. PAPER_GRID with its cache paths rewritten for CACHE_ROOT/DATASET/MODEL/TEXT_MODEL, written to
##    PAPER_OUT/grid.yaml, run by nser-grid (resumable; runs of caches not built are skipped with a warning);
## 4. nser-report PAPER_OUT, with the paper's values beside ours where the paper has DATASET (iemocap, meld).
## Whisper rows only: make paper PAPER_BASELINES= TEXT_MODEL=
PAPER_GRID ?= grids/paper.yaml
PAPER_OUT ?= runs/paper_$(DATASET)_$(MODEL_TAG)
PAPER_TABLES = $(if $(filter iemocap,$(DATASET)),--paper-table iii --paper-table iv --paper-table v --paper-table vi --paper-dataset iemocap,$(if $(filter meld,$(DATASET)),--paper-table iii --paper-table iv --paper-table vi --paper-dataset meld))
PAPER_CONDITIONS = clean $(addsuffix _0dB,$(NOISES))
HSF_SETS ?= IS09_emotion IS10_paraling IS11_speaker_state IS12_speaker_trait IS13_ComParE eGeMAPSv02
SSL_MODELS ?= facebook/wav2vec2-base facebook/hubert-base-ls960 microsoft/wavlm-base
TEXT_MODEL ?= google-bert/bert-base-uncased
PAPER_BASELINES ?= mel $(addprefix opensmile:,$(HSF_SETS)) $(addprefix hf-encoder:,$(SSL_MODELS))
# a --model value's cache name, as MODEL_TAG: opensmile:IS09_emotion -> opensmile_IS09_emotion
tag = $(subst /,_,$(subst :,_,$(1)))
TEXT_TAG = $(call tag,$(TEXT_MODEL))
# models fetched from the hub may be out of reach (offline): their caches are skipped, not a failed make;
# nser-extract exits with MODEL_UNAVAILABLE only for a model it cannot fetch or find (docs/extraction.md),
# and any other failure of these steps still fails make
MODEL_UNAVAILABLE = 3
SKIP_UNREACHABLE = || { rc=$$?; [ $$rc -eq $(MODEL_UNAVAILABLE) ] || exit $$rc; echo "skipped $(1) on $(2): the model could not be fetched (error above); its grid runs are left out"; }
define newline


endef
cache_of = $(CACHE_ROOT)/$(DATASET)/$(1)/$(2).zarr

paper: extract-all paper-baselines paper-text
	mkdir -p $(PAPER_OUT)
	sed -e 's|caches/iemocap/|$(CACHE_ROOT)/$(DATASET)/|g' -e 's|openai_whisper-small|$(MODEL_TAG)|g' \
	  -e 's|google-bert_bert-base-uncased|$(TEXT_TAG)|g' -e 's|^out:.*|out: $(PAPER_OUT)|' $(PAPER_GRID) > $(PAPER_OUT)/grid.yaml
	nser-grid $(PAPER_OUT)/grid.yaml
	nser-report $(PAPER_OUT) $(PAPER_TABLES)

paper-baselines: $(addprefix paper-baselines-,$(PAPER_CONDITIONS))

paper-baselines-%:
	$(foreach s,$(PAPER_BASELINES),nser-extract --corpus $(DATASET) --data-root $(DATA_ROOT) --model $(s) $(EXTRACT_ARGS)$(if $(filter clean,$*),, $(call GRID_NOISE_ARGS,$(call cond_noise,$*)) --snr $(call cond_snr,$*)) --out $(call cache_of,$*,$(call tag,$(s)))$(if $(filter hf-encoder:%,$(s)), $(call SKIP_UNREACHABLE,$(s),$*))$(newline))

# text caches read the Whisper caches' transcripts and hypotheses
paper-text: $(addprefix extract-condition-,$(PAPER_CONDITIONS))
ifneq ($(TEXT_MODEL),)
	nser-extract --text-from $(call cache_of,clean,$(MODEL_TAG)) --text transcript --model text:$(TEXT_MODEL) --device $(DEVICE) --out $(call cache_of,clean,text-transcript_$(TEXT_TAG)) $(call SKIP_UNREACHABLE,text:$(TEXT_MODEL),transcripts)
	$(foreach c,$(PAPER_CONDITIONS),nser-extract --text-from $(call cache_of,$(c),$(MODEL_TAG)) --text hypothesis --model text:$(TEXT_MODEL) --device $(DEVICE) --out $(call cache_of,$(c),text-hypothesis-$(MODEL_TAG)_$(TEXT_TAG)) $(call SKIP_UNREACHABLE,text:$(TEXT_MODEL),$(c))$(newline))
endif

## Synthetic espeak-ng corpus + synthetic babble -> bundled Whisper base -> layer adapter -> results table.
demo:
	nser demo-corpus $(DEMO_DIR)
	nser-extract --corpus csv --data-root $(DEMO_DIR)/corpus --model $(DEMO_MODEL) \
	  --noise $(DEMO_DIR)/noise/babble --noise-type babble --snr $(DEMO_SNR) --out $(DEMO_DIR)/cache.zarr
	nser cache info $(DEMO_DIR)/cache.zarr
	nser-train --cache $(DEMO_DIR)/cache.zarr --layers enc:blocks,dec:blocks --epochs $(DEMO_EPOCHS) \
	  --out $(DEMO_DIR)/run --quiet

clean-demo:
	rm -rf $(DEMO_DIR)
