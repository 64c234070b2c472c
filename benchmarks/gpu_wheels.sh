#!/usr/bin/env bash
# Downloads, here, the wheels benchmarks/gpu.sh installs on a lent GPU machine: the packages emaki
# needs that the machine's image lacks or has in an older version (its torch, numpy, safetensors,
# tokenizers, accelerate, huggingface-hub, typer, rich and Pillow do; /work/.library/device/KINDS.md
# lists them). The versions are this venv's, for the machine's Python 3.12. Into .whl/ (ignored),
# which the device call carries: run(command="bash benchmarks/gpu.sh", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
packages=()
for name in diffusers transformers pydantic pydantic-core annotated-types typing-inspection typing-extensions \
            torchsde trampoline regex importlib-metadata; do
    packages+=("$name==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
rm -rf .whl && mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${packages[@]}"
du -sh .whl
