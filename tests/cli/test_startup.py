"""`emaki` starts fast: building the command line imports none of the heavy libraries, which
only the commands that run a model load (issue 19: `emaki generate` on the demo model in ≤ 3 s)."""

from __future__ import annotations

import json
import subprocess
import sys

# Seconds each on a quiet machine (`python -X importtime`): torch ~1, diffusers ~1.5 (it pulls in
# torch._dynamo and scipy), transformers ~1; the server's and the upscalers' libraries less.
HEAVY = ("torch", "diffusers", "transformers", "scipy", "numpy", "safetensors", "fastapi", "uvicorn", "ray",
         "spandrel")

_PROBE = """
import json, sys
import emaki.cli
emaki.cli._register_commands()
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


def _heavy_imported(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code.format(heavy=HEAVY)], capture_output=True, text=True,
                          timeout=120, check=True)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_building_the_command_line_imports_no_heavy_library():
    assert _heavy_imported(_PROBE) == []


def test_help_imports_no_heavy_library():
    probe = _PROBE.replace("emaki.cli._register_commands()",
                           "try:\n    emaki.cli.main(['--help'])\nexcept SystemExit:\n    pass")
    assert _heavy_imported(probe) == []
