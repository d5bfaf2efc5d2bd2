"""scripts/launch_tpu.sh: flags and errors, the --dry-run command list, and its commands run locally.

gcloud is not installed here, so the gcloud commands are checked as printed (parsed back with shlex, an
independent shell-word parser), the local and worker-side shell commands are run with bash in a temporary
HOME (a stub `python` records the argv train.py would get), and the non-dry-run control flow runs against
a stub `gcloud` that logs its arguments and answers `describe` as told.
"""

import os
import shlex
import shutil
import sys
import subprocess
import tarfile
import time

import pytest

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "launch_tpu.sh")
TIMEOUT_S = 30

CONFIG = "configs/fartrack.py:variant=tiny"
WORKDIR = "gs://bucket/fartrack/run1"
# Arguments after `--` that a careless join would split, expand or glob.
EXTRA = ["--config.train.batch_size=64", "two words", "it's", "$HOME", "*"]
DATA_ROOTS = ["lasot=/mnt/data/la sot", "got10k=/mnt/got"]


def _launch(*args, env=None, cwd=None):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                        env=env, cwd=cwd)


def _write(path, text=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


@pytest.fixture
def repo(tmp_path):
  """A minimal project root (not a git checkout) that pins jax at a version no real release has."""
  root = str(tmp_path / "repo")
  _write(os.path.join(root, "requirements.txt"), "numpy==2.0.0\njax==9.8.7\njaxlib==9.8.7\n")
  _write(os.path.join(root, "pyproject.toml"))
  _write(os.path.join(root, "scripts", "train.py"))
  _write(os.path.join(root, "configs", "fartrack.py"))
  return root


def _full_args(repo, *more):
  args = ["--name", "fartrack-v4", "--zone", "us-central2-b", "--project", "my-proj", "--workdir", WORKDIR,
          "--config", CONFIG, "--repo-dir", repo]
  for data_root in DATA_ROOTS:
    args += ["--data-root", data_root]
  return [*args, *more, "--", *EXTRA]


def _commands(stdout):
  """The `+ ` lines of the output, each parsed into its argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _step(argv):
  if argv[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]:
    if argv[4] != "ssh":
      return argv[4]
    remote = _remote_command(argv)
    if "kill -TERM" in remote:
      return "ssh-stop"
    if "tar -xzf" in remote:
      return "ssh-unpack"
    if "pip install" in remote:
      return "ssh-install"
    if "scripts/train.py" in remote:
      return "ssh-train"
    return "ssh-other"
  return "pack" if "tar" in argv else argv[0]


def _remote_command(argv):
  return argv[argv.index("--command") + 1]


def _train_argv(remote):
  """The argv after `nohup` in the start command, as the worker's shell reads it."""
  words = shlex.split(remote)
  start = words.index("nohup") + 1
  return words[start:words.index(">", start)]


def _dry_run(*args, env=None):
  """Runs with --dry-run (placed before any `--`) and expects success."""
  at = args.index("--") if "--" in args else len(args)
  out = _launch(*args[:at], "--dry-run", *args[at:], env=env)
  assert out.returncode == 0, out.stderr
  return out


def test_help_exits_zero_and_lists_every_flag():
  out = _launch("--help")
  assert out.returncode == 0, out.stderr
  for flag in ["--name", "--zone", "--project", "--accelerator-type", "--version", "--spot", "--create",
               "--workdir", "--config", "--repo-dir", "--remote-dir", "--python", "--data-root",
               "--dry-run", "--help", "-- "]:
    assert flag in out.stdout, flag


def test_dry_run_prints_create_sync_install_train_in_order(repo):
  out = _dry_run(*_full_args(repo, "--create", "--spot"))
  commands = _commands(out.stdout)
  assert [_step(argv) for argv in commands] == [
      "describe", "create", "ssh-stop", "pack", "scp", "rm", "ssh-unpack", "ssh-install", "ssh-train"]
  for argv in commands:
    if argv[0] == "gcloud":
      assert "fartrack-v4" in argv[5] and "--zone=us-central2-b" in argv and "--project=my-proj" in argv
    if _step(argv) in ("ssh-stop", "scp", "ssh-unpack", "ssh-install", "ssh-train"):
      assert "--worker=all" in argv
  create = commands[1]
  assert {"--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"} <= set(create)
  # The tarball that tar writes is the one scp copies and rm removes afterwards.
  tarball = commands[3][commands[3].index("-czf") + 1]
  assert commands[4][5] == tarball and commands[5] == ["rm", "-f", tarball]
  assert _train_argv(_remote_command(commands[8])) == [
      "python", "scripts/train.py", "--config", CONFIG, "--workdir", WORKDIR, "--distributed=true",
      "--data-root", "lasot=/mnt/data/la sot", "--data-root", "got10k=/mnt/got", *EXTRA]
  assert f"tensorboard --logdir {WORKDIR}" in out.stdout


def test_dry_run_install_pins_jax_tpu_to_the_requirements_jax(repo):
  commands = _commands(_dry_run(*_full_args(repo)).stdout)
  install = next(_remote_command(argv) for argv in commands if _step(argv) == "ssh-install")
  steps = [shlex.split(part) for part in install.split(" && ")]
  assert ["python3.11", "-m", "venv", ".venv"] in steps
  assert [".", ".venv/bin/activate"] in steps
  pip = [step for step in steps if step[:2] == ["pip", "install"]]
  assert ["pip", "install", "-q", "-r", "requirements.txt"] in pip
  assert ["pip", "install", "-q", "jax[tpu]==9.8.7"] in pip
  assert ["pip", "install", "-q", "--no-deps", "-e", "."] in pip
  assert pip.index(["pip", "install", "-q", "-r", "requirements.txt"]) < pip.index(
      ["pip", "install", "-q", "--no-deps", "-e", "."])


def test_dry_run_without_create_only_describes(repo):
  commands = _commands(_dry_run(*_full_args(repo)).stdout)
  steps = [_step(argv) for argv in commands]
  assert steps[0] == "describe" and "create" not in steps


@pytest.mark.parametrize("accelerator, version", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5p-16", "v2-alpha-tpuv5"),
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_default_runtime_version_follows_the_accelerator(repo, accelerator, version):
  commands = _commands(_dry_run(*_full_args(repo, "--create", "--accelerator-type", accelerator)).stdout)
  create = next(argv for argv in commands if _step(argv) == "create")
  assert f"--accelerator-type={accelerator}" in create and f"--version={version}" in create


def test_start_command_runs_train_py_with_the_exact_arguments(repo, tmp_path):
  """Runs the printed worker command in a fake home; a stub python records its argv and pid."""
  commands = _commands(_dry_run(*_full_args(repo)).stdout)
  start = next(_remote_command(argv) for argv in commands if _step(argv) == "ssh-train")
  home = tmp_path / "home"
  fake_bin = home / "fake_bin"
  _write(str(home / "fartrack-jax" / ".venv" / "bin" / "activate"), f'export PATH="{fake_bin}:$PATH"\n')
  _write(str(fake_bin / "python"),
         '#!/bin/bash\necho $$ > "$HOME/pid.txt"\nprintf "%s\\0" "$@" > "$HOME/argv.tmp"\n'
         'mv "$HOME/argv.tmp" "$HOME/argv.bin"\n')
  os.chmod(fake_bin / "python", 0o755)
  env = {**os.environ, "HOME": str(home)}
  subprocess.run(["bash", "-c", start], check=True, env=env, cwd=tmp_path, timeout=TIMEOUT_S)
  deadline = time.monotonic() + 10
  while not (home / "argv.bin").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  argv = (home / "argv.bin").read_bytes().decode().split("\0")[:-1]
  assert argv == ["scripts/train.py", "--config", CONFIG, "--workdir", WORKDIR, "--distributed=true",
                  "--data-root", "lasot=/mnt/data/la sot", "--data-root", "got10k=/mnt/got", *EXTRA]
  # train.pid names train.py's process itself (what the printed stop command kills).
  assert (home / "fartrack-jax" / "train.pid").read_text().strip() == (home / "pid.txt").read_text().strip()
  assert (home / "fartrack-jax" / "train.log").exists()


def _git(repo, *args):
  subprocess.run(["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "-c",
                  "commit.gpgsign=false", *args], check=True, capture_output=True, timeout=TIMEOUT_S)


@pytest.fixture
def git_repo(repo):
  """`repo` as a git checkout: a committed-then-deleted file, ignored .venv/data, untracked new files."""
  if shutil.which("git") is None:
    pytest.skip("git is not installed")
  _write(os.path.join(repo, ".gitignore"), ".venv/\ndata/\n")
  _write(os.path.join(repo, "gone.py"))
  _git(repo, "init", "-q")
  _git(repo, "add", "-A")
  _git(repo, "commit", "-q", "-m", "init")
  os.remove(os.path.join(repo, "gone.py"))
  _write(os.path.join(repo, ".venv", "bin", "python"))
  _write(os.path.join(repo, "data", "big.bin"))
  _write(os.path.join(repo, "new module.py"))
  return repo


SHIPPED = {".gitignore", "requirements.txt", "pyproject.toml", "scripts/train.py", "configs/fartrack.py",
           "new module.py"}


def _members(tarball):
  with tarfile.open(tarball) as tar:
    return {os.path.normpath(m.name) for m in tar.getmembers() if m.isfile()}


@pytest.mark.parametrize("remote_dir, unpacked", [
    (None, "fartrack-jax"), ("~/my runs/it's", "my runs/it's")])
def test_pack_and_unpack_ship_tracked_and_unignored_files_only(git_repo, tmp_path, remote_dir, unpacked):
  local_tmp = tmp_path / "local_tmp"
  local_tmp.mkdir()
  env = {**os.environ, "TMPDIR": str(local_tmp)}
  more = [] if remote_dir is None else ["--remote-dir", remote_dir]
  stdout = _dry_run(*_full_args(git_repo, *more), env=env).stdout
  commands = _commands(stdout)
  pack, scp = commands[2], commands[3]
  assert pack[0] == "git" and "ls-files" in pack
  line = next(line[2:] for line in stdout.splitlines() if line.startswith("+ git "))
  subprocess.run(["bash", "-o", "pipefail", "-c", line], check=True, cwd=tmp_path, timeout=TIMEOUT_S)
  assert _members(scp[5]) == SHIPPED
  # What scp would do, then the printed unpack command on the worker.
  home = tmp_path / "home"
  home.mkdir()
  shutil.copy(scp[5], home / scp[6].split(":", 1)[1])
  unpack = next(_remote_command(argv) for argv in commands if _step(argv) == "ssh-unpack")
  subprocess.run(["bash", "-c", unpack], check=True, env={**os.environ, "HOME": str(home)}, cwd=tmp_path,
                 timeout=TIMEOUT_S)
  assert (home / unpacked / "new module.py").exists()
  assert not (home / unpacked / ".venv").exists() and not (home / unpacked / "gone.py").exists()
  assert not (home / scp[6].split(":", 1)[1]).exists()


@pytest.mark.parametrize("flag", ["--workdir", "--config", "--name", "--zone"])
def test_missing_required_flag_is_an_error_naming_it(repo, flag):
  args = ["--name", "n", "--zone", "z", "--workdir", WORKDIR, "--config", CONFIG, "--repo-dir", repo]
  at = args.index(flag)
  out = _launch(*args[:at], *args[at + 2:], "--dry-run")
  assert out.returncode != 0 and flag in out.stderr and not _commands(out.stdout)


def test_non_gs_workdir_is_refused_on_a_multi_host_slice(repo):
  args = ["--name", "n", "--zone", "z", "--workdir", "/tmp/run1", "--config", CONFIG, "--repo-dir", repo,
          "--dry-run"]
  out = _launch(*args, "--accelerator-type", "v4-32")
  assert out.returncode != 0 and "--workdir" in out.stderr and "gs://" in out.stderr
  # One host (v4-8: 8 TensorCores) may keep its workdir on the VM, and needs no jax.distributed.
  out = _launch(*args, "--accelerator-type", "v4-8")
  assert out.returncode == 0, out.stderr
  start = next(_remote_command(argv) for argv in _commands(out.stdout) if _step(argv) == "ssh-train")
  assert _train_argv(start) == ["python", "scripts/train.py", "--config", CONFIG, "--workdir", "/tmp/run1"]


@pytest.mark.parametrize("bad, named", [
    (["--frobnicate"], "--frobnicate"),
    (["--data-root", "lasot"], "--data-root"),
    (["--data-root", "=/mnt/x"], "--data-root"),
    (["--config", "configs/missing.py:variant=tiny"], "--config"),
    (["--accelerator-type", "v4"], "--accelerator-type"),
    (["--spot"], "--spot"),
    (["--dry-run=yes"], "--dry-run"),
    (["--zone"], "--zone"),
])
def test_bad_flags_are_errors_naming_the_flag(repo, bad, named):
  args = ["--name", "n", "--zone", "z", "--workdir", WORKDIR, "--config", CONFIG, "--repo-dir", repo,
          "--dry-run"]
  out = _launch(*args, *bad)
  assert out.returncode != 0 and named in out.stderr and not _commands(out.stdout)


def test_requirements_without_a_jax_pin_is_an_error(repo):
  _write(os.path.join(repo, "requirements.txt"), "jax>=0.4\n")
  out = _launch(*_full_args(repo), "--dry-run")
  assert out.returncode != 0 and "requirements.txt" in out.stderr and "jax==" in out.stderr


# ------------------------------------------------------------------ without --dry-run, stub gcloud


@pytest.fixture
def fake_gcloud(tmp_path):
  """PATH and env for a stub gcloud: `describe` prints $FAKE_DESCRIBE, or fails when that is NOT_FOUND or
  PERMISSION_DENIED; scp keeps a copy
  of what it was given; every call is logged one per line, arguments separated by \\x1f."""
  bin_dir = tmp_path / "bin"
  _write(str(bin_dir / "gcloud"), r"""#!/bin/bash
(IFS=$'\x1f'; echo "$*") >> "$FAKE_LOG"
case $4 in
  describe)
    if [[ $FAKE_DESCRIBE == NOT_FOUND || $FAKE_DESCRIBE == PERMISSION_DENIED ]]; then
      echo "ERROR: (gcloud.compute.tpus.tpu-vm.describe) $FAKE_DESCRIBE: fake answer." >&2
      exit 1
    fi
    printf '%b\n' "$FAKE_DESCRIBE" ;;
  scp) cp "$5" "$FAKE_SCP_COPY" ;;
esac
""")
  os.chmod(bin_dir / "gcloud", 0o755)
  local_tmp = tmp_path / "local_tmp"
  local_tmp.mkdir()
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(local_tmp),
         "FAKE_LOG": str(tmp_path / "gcloud.log"), "FAKE_SCP_COPY": str(tmp_path / "scp_copy.tar.gz")}

  def launch(describe, *args):
    out = _launch(*args, env={**env, "FAKE_DESCRIBE": describe}, cwd=tmp_path)
    log = tmp_path / "gcloud.log"
    calls = [line.split("\x1f") for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return out, calls, local_tmp, tmp_path / "scp_copy.tar.gz"

  return launch


def test_reuses_a_ready_slice_and_runs_every_step(repo, fake_gcloud):
  out, calls, local_tmp, scp_copy = fake_gcloud(r"READY\tv4-32", *_full_args(repo, "--create"))
  assert out.returncode == 0, out.stderr
  assert [_step(["gcloud", *call]) for call in calls] == [
      "describe", "ssh-stop", "scp", "ssh-unpack", "ssh-install", "ssh-train"]
  assert _members(scp_copy) == {"requirements.txt", "pyproject.toml", "scripts/train.py",
                                "configs/fartrack.py"}
  assert os.listdir(local_tmp) == []  # the local tarball and describe's stderr file are removed


def test_creates_a_missing_slice_only_with_create(repo, fake_gcloud):
  out, calls, _, _ = fake_gcloud("NOT_FOUND", *_full_args(repo, "--create"))
  assert out.returncode == 0, out.stderr
  assert [_step(["gcloud", *call]) for call in calls][:4] == ["describe", "create", "ssh-stop", "scp"]
  out, calls, _, _ = fake_gcloud("NOT_FOUND", *_full_args(repo))
  assert out.returncode != 0 and "--create" in out.stderr
  assert [_step(["gcloud", *call]) for call in calls] == ["describe"]


def test_a_describe_error_other_than_not_found_stops_even_with_create(repo, fake_gcloud):
  out, calls, _, _ = fake_gcloud("PERMISSION_DENIED", *_full_args(repo, "--create"))
  assert out.returncode != 0 and "PERMISSION_DENIED: fake answer" in out.stderr
  assert [_step(["gcloud", *call]) for call in calls] == ["describe"]


@pytest.mark.parametrize("describe, message", [
    (r"PREEMPTED\tv4-32", "PREEMPTED"), (r"READY\tv4-64", "--accelerator-type")])
def test_refuses_a_slice_that_is_not_ready_or_of_another_type(repo, fake_gcloud, describe, message):
  out, calls, _, _ = fake_gcloud(describe, *_full_args(repo, "--accelerator-type", "v4-32"))
  assert out.returncode != 0 and message in out.stderr
  assert [_step(["gcloud", *call]) for call in calls] == ["describe"]


def test_without_dry_run_gcloud_must_be_installed(repo, tmp_path):
  # Only bash on PATH: the script must stop before running anything.
  bin_dir = tmp_path / "only_bash"
  bin_dir.mkdir()
  for tool in ["bash", "dirname", "sed", "head"]:
    os.symlink(shutil.which(tool), bin_dir / tool)
  out = subprocess.run(["bash", SCRIPT, *_full_args(repo)], capture_output=True, text=True,
                       timeout=TIMEOUT_S, env={**os.environ, "PATH": str(bin_dir)}, cwd=tmp_path)
  assert out.returncode != 0 and "gcloud" in out.stderr


def test_a_previous_run_is_stopped_by_its_recorded_pid_before_shipping(repo, tmp_path):
  """The printed stop command, run on a "worker": the train.py named by train.pid gets SIGTERM (it saves,
  as on a preemption) and is gone before the command returns; another process is never signalled, even if
  train.pid names it; a worker without a previous run is left alone."""
  commands = _commands(_dry_run(*_full_args(repo)).stdout)
  steps = [_step(argv) for argv in commands]
  assert steps.index("ssh-stop") < steps.index("scp")
  stop = _remote_command(commands[steps.index("ssh-stop")])
  home = tmp_path / "home"
  run_dir = home / "fartrack-jax"
  env = {**os.environ, "HOME": str(home)}
  subprocess.run(["bash", "-c", stop], check=True, env=env, timeout=TIMEOUT_S)  # nothing there yet

  fake = run_dir / "scripts" / "train.py"
  _write(str(fake), "import signal, sys, time\n"
         "def on_term(*_):\n  open(sys.argv[1], 'w').write('saved')\n  sys.exit(75)\n"
         "signal.signal(signal.SIGTERM, on_term)\nprint('ready', flush=True)\ntime.sleep(600)\n")
  marker = tmp_path / "saved"
  train = subprocess.Popen([sys.executable, str(fake), str(marker)], stdout=subprocess.PIPE, text=True)
  other = subprocess.Popen(["sleep", "600"])
  try:
    assert train.stdout.readline().strip() == "ready"
    (run_dir / "train.pid").write_text(f"{other.pid}\n")
    subprocess.run(["bash", "-c", stop], check=True, env=env, timeout=TIMEOUT_S)
    assert other.poll() is None  # not a train.py: left alone
    (run_dir / "train.pid").write_text(f"{train.pid}\n")
    out = subprocess.run(["bash", "-c", stop], check=True, env=env, timeout=TIMEOUT_S, capture_output=True,
                         text=True)
    assert f"stopping the previous run (pid {train.pid})" in out.stdout
    assert train.wait(timeout=5) == 75 and marker.read_text() == "saved"
    assert not (run_dir / "train.pid").exists()
  finally:
    for p in (train, other):
      if p.poll() is None:
        p.kill()


def test_install_is_skipped_when_the_same_commit_is_installed(git_repo, tmp_path):
  """From a git checkout the install records the commit in the worker's venv; the next launch of the same
  commit skips pip (a stub pip that fails shows it is not called); --reinstall, or another commit, installs."""
  def install_command(*more):
    commands = _commands(_dry_run(*_full_args(git_repo, *more)).stdout)
    return next(_remote_command(argv) for argv in commands if _step(argv) == "ssh-install")

  head = subprocess.run(["git", "-C", git_repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                        check=True).stdout.strip()
  install = install_command()
  assert head in install
  home = tmp_path / "home"
  run_dir = home / "fartrack-jax"
  stub_bin = home / "bin"
  _write(str(stub_bin / "pip"), "#!/bin/bash\necho pip-called >> \"$HOME/pip.log\"\n")
  _write(str(stub_bin / "python3.11"), "#!/bin/bash\nmkdir -p .venv/bin && "
         "echo \"export PATH=$HOME/bin:\\$PATH\" > .venv/bin/activate\n")
  for f in ("pip", "python3.11"):
    os.chmod(stub_bin / f, 0o755)
  run_dir.mkdir(parents=True)
  env = {**os.environ, "HOME": str(home), "PATH": f"{stub_bin}:{os.environ['PATH']}"}
  subprocess.run(["bash", "-c", install], check=True, env=env, timeout=TIMEOUT_S)
  calls = (home / "pip.log").read_text().count("pip-called")
  assert calls == 4  # pip itself, requirements, jax[tpu], the project
  out = subprocess.run(["bash", "-c", install], check=True, env=env, timeout=TIMEOUT_S, capture_output=True,
                       text=True)
  assert "skipping the install" in out.stdout
  assert (home / "pip.log").read_text().count("pip-called") == calls
  subprocess.run(["bash", "-c", install_command("--reinstall")], check=True, env=env, timeout=TIMEOUT_S)
  assert (home / "pip.log").read_text().count("pip-called") == 2 * calls
