"""An extension built against another torch is refused at import, before its C++ library is loaded.

Each case imports lenet_ext in a fresh interpreter whose build record (lenet_ext/_build_info.py, written
by setup.py) has been replaced in sys.modules, so the installed build itself is never touched.
"""

import json
import os
import subprocess
import sys

import torch

import lenet_ext._build_info as build_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REBUILD = "pip install --no-build-isolation -e ."


def import_with_record(record_source):
    """Imports lenet_ext after installing `record_source` (Python code giving the module to use, or None
    for a missing record) as lenet_ext._build_info; returns the outcome and whether _C got loaded."""
    code = f"""
import json, sys, types
record = {record_source}
if record is not None:
    module = types.ModuleType("lenet_ext._build_info")
    module.TORCH_VERSION = record
    record = module
sys.modules["lenet_ext._build_info"] = record
try:
    import lenet_ext
    outcome = {{"ok": True}}
except ImportError as e:
    outcome = {{"ok": False, "message": str(e)}}
outcome["loaded_C"] = "lenet_ext._C" in sys.modules
print(json.dumps(outcome))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_build_records_the_torch_it_runs_under():
    # the check passes only because setup.py wrote the running torch's exact version
    assert build_info.TORCH_VERSION == torch.__version__
    assert import_with_record(repr(build_info.TORCH_VERSION)) == {"ok": True, "loaded_C": True}


def test_another_torch_is_refused_naming_both_versions_and_the_fix():
    outcome = import_with_record(repr("2.0.0+elsewhere"))
    assert not outcome["ok"]
    assert "built against torch 2.0.0+elsewhere" in outcome["message"]
    assert f"torch {torch.__version__} is installed" in outcome["message"]
    assert REBUILD in outcome["message"]
    assert not outcome["loaded_C"], "the mismatched library must not be loaded at all"


def test_a_missing_build_record_asks_for_a_build():
    outcome = import_with_record("None")
    assert not outcome["ok"]
    assert "no build record" in outcome["message"] and REBUILD in outcome["message"]
    assert not outcome["loaded_C"]
