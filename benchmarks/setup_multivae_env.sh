#!/usr/bin/env bash
# Create the benchmark environment .bench-venv for benchmarks/multivae_compare.py (see benchmarks/README.md).
#
# MultiVae lives only here, never as a pyromm dependency. The venv reuses the system Python's packages
# (--system-site-packages): torch 2.13 CPU, pyro, pyromm (editable), numpy, scipy, pandas, scikit-learn,
# matplotlib, pydantic, cloudpickle, tqdm. pip never installs torch here: every install is --no-deps.
#
#   bash benchmarks/setup_multivae_env.sh            # from the repository root (or anywhere: it cds there)
#   PYTHON=python3.11 VENV=.bench-venv bash benchmarks/setup_multivae_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
VENV="${VENV:-.bench-venv}"

# Keep the venv out of git without touching .gitignore.
EXCLUDE="$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF "/$VENV/" "$EXCLUDE" 2>/dev/null || echo "/$VENV/" >> "$EXCLUDE"

"$PYTHON" -c "import torch, pyro, pyromm" || {
    echo "the system Python must already have torch, pyro and pyromm (pip install -e .)" >&2
    exit 1
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
PY="$VENV/bin/python"

# MultiVae 1.0.3 and the pure-Python packages it imports at import time that the system lacks:
#   pythae (MultiVae's base classes and configs), nltk (imported by multivae.data.datasets.cub).
# Its other declared dependencies are either already there (numpy, scipy, pandas, scikit-learn,
# matplotlib, pydantic, cloudpickle, tqdm, typing_extensions; nltk's click/joblib/regex), imported only
# lazily or by metrics/samplers the benchmark does not use (torchmetrics, imageio, huggingface_hub), or
# torchvision, stubbed below. `dataclasses` is in the standard library.
"$PY" -m pip install --no-deps "multivae==1.0.3" "pythae==0.1.2" "nltk==3.10.4"

# torchvision: MultiVae imports it at import time, but no torchvision build matches torch 2.13 CPU here.
# Write a stub package into the venv's own site-packages (never the system's) that provides only the
# names MultiVae imports; using any of them raises NotImplementedError.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PY" - "$SITE" <<'EOF'
"""Write a stub `torchvision` package into a site-packages directory (the benchmark environment only)."""
import shutil
import sys
from pathlib import Path

root = Path(sys.argv[1]) / "torchvision"
DOC = '"""Stub of torchvision for the pyromm MultiVae benchmark environment (see benchmarks/README.md)."""\n'
HEAD = DOC + "from torchvision._stub import placeholder_class, placeholder_function  # noqa: F401\n\n\n"


def getattr_hook(kind, extra=""):
    return (
        "def __getattr__(name):\n"
        "    if name.startswith('__'):\n"
        "        raise AttributeError(name)\n"
        f"    return {kind}(__name__ + '.' + name{extra})\n"
    )


files = {
    "_stub.py": DOC + '''

def _fail(qualname):
    raise NotImplementedError(
        f"{qualname} belongs to the torchvision stub of the pyromm benchmark environment: real torchvision "
        "is not installed there (see benchmarks/README.md)"
    )


def placeholder_function(qualname):
    """A function standing for ``qualname``; calling it raises."""

    def function(*args, **kwargs):
        _fail(qualname)

    function.__qualname__ = function.__name__ = qualname.rsplit(".", 1)[-1]
    return function


def placeholder_class(qualname, constructible=False):
    """A class standing for ``qualname``; constructing it raises unless ``constructible`` (transforms are
    built as default arguments when MultiVae is imported), and calling an instance always raises."""

    def init(self, *args, **kwargs):
        if not constructible:
            _fail(qualname)

    def call(self, *args, **kwargs):
        _fail(qualname)

    module, _, name = qualname.rpartition(".")
    return type(name, (), {"__init__": init, "__call__": call, "__module__": module})
''',
    "__init__.py": DOC
    + "__version__ = '0.0.0+pyromm.benchmark.stub'\n\nfrom torchvision import datasets, models, transforms, utils  # noqa: E402,F401\n",
    # MNIST, SVHN, CelebA, ...: constructing one raises
    "datasets/__init__.py": HEAD
    + "from torchvision.datasets import utils  # noqa: E402,F401\n\n\n"
    + getattr_hook("placeholder_class"),
    # download_and_extract_archive, ...
    "datasets/utils.py": HEAD + getattr_hook("placeholder_function"),
    # inception_v3 etc. of MultiVae's FID metric
    "models/__init__.py": HEAD + getattr_hook("placeholder_function"),
    # ToTensor, Resize, Compose, ...: constructible (default arguments), calling one raises
    "transforms/__init__.py": HEAD + getattr_hook("placeholder_class", ", constructible=True"),
    # make_grid, save_image
    "utils.py": HEAD + getattr_hook("placeholder_function"),
}
if root.exists():
    shutil.rmtree(root)
for rel, text in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
print("wrote the torchvision stub to", root)
EOF

# The environment must still use the system torch (no second torch), and MultiVae's models must import.
"$PY" - <<'EOF'
import importlib.metadata as md

import torch
import torchvision

import multivae.models  # noqa: F401
from multivae.models import JMVAE, MMVAE, MVAE, MVTCAE, MoPoE, MMVAEPlus  # noqa: F401

assert torchvision.__version__.endswith("benchmark.stub"), torchvision.__file__
print(f"ok: torch {torch.__version__} ({torch.__file__}), multivae {md.version('multivae')}, "
      f"pythae {md.version('pythae')}, torchvision stub {torchvision.__file__}")
EOF
echo "run: $VENV/bin/python benchmarks/multivae_compare.py"
