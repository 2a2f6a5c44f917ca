"""vbg's modules import one another without a circle: each can be read (and loaded) on its own
terms, the ones below it first."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"vbg": ROOT / "vbg", "vbg.export": ROOT / "export"}  # export/ is installed as vbg.export


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The vbg modules ``path`` imports, at the top or inside a function alike: ``import vbg.x``,
    ``from vbg.x import y`` and ``from vbg import x`` (where x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in known:
                found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in known)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports in ``graph`` (module -> modules it imports), or [] when there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target == module:
                continue  # `from vbg import x` inside vbg/__init__.py is x, not the package
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_finding_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_reader_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import vbg.a\nfrom vbg.b import thing\nfrom vbg import c\n\ndef f():\n    from vbg.d import g\n")
    assert imported_modules(source, {"vbg.a", "vbg.b", "vbg.c", "vbg.d", "vbg.e"}) == {"vbg.a", "vbg.b", "vbg.c", "vbg.d"}


def test_no_import_circle_in_vbg():
    found = modules()
    known = set(found)
    graph = {module: imported_modules(path, known) - {module} for module, path in found.items()}
    assert graph["vbg.inference"] >= {"vbg.hybrid", "vbg.session", "vbg.registry"}  # the reader works here
    # The package's __init__ re-exports; importing it from a module below is no circle of concerns.
    graph.pop("vbg")
    for imports in graph.values():
        imports.discard("vbg")
    assert find_cycle(graph) == []



HEAVY = ("cv2", "onnxruntime", "aiohttp", "openvino", "numpy", "onnx", "tflite")


def loaded_by(*commands: list[str]) -> tuple[list[int], set[str], str]:
    """The exit codes of ``vbg`` with each argument list, run one after the other in one fresh
    Python, which of :data:`HEAVY` that process loaded, and its stderr."""
    probe = ("import json, sys\nfrom vbg.cli import main\ncodes = []\n"
             f"for argv in {[list(c) for c in commands]!r}:\n"
             "    try:\n        codes.append(main(argv))\n    except SystemExit as exc:\n        codes.append(exc.code)\n"
             f"print('LOADED', json.dumps([codes, [m for m in {HEAVY!r} if m in sys.modules]]))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    line = next((line for line in result.stdout.splitlines() if line.startswith("LOADED ")), None)
    assert line is not None, result.stdout + result.stderr
    codes, modules = json.loads(line.removeprefix("LOADED "))
    return codes, set(modules), result.stderr


def test_a_hotkeys_command_and_help_load_no_pipeline():
    """`vbg toggle` bound to a hotkey (and `vbg --help`) must answer at once: loading OpenCV,
    onnxruntime and aiohttp for them took 0.7 s on a 2-core CPU (and 16 s in the emulated device
    tests' guest). What they load is read from the process itself, after it has answered."""
    codes, modules, stderr = loaded_by(["toggle", "passthrough", "--port", "1"], ["--help"], ["get", "--help"])
    assert modules == set()
    assert codes[0] == 1 and "vbg: error:" in stderr  # the toggle ran, and found no vbg on port 1


def test_a_run_with_its_models_made_loads_none_of_the_code_that_makes_them(person_video, tmp_path):
    """Every start checks that its derived models (the selfie model converted from TFLite, int8
    MODNet) are current; that check imported the converter with onnx and tflite, 1.9 s of a 2-core
    CPU's start (of 2.9 s for a short run), and 74 s of the emulated device guest's. Nor does a
    run without --serve, or `vbg doctor`, load the control server's aiohttp (15 s of each doctor
    in that guest)."""
    from vbg import registry

    model = "selfie-landscape"  # derived: converted from the TFLite file once
    registry.ensure_model(registry.get_spec(model))  # made before the run, as on any start but the first
    out = tmp_path / "out.mp4"
    codes, modules, _ = loaded_by(["--input", str(person_video), "--model", model, "--output", str(out),
                                   "--frames", "3", "-q"], ["doctor", "--camera", str(tmp_path / "none")])
    assert not modules & {"onnx", "tflite", "aiohttp"}
    assert codes[0] == 0 and out.stat().st_size > 0
    assert codes[1] == 1  # no camera there: the doctor ran its checks and failed one
