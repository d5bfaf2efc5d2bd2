"""Every project import in scripts/ names a module or a name that exists, read from the source.

A script is run by hand, often long after the module it imports was moved; this finds the stale import in
the fast tier without starting each script (and its jax/tensorflow import) in a subprocess.
"""

import ast
import os

import pytest

from tests.conftest import ROOT

PACKAGES = ("fartrack_jax", "data_pipelines", "benchmarks", "configs", "scripts", "tests")


def _module_path(module: str) -> str | None:
  """The file or package folder of a dotted project module, or None."""
  base = os.path.join(ROOT, *module.split("."))
  if os.path.isfile(base + ".py"):
    return base + ".py"
  if os.path.isfile(os.path.join(base, "__init__.py")):
    return os.path.join(base, "__init__.py")
  return None


def _names_defined(path: str) -> set[str]:
  """Top-level names a module defines or imports (what `from module import name` can take)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
        names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
  return names


def _problems(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  problems = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules = [(alias.name, None) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      modules = [(node.module, alias.name) for alias in node.names]
    else:
      continue
    for module, name in modules:
      if module.split(".")[0] not in PACKAGES:
        continue
      target = _module_path(module)
      if target is None:
        problems.append(f"line {node.lineno}: no module {module}")
      elif name is not None and name != "*" and _module_path(f"{module}.{name}") is None \
          and name not in _names_defined(target):
        problems.append(f"line {node.lineno}: {module} has no {name}")
  return problems


def _scripts() -> list[str]:
  folder = os.path.join(ROOT, "scripts")
  return sorted(os.path.join(dirpath, name) for dirpath, _, names in os.walk(folder)
                for name in names if name.endswith(".py"))


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_project_import_of_a_script_exists(path):
  assert not _problems(path), f"{os.path.relpath(path, ROOT)}: {_problems(path)}"


def test_a_stale_import_is_found(tmp_path):
  script = tmp_path / "stale.py"
  script.write_text("from fartrack_jax import no_such_module\nfrom fartrack_jax.storage import no_such_name\n"
                    "import data_pipelines.nowhere\nfrom fartrack_jax import storage\n")
  assert _problems(str(script)) == ["line 1: fartrack_jax has no no_such_module",
                                    "line 2: fartrack_jax.storage has no no_such_name",
                                    "line 3: no module data_pipelines.nowhere"]
