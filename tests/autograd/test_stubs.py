"""The generated stubs (core/tensor.pyi, __init__.pyi) match the API installed now."""
import ast
import subprocess
import sys

import dtrain as dt
from dtrain.autograd import stubs


def test_committed_stubs_are_current():
    # A method or function added without `python -m dtrain.autograd.stubs` fails here.
    run = subprocess.run([sys.executable, "-m", "dtrain.autograd.stubs", "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_check_names_a_stale_stub(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "tensor.pyi"
    stale.write_text("old\n")
    monkeypatch.setattr(stubs, "stubs", lambda: {stale: "new\n"})
    assert stubs.main(["--check"]) == 1
    assert f"{stale} is stale" in capsys.readouterr().out
    assert stale.read_text() == "old\n"
    assert stubs.main([]) == 0
    assert stale.read_text() == "new\n"


def _defined(body):
    """Names a stub body defines: functions, annotated names and assignments."""
    names = set()
    for node in body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets)
    return names


def test_stubs_parse_and_name_every_tensor_attribute_and_package_export():
    tensor = ast.parse(stubs.tensor_stub())
    body = next(n.body for n in tensor.body if isinstance(n, ast.ClassDef) and n.name == "Tensor")
    assert _defined(body) == set(vars(dt.Tensor)) - stubs._SKIP
    package = ast.parse(stubs.package_stub(dt))
    exported = _defined(package.body) | {a.asname for n in package.body
                                         if isinstance(n, ast.ImportFrom) for a in n.names}
    public = {n for n in vars(dt) if not n.startswith("_")} | {"__version__"}
    assert public <= exported


def test_tensor_stub_lists_installed_methods_with_their_signatures():
    text = stubs.tensor_stub()
    assert "    def add(self, other, *, alpha=1):\n        \"\"\"" in text
    # an in-place method shows its out-of-place function's parameters
    assert ("    def add_(self, other, *, alpha=1):\n"
            "        \"\"\"In-place `add`; returns self.\"\"\"") in text
    assert "    def uniform_(self, a=0.0, b=1.0, *, generator=None):" in text
    assert ("    @property\n    def T(self):\n"
            "        \"\"\"Self with all dimensions reversed.\"\"\"") in text
    # an operator bound with a private default (`_f=Add.apply`) shows only its operand
    assert "    def __add__(self, b):" in text
    for name in ("add", "matmul", "sum", "view", "backward", "to", "float", "fill_", "zero_"):
        assert f"    def {name}(self" in text


def test_package_stub_reexports_and_lists_functions():
    text = stubs.package_stub(dt)
    assert "from dtrain.core.tensor import Tensor as Tensor\n" in text
    assert "from dtrain import nn as nn\n" in text
    assert "from dtrain.autograd.grad_mode import no_grad as _no_grad\n" in text
    assert "inference_mode = _no_grad\n" in text
    assert "float32: dtype\n" in text
    assert "\ndef randn(*sizes, size=None, " in text


def test_summary_is_the_first_sentence_on_one_line():
    def f():
        """First part
        continues. Second sentence.

        Details."""
    assert stubs.summary(f) == "First part continues."
    assert stubs.summary(lambda: None) == ""
