"""Static device hygiene of the modules that run on `--device cuda` (issue 12 step 4).

No GPU is at hand in CI, so the first CUDA run must not be where a forgotten `.cpu()` or a
tensor made without `device=` is found. This test reads the source of the training / transform
modules of the three packages and refuses, outside a documented host-side exception:

- `torch.<factory>(...)` (tensor, zeros, ones, empty, full, arange, rand*, eye, ...) without
  `device=`: it lands on the CPU whatever the device of the data it meets;
- `x.numpy()` without `.cpu()` in its receiver chain: it raises on a CUDA tensor;
- `torch.from_numpy(a)` whose result is not `.to(...)`-ed at once: a CPU tensor;
- `torch.load(...)` without `map_location`: a file written on a GPU does not load without one.

Inside `__init__` the rules do not apply: parameters and buffers of a module are made on the
CPU (from the CPU generator, the same initial weights on every device) and move with `.to()`.
Every other exception is listed in HOST_SIDE with the reason it is right; an exception that no
longer matches anything fails too, so the list stays the code's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# the modules whose code runs on the torch device during training, transform or encoding
DEVICE_MODULES = (
    "packages/catalyzer/src/catalyzer/train.py",
    "packages/catalyzer/src/catalyzer/api.py",
    "packages/catalyzer/src/catalyzer/model.py",
    "packages/catalyzer/src/catalyzer/losses.py",
    "packages/ccst/src/ccst/train.py",
    "packages/ccst/src/ccst/api.py",
    "packages/ccst/src/ccst/model.py",
    "packages/ccst/src/ccst/losses.py",
    "packages/ccst/src/ccst/baselines.py",
    "packages/kdindex/src/kdindex/train.py",
    "packages/kdindex/src/kdindex/student.py",
    "packages/kdindex/src/kdindex/losses.py",
    "packages/kdindex/src/kdindex/api.py",
)

FACTORIES = {
    "tensor",
    "as_tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "linspace",
    "logspace",
    "eye",
    "rand",
    "randn",
    "randint",
    "randperm",
    "normal",
}

# (module, enclosing function, rule) -> why the host (CPU) is right there
HOST_SIDE = {
    ("packages/ccst/src/ccst/train.py", "train_epoch", "torch.randperm"): (
        "the batch order is drawn from the run's CPU generator (reproducible on every device) "
        "and indexes numpy rows"
    ),
    ("packages/ccst/src/ccst/train.py", "train_epoch", ".numpy()"): (
        "the CPU generator's permutation, read as numpy row ids"
    ),
    ("packages/ccst/src/ccst/api.py", "fit_output_scale", "torch.from_numpy"): (
        "probes a copy of the freshly built (CPU) network before training moves it"
    ),
    ("packages/ccst/src/ccst/baselines.py", "VAENet.set_standardisation", "torch.from_numpy"): (
        "copied into a buffer with copy_, which copies across devices"
    ),
    ("packages/ccst/src/ccst/baselines.py", "vae_loss", "torch.randn"): (
        "drawn from the network's CPU noise generator (reproducible), then .to(mu.device)"
    ),
    ("packages/kdindex/src/kdindex/student.py", "Student.from_quantizer", "torch.from_numpy"): (
        "the warm start: temperatures set on the student it has just built on the CPU"
    ),
}


def _chain_has_cpu(node: ast.AST) -> bool:
    """Whether a method-call chain `a.b().cpu().c()` holds a `.cpu()` call."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "cpu":
                return True
            node = node.func
        else:
            node = node.value
    return False


def violations(source: str) -> list[tuple[int, str, str]]:
    """(line, enclosing function, rule) of each device-unsafe call in `source`."""
    found = []

    def visit(node, scope: list[str], parent):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = [*scope, node.name]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            where, f = ".".join(scope) or "<module>", node.func
            kw = {k.arg for k in node.keywords}
            rule = None
            if isinstance(f.value, ast.Name) and f.value.id == "torch":
                if f.attr in FACTORIES and "device" not in kw:
                    rule = f"torch.{f.attr}"
                elif f.attr == "from_numpy" and not (
                    isinstance(parent, ast.Attribute) and parent.attr == "to"
                ):
                    rule = "torch.from_numpy"
                elif f.attr == "load" and "map_location" not in kw:
                    rule = "torch.load"
            elif f.attr == "numpy" and not node.args and not _chain_has_cpu(f.value):
                rule = ".numpy()"
            if rule is not None and "__init__" not in scope:
                found.append((node.lineno, where, rule))
        for child in ast.iter_child_nodes(node):
            visit(child, scope, node)

    visit(ast.parse(source), [], None)
    return found


def _all_violations():
    return {
        (mod, line, where, rule)
        for mod in DEVICE_MODULES
        for line, where, rule in violations((ROOT / mod).read_text())
    }


def test_device_modules_make_no_host_tensor_by_accident():
    bad = [
        f"{mod}:{line} in {where}: {rule}"
        for mod, line, where, rule in sorted(_all_violations())
        if (mod, where, rule) not in HOST_SIDE
    ]
    assert not bad, (
        "tensors that stay on the CPU (or .numpy() of a device tensor) under --device cuda; "
        "pass device= / add .cpu() / .to(device), or list a host-side reason in HOST_SIDE:\n"
        + "\n".join(bad)
    )


def test_every_host_side_exception_is_still_used():
    used = {(mod, where, rule) for mod, _, where, rule in _all_violations()}
    assert not set(HOST_SIDE) - used, sorted(set(HOST_SIDE) - used)


@pytest.mark.parametrize(
    "code, rule",
    [
        ("v = torch.ones(W, dtype=K.dtype)", "torch.ones"),
        ("i = torch.arange(K)", "torch.arange"),
        ("c = torch.empty((n, B), dtype=torch.int64)", "torch.empty"),
        ("a = score.numpy()", ".numpy()"),
        ("a = net(x).detach().numpy()", ".numpy()"),
        ("t = torch.from_numpy(a)", "torch.from_numpy"),
        ("t = net(torch.from_numpy(a))", "torch.from_numpy"),
        ("s = torch.load(p, weights_only=True)", "torch.load"),
    ],
)
def test_the_checker_finds_each_kind_of_mistake(code, rule):
    src = f"def f():\n    {code}\n"
    assert violations(src) == [(2, "f", rule)]


@pytest.mark.parametrize(
    "code",
    [
        "v = torch.ones(W, dtype=K.dtype, device=K.device)",
        "a = score.cpu().numpy()",
        "a = v.detach().cpu().contiguous().numpy()",
        "t = torch.from_numpy(a).to(device)",
        "s = torch.load(p, map_location='cpu', weights_only=True)",
        "z = torch.zeros_like(x)",
    ],
)
def test_the_checker_accepts_device_safe_code(code):
    assert violations(f"def f():\n    {code}\n") == []


def test_module_constructors_are_exempt():
    src = "class M:\n    def __init__(self):\n        self.t = torch.ones(3)\n"
    assert violations(src) == []
