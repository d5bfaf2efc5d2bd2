"""Imports point down: scripts (with their timing code, scripts/benchmarks) -> configs -> fartrack_jax ->
data_pipelines. Read from the source (no module is imported), so a wrong arrow fails here whatever the tests that
run it."""

import ast
import os
import re

import pytest

from tests.conftest import ROOT

# Each package and the top-level packages it must never import.
FORBIDDEN = {
    "data_pipelines": ("fartrack_jax", "configs", "scripts"),
    "fartrack_jax": ("configs", "scripts"),
    "configs": ("scripts",),
}
# Inside data_pipelines the evaluation datasets and the training pipelines are siblings: what both need (crops,
# annotation files) sits beside them, so neither imports the other.
SIBLINGS = {
    "data_pipelines/evaluation": "data_pipelines.evaluation",
    "data_pipelines/training": "data_pipelines.training",
}
# Files exempt from the rule (none now; name one here only with the reason).
KNOWN: set[str] = set()


def _imports(path: str):
  """(line, top-level package) of every import in the file, including `importlib.import_module("x.y")` and
  f-strings starting with a package name."""
  tree = ast.parse(open(path).read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.lineno, node.module.split(".")[0]
    elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
      arg = node.args[0] if node.args else None
      text = ""
      if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        text = arg.value
      elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        text = str(arg.values[0].value)
      match = re.match(r"[A-Za-z_]\w*", text)
      if match:
        yield node.lineno, match.group(0)


def _files(package: str):
  for folder, _, names in os.walk(os.path.join(ROOT, package)):
    for name in sorted(names):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        yield os.path.relpath(path, ROOT), path


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
  wrong = [f"{rel}:{line} imports {top}" for rel, path in _files(package) if rel not in KNOWN
           for line, top in _imports(path) if top in FORBIDDEN[package]]
  assert not wrong, wrong


def _full_imports(path: str):
  """(line, dotted module) of every `import x.y` and `from x.y import z` in the file."""
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.lineno, node.module


@pytest.mark.parametrize("folder", sorted(SIBLINGS))
def test_data_siblings_do_not_import_each_other(folder):
  others = [name for other, name in SIBLINGS.items() if other != folder]
  wrong = [f"{rel}:{line} imports {module}" for rel, path in _files(folder) for line, module in _full_imports(path)
           if any(module == o or module.startswith(o + ".") for o in others)]
  assert not wrong, wrong


def test_the_check_sees_an_upward_import(tmp_path):
  path = tmp_path / "m.py"
  path.write_text("import importlib\nfrom fartrack_jax import model\nimportlib.import_module(f'configs.{x}')\n")
  assert [top for _, top in _imports(str(path))] == ["importlib", "fartrack_jax", "configs"]


def test_moved_names_keep_their_old_spelling():
  from data_pipelines import crops  # pylint: disable=g-import-not-at-top
  from fartrack_jax.tracking import crop, loop, tracker  # pylint: disable=g-import-not-at-top
  assert tracker.track_sequences is loop.track_sequences and tracker.read_rgb is loop.read_rgb
  assert (crop.sample_target, crop.map_box_back, crop.clip_box) == (crops.sample_target, crops.map_box_back,
                                                                   crops.clip_box)


def test_the_distributed_package_keeps_the_names_the_entry_points_use():
  # scripts/train.py, evaluate.py and launch_local.py, and docs/preemption_and_failures.md, spell them
  # `distributed.<name>`; the package holds them in one module per job.
  from fartrack_jax import distributed  # pylint: disable=g-import-not-at-top
  from fartrack_jax.distributed import joining, local_launcher, peers, stopping  # pylint: disable=g-import-not-at-top
  assert (distributed.initialize_from_flags, distributed.DistributedError) == (joining.initialize_from_flags,
                                                                               joining.DistributedError)
  assert (distributed.run_local_job, distributed.progress) == (local_launcher.run_local_job, peers.progress)
  assert (distributed.PREEMPTED_EXIT_STATUS, distributed.PreemptionNotice) == (75, stopping.PreemptionNotice)


def _module_name(rel: str) -> str:
  name = rel[:-3].replace(os.sep, ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _import_graph() -> dict[str, set[str]]:
  """Module -> the project modules it imports (deferred imports included), for the library's packages and the
  timing code."""
  modules = {_module_name(rel): path for package in (*FORBIDDEN, "scripts/benchmarks")
             for rel, path in _files(package)}
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from package import module` imports the module; `from module import name`, the module.
        subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
        names = subs if len(subs) == len(node.names) else [node.module] + subs
      targets.update(n for n in names if n in modules and n != name)
    graph[name] = targets
  return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Every strongly connected group of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        found.append(sorted(group))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_no_import_circle():
  graph = _import_graph()
  assert "fartrack_jax.convert" in graph and "fartrack_jax.checkpoints" in graph["fartrack_jax.convert"]
  assert not _circles(graph), _circles(graph)


def test_the_circle_check_sees_a_circle():
  assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert not _circles({"a": {"b"}, "b": set()})
