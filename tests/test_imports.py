"""The core library never imports Streamlit: only cxr.app may."""

import ast
import subprocess
import sys
from pathlib import Path

CXR = Path(__file__).resolve().parent.parent / "cxr"


def test_no_core_module_imports_streamlit_statically():
    offenders = []
    for path in CXR.rglob("*.py"):
        if "app" in path.relative_to(CXR).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []


def test_importing_every_core_module_does_not_load_streamlit():
    modules = sorted(
        "cxr." + ".".join(p.relative_to(CXR).with_suffix("").parts)
        for p in CXR.rglob("*.py") if "app" not in p.relative_to(CXR).parts and p.stem != "__main__"
    )
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CXR.parent, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
