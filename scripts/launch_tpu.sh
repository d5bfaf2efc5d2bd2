#!/usr/bin/env bash
# Launches FARTrack training on a Cloud TPU VM slice (single- or multi-host).
#
#   scripts/launch_tpu.sh --name fartrack-v4 --zone us-central2-b --create \
#     --workdir gs://BUCKET/fartrack/run1 --config configs/fartrack.py:variant=tiny \
#     --data-root lasot=/mnt/disks/data/lasot -- --config.train.global_batch_size=128
#
# Steps: (1) reuse the slice (`gcloud compute tpus tpu-vm describe`) or, with --create, create it, and
# stop a previous run on every worker (SIGTERM to the train.py of its train.pid: a preemption, it saves a
# checkpoint and exits; SIGKILL after --stop-timeout seconds; then wait until no process holds the TPU);
# (2) pack the project's files (git-tracked plus untracked-but-not-ignored, so no .git/.venv), copy the
# tarball to every worker and unpack it into --remote-dir; (3) on every worker, make a venv and install
# requirements.txt, jax[tpu] at the version requirements.txt pins, and the project (`pip install -e .
# --no-deps`), skipped when the worker's venv was installed from the same commit (and Python, jax); (4) start scripts/train.py on every worker at once (with --distributed=true on a multi-host
# slice: train.py then calls jax.distributed.initialize(), which finds the coordinator in the TPU VM
# metadata); (5) print how to watch, stop and delete. --dry-run prints each command (`+ ` then the command,
# quoted so that bash reads back the same arguments) and runs nothing. Run with --help for every flag.

# Unexpanded ~ and $HOME are written for the workers' shell to expand, on purpose.
# shellcheck disable=SC2088,SC2016

set -euo pipefail

PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly PROG SCRIPT_DIR
# Where the tarball lands on each worker, relative to the remote home directory.
readonly REMOTE_TARBALL=fartrack-jax-code.tar.gz

usage() {
  cat <<EOF
Usage: $PROG --name TPU_NAME --zone ZONE --workdir gs://BUCKET/PATH --config configs/FILE.py[:ARGS]
         [options] [-- TRAIN_ARGS...]

Creates or reuses a Cloud TPU VM slice, ships this project to every worker, installs it, and starts
scripts/train.py on all workers at once.

Required:
  --name TPU_NAME         Name of the TPU VM slice (lowercase letters, digits and hyphens).
  --zone ZONE             Zone of the slice, e.g. us-central2-b (v4) or europe-west4-a (v6e).
  --workdir gs://B/P      Checkpoints and TensorBoard events. Must be a gs:// path on a multi-host slice
                          (every host writes to it); a single-host slice may use a path on the VM.
  --config FILE.py[:ARGS] Training config, relative to --repo-dir, e.g. configs/fartrack.py:variant=tiny.

Options:
  --project PROJECT       Google Cloud project (default: the gcloud config's project).
  --accelerator-type TYPE TPU type and size (default: v4-32, i.e. 4 hosts). Used by --create; on reuse,
                          if given, it must match the existing slice.
  --version VERSION       TPU VM runtime for --create (default: tpu-ubuntu2204-base for v2-v4,
                          v2-alpha-tpuv5 for v5p, v2-alpha-tpuv5-lite for v5litepod, v2-alpha-tpuv6e
                          for v6e).
  --spot                  Create the slice as a Spot VM (cheaper, can be preempted). Only with --create.
  --create                Create the slice if it does not exist (otherwise a missing slice is an error).
  --repo-dir DIR          Local project root to ship (default: $(dirname "$SCRIPT_DIR")).
  --remote-dir DIR        Project directory on each worker (default: ~/fartrack-jax).
  --python PYTHON         Interpreter for the workers' venv (default: python3.11; the pinned jax needs
                          Python >= 3.11). A missing python3.N is installed with apt-get.
  --data-root NAME=DIR    Dataset root on the workers, passed to train.py as --data-root NAME=DIR.
                          Repeatable.
  --stop-timeout SECONDS  A previous run still going on a worker is stopped first (SIGTERM: it saves a
                          checkpoint, as on a preemption); SIGKILL after this many seconds (default 300).
  --reinstall             Install even when the worker's venv holds this commit's install already.
  --dry-run               Print every command, one per line prefixed with '+ ', and run nothing.
  -h, --help              Print this help and exit.
  -- TRAIN_ARGS...        Everything after -- goes to scripts/train.py verbatim,
                          e.g. -- --config.train.global_batch_size=128.
EOF
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

log() {
  printf '==> %s\n' "$*" >&2
}

# One shell word that bash reads back as exactly $1: plain words as they are, others in single quotes,
# and words with control characters (newlines, tabs) in printf %q's $'...' form so a command stays on one
# line.
quote() {
  local word=$1
  if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$word"
  elif [[ $word =~ [[:cntrl:]] ]]; then
    printf '%q' "$word"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# The arguments as one command line.
quote_all() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# A path on the worker as a shell word: a leading ~ stays unquoted so the worker's shell expands it.
remote_path() {
  local path=$1 rest
  case $path in
    "~") printf '~' ;;
    "~/"*)
      rest=${path#"~/"}
      if [[ -z $rest || $(quote "$rest") == "$rest" ]]; then
        printf '~/%s' "$rest"
      else
        printf '"$HOME"/%s' "$(quote "$rest")"
      fi
      ;;
    *) quote "$path" ;;
  esac
}

# Prints a command (argv) and, unless --dry-run, runs it.
run() {
  printf '+ %s\n' "$(quote_all "$@")"
  if ((!dry_run)); then
    "$@"
  fi
}

# Prints a shell command line (a pipeline) and, unless --dry-run, runs it with bash.
run_shell() {
  printf '+ %s\n' "$1"
  if ((!dry_run)); then
    bash -o pipefail -c "$1"
  fi
}

# Default TPU VM runtime for an accelerator type, from the Cloud TPU "TPU software versions" table.
default_version() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# Whether a slice of this type has more than one host. The size suffix counts TensorCores for v2-v4 and
# v5p (8 per host) and chips for v5e/v6e (up to 8 on a single-host slice), so > 8 means several hosts.
is_multi_host() {
  local size=${1##*-}
  [[ ! $size =~ ^[0-9]+$ ]] || ((size > 8))
}

check_workdir() {
  local accelerator=$1
  if [[ $workdir != gs://* ]] && is_multi_host "$accelerator"; then
    die "--workdir must be a gs:// path on a multi-host slice ($accelerator): every host writes" \
      "checkpoints and events there, and a local path would differ per host (got --workdir $workdir)"
  fi
}

# ---------------------------------------------------------------------------------------------- flags
name="" zone="" project="" accelerator="" version="" workdir="" config=""
repo_dir="" remote_dir="~/fartrack-jax" python="python3.11"
spot=0 create=0 dry_run=0 reinstall=0 stop_timeout=300
data_roots=()
train_extra=()

while (($#)); do
  arg=$1
  shift
  if [[ $arg == -- ]]; then
    train_extra=("$@")
    break
  fi
  if [[ $arg == --*=* ]]; then
    flag=${arg%%=*}
    value=${arg#*=}
    has_value=1
  else
    flag=$arg
    value=""
    has_value=0
  fi
  case $flag in
    -h | --help)
      usage
      exit 0
      ;;
    --spot | --create | --dry-run | --reinstall)
      ((!has_value)) || die "$flag takes no value (got $arg)"
      case $flag in
        --spot) spot=1 ;;
        --create) create=1 ;;
        --dry-run) dry_run=1 ;;
        --reinstall) reinstall=1 ;;
      esac
      ;;
    --name | --zone | --project | --accelerator-type | --version | --workdir | --config | --repo-dir | \
      --remote-dir | --python | --data-root | --stop-timeout)
      if ((!has_value)); then
        (($#)) || die "$flag needs a value"
        value=$1
        shift
      fi
      [[ -n $value ]] || die "$flag needs a non-empty value"
      case $flag in
        --name) name=$value ;;
        --zone) zone=$value ;;
        --project) project=$value ;;
        --accelerator-type) accelerator=$value ;;
        --version) version=$value ;;
        --workdir) workdir=$value ;;
        --config) config=$value ;;
        --repo-dir) repo_dir=$value ;;
        --remote-dir) remote_dir=$value ;;
        --python) python=$value ;;
        --stop-timeout)
          [[ $value =~ ^[0-9]+$ ]] || die "--stop-timeout must be a whole number of seconds (got '$value')"
          stop_timeout=$value
          ;;
        --data-root)
          [[ $value == ?*=?* ]] || die "--data-root must be NAME=DIR with both parts non-empty (got '$value')"
          data_roots+=("$value")
          ;;
      esac
      ;;
    *) die "unknown flag: $arg (see $PROG --help; train.py arguments go after --)" ;;
  esac
done

[[ -n $name ]] || die "--name is required (the TPU VM slice to create or reuse)"
[[ -n $zone ]] || die "--zone is required (e.g. us-central2-b)"
[[ -n $workdir ]] || die "--workdir is required (gs://BUCKET/PATH for checkpoints and TensorBoard events)"
[[ -n $config ]] || die "--config is required (e.g. configs/fartrack.py:variant=tiny)"
[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name must be lowercase letters, digits and hyphens, starting with a letter (got '$name')"
accelerator_given=0
[[ -z $accelerator ]] || accelerator_given=1
accelerator=${accelerator:-v4-32}
[[ $accelerator =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
  die "--accelerator-type must look like v4-32, v5p-8, v5litepod-16 or v6e-8 (got '$accelerator')"
version=${version:-$(default_version "$accelerator")}
((!spot || create)) || die "--spot only applies with --create"
check_workdir "$accelerator"

repo_dir=${repo_dir:-$(dirname "$SCRIPT_DIR")}
[[ -d $repo_dir ]] || die "--repo-dir $repo_dir is not a directory"
repo_dir=$(cd "$repo_dir" && pwd)
for required in requirements.txt pyproject.toml scripts/train.py; do
  [[ -f $repo_dir/$required ]] || die "--repo-dir $repo_dir has no $required (is it the project root?)"
done
config_file=${config%%:*}
[[ $config_file != /* ]] || die "--config must be relative to --repo-dir, as the workers see it (got $config)"
[[ -f $repo_dir/$config_file ]] || die "--config file $config_file not found under --repo-dir $repo_dir"
jax_version=$(sed -nE 's/^[[:space:]]*jax[[:space:]]*==[[:space:]]*([0-9][^[:space:];#]*).*/\1/p' \
  "$repo_dir/requirements.txt" | head -n 1)
[[ -n $jax_version ]] ||
  die "$repo_dir/requirements.txt has no 'jax==VERSION' line; the TPU install needs it for jax[tpu]"
if ((!dry_run)); then
  command -v gcloud >/dev/null || die "gcloud not found; install the Google Cloud CLI (or use --dry-run)"
fi

# Local temporary files, removed on exit.
cleanup=()
trap 'rm -f ${cleanup[@]+"${cleanup[@]}"}' EXIT

location=(--zone="$zone")
[[ -z $project ]] || location+=(--project="$project")
tpu_vm=(gcloud compute tpus tpu-vm)
remote_dir_word=$(remote_path "$remote_dir")

# ------------------------------------------------------------------------------- (1) create or reuse
log "(1) reuse or create TPU VM slice $name"
describe=("${tpu_vm[@]}" describe "$name" "${location[@]}" "--format=value(state,acceleratorType)")
create_cmd=("${tpu_vm[@]}" create "$name" "${location[@]}" --accelerator-type="$accelerator"
  --version="$version")
((!spot)) || create_cmd+=(--spot)
if ((dry_run)); then
  run "${describe[@]}"
  if ((create)); then
    log "(the create command runs only if describe finds no slice)"
    run "${create_cmd[@]}"
  fi
else
  describe_err=$(mktemp)
  cleanup+=("$describe_err")
  printf '+ %s\n' "$(quote_all "${describe[@]}")"
  if described=$("${describe[@]}" 2>"$describe_err"); then
    read -r state actual_type <<<"$described" || true
    [[ $state == READY ]] || die "TPU VM $name is in state ${state:-UNKNOWN}, not READY; wait for it or" \
      "delete it (gcloud compute tpus tpu-vm delete $name --zone=$zone) and run again with --create"
    if [[ -n ${actual_type:-} && $actual_type != "$accelerator" ]]; then
      ((!accelerator_given)) || die "--accelerator-type $accelerator does not match the existing slice" \
        "$name ($actual_type)"
      accelerator=$actual_type
      check_workdir "$accelerator"
    fi
    log "reusing $name ($accelerator, READY)"
  elif grep -qiE 'NOT_FOUND|not found' "$describe_err"; then
    ((create)) || die "no TPU VM named $name in zone $zone; pass --create to create it"
    run "${create_cmd[@]}"
  else
    cat "$describe_err" >&2
    die "gcloud could not describe TPU VM $name (see above; check --zone, --project and gcloud auth)"
  fi
fi

# A run launched before on this slice is stopped on every worker before anything is shipped: by the pid
# it recorded (only if that pid is still a train.py), with SIGTERM so that it saves a checkpoint as on a
# preemption, SIGKILL after --stop-timeout; then the TPU must be free (no process holds /dev/accel* or
# /dev/vfio) before the new run can open it.
log "stop a previous run on every worker (if any)"
stop="cd $remote_dir_word 2>/dev/null || exit 0; pid=\$(cat train.pid 2>/dev/null)"
stop+="; if [ -n \"\$pid\" ] && grep -qs train.py /proc/\$pid/cmdline; then"
stop+=" echo \"stopping the previous run (pid \$pid) on \$(hostname)\"; kill -TERM \$pid"
stop+="; for i in \$(seq $stop_timeout); do grep -qs train.py /proc/\$pid/cmdline || break; sleep 1; done"
stop+="; grep -qs train.py /proc/\$pid/cmdline && kill -KILL \$pid; fi"
stop+="; for i in \$(seq 60); do ls -l /proc/[0-9]*/fd 2>/dev/null | grep -qe /dev/accel -e /dev/vfio/ || break"
stop+="; sleep 1; done; rm -f train.pid"
run "${tpu_vm[@]}" ssh "$name" "${location[@]}" --worker=all --command "$stop"

# ----------------------------------------------------------------------------------------- (2) sync
log "(2) ship $repo_dir to every worker"
tarball=${TMPDIR:-/tmp}/fartrack-jax-code-$name.tar.gz
if git -C "$repo_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and untracked-but-not-ignored files; tracked files deleted in the working tree are left out
  # (tar would fail on them).
  list=(git -C "$repo_dir" ls-files -z --cached --others --exclude-standard -- .)
  while IFS= read -r -d '' deleted; do
    list+=(":(exclude,literal)$deleted")
  done < <(git -C "$repo_dir" ls-files -z --deleted -- .)
  pack="$(quote_all "${list[@]}") | $(quote_all tar -czf "$tarball" -C "$repo_dir" --null -T -)"
else
  log "$repo_dir is not a git checkout: shipping everything but .git, .venv and caches"
  pack=$(quote_all tar -czf "$tarball" -C "$repo_dir" --exclude=.git --exclude=.venv \
    --exclude=__pycache__ --exclude='*.pyc' .)
fi
((dry_run)) || cleanup+=("$tarball")
run_shell "$pack"
run "${tpu_vm[@]}" scp "$tarball" "$name:$REMOTE_TARBALL" "${location[@]}" --worker=all
run rm -f "$tarball"
unpack="mkdir -p $remote_dir_word && tar -xzf ~/$REMOTE_TARBALL -C $remote_dir_word && rm -f ~/$REMOTE_TARBALL"
run "${tpu_vm[@]}" ssh "$name" "${location[@]}" --worker=all --command "$unpack"

# -------------------------------------------------------------------------------------- (3) install
log "(3) install the project and jax[tpu]==$jax_version on every worker"
python_word=$(quote "$python")
get_python=""
if [[ $python =~ ^python3\.[0-9]+$ ]]; then
  # The TPU VM images are Ubuntu 22.04 (Python 3.10); Debian splits venv/ensurepip into python3.N-venv.
  apt="sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq"
  get_python="{ $python_word -c 'import ensurepip, venv' 2>/dev/null || { $apt update && $apt install -y"
  get_python+=" $python_word $python_word-venv; }; } && "
fi
install="$get_python$python_word -m venv .venv && . .venv/bin/activate"
install+=" && pip install -q --upgrade pip && pip install -q -r requirements.txt"
install+=" && pip install -q $(quote "jax[tpu]==$jax_version") && pip install -q --no-deps -e ."
# The venv records what it was installed from (the commit, Python and jax); the same again skips the
# install (the code itself is shipped every time and installed editable). A checkout whose requirements or
# pyproject differ from the commit, or no git checkout at all, always installs.
install_key=""
if ((!reinstall)) && git -C "$repo_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1 &&
  [[ -z $(git -C "$repo_dir" status --porcelain -- requirements.txt pyproject.toml 2>/dev/null) ]]; then
  install_key="$(git -C "$repo_dir" rev-parse HEAD)-$python-jax$jax_version"
fi
if [[ -n $install_key ]]; then
  key_word=$(quote "$install_key")
  fresh=$install
  install="cd $remote_dir_word && { [ \"\$(cat .venv/fartrack-installed 2>/dev/null)\" = $key_word ]"
  install+=" && echo \"same commit installed on \$(hostname): skipping the install\" || { $fresh"
  install+=" && echo $key_word > .venv/fartrack-installed; }; }"
else
  install="cd $remote_dir_word && $install"
fi
run "${tpu_vm[@]}" ssh "$name" "${location[@]}" --worker=all --command "$install"

# ---------------------------------------------------------------------------------------- (4) train
log "(4) start scripts/train.py on every worker"
train=(python scripts/train.py --config "$config" --workdir "$workdir")
# train.py's --distributed=auto looks at environment variables (TPU_WORKER_HOSTNAMES is set on GKE) that a
# plain TPU VM's ssh session lacks; jax.distributed.initialize() itself finds the coordinator in the VM
# metadata, so a multi-host slice asks for it outright.
if is_multi_host "$accelerator"; then
  train+=(--distributed=true)
fi
for data_root in ${data_roots[@]+"${data_roots[@]}"}; do
  train+=(--data-root "$data_root")
done
train+=(${train_extra[@]+"${train_extra[@]}"})
# The braces keep cd/activate in the login shell, so $! is train.py's pid.
start="cd $remote_dir_word && . .venv/bin/activate && { nohup $(quote_all "${train[@]}")"
start+=' > train.log 2>&1 < /dev/null & echo $! > train.pid; }'
run "${tpu_vm[@]}" ssh "$name" "${location[@]}" --worker=all --command "$start"

# ---------------------------------------------------------------------------------------- (5) watch
on_worker() {
  quote_all "${tpu_vm[@]}" ssh "$name" "${location[@]}" "$@"
}
if [[ $workdir == gs://* ]]; then
  tensorboard="TensorBoard (it reads gs:// directly):
    $(quote_all tensorboard --logdir "$workdir")"
else
  tensorboard="TensorBoard on worker 0, forwarded to http://localhost:6006:
    $(on_worker --worker=0 --command "cd $remote_dir_word && .venv/bin/tensorboard --logdir $(quote "$workdir")" \
      -- -L 6006:localhost:6006)"
fi
if ((dry_run)); then
  outcome="would start"
else
  outcome="started"
fi
cat <<EOF

Training $outcome on every worker of $name ($accelerator).
  $tensorboard
  Follow worker 0's log (each worker writes its own $remote_dir/train.log):
    $(on_worker --worker=0 --command "tail -f $remote_dir_word/train.log")
  Stop the run on every worker:
    $(on_worker --worker=all --command "kill \$(cat $remote_dir_word/train.pid)")
  Delete the slice (billing stops):
    $(quote_all "${tpu_vm[@]}" delete "$name" "${location[@]}" --quiet)
EOF
