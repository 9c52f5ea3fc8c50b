#!/usr/bin/env bash
# Install the built wheel the way users do: a fresh virtualenv per extra, the newest releases the
# package index serves (not the lock; torch aside, below), then run that framework's quickstart offline.
#
#   scripts/check_extras.sh [langchain autogen crewai train]     (default: all four)
#
# Environment: UV (default .venv/bin/uv), PYTHON_VERSION (3.11), WHEEL (a built wheel to use instead of
# building one from this tree), TORCH_WHEELS (below).
#
# The quickstarts are the README's, made runnable offline with scripted models: examples/*.py.
# Serving extras must not pull Agent Lightning (or its pins): asserted for each of them.
#
# One exception to "newest": torch for [train]. The newest torch on PyPI is the CUDA build, which
# pulls ~3 GB of nvidia-* wheels; where a CPU build of torch lies in $TORCH_WHEELS (default
# /opt/wheels, as on the CI machines) it is used instead (TORCH_WHEELS= turns that off).
#
# Every extra is checked even when an earlier one fails; each prints one line,
#   [extra] ok in N s: <framework versions>      or      [extra] FAILED at <step> after N s: <what broke>
# and the script exits 1 if any failed, with a summary naming them.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
UV="${UV:-$ROOT/.venv/bin/uv}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
TORCH_WHEELS="${TORCH_WHEELS-/opt/wheels}"
WORK="$(mktemp -d -t agentgym-extras-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
EXTRAS=("$@")
[ ${#EXTRAS[@]} -eq 0 ] && EXTRAS=(langchain autogen crewai train)

export LITELLM_LOCAL_MODEL_COST_MAP=True CREWAI_DISABLE_TELEMETRY=true CREWAI_TESTING=true \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false COLUMNS=200

if [ -n "${WHEEL:-}" ]; then  # a wheel built already (tests/test_extras.py builds it once for all extras)
  [ -f "$WHEEL" ] || { echo "check-extras FAILED: WHEEL=$WHEEL is not a file"; exit 1; }
  echo "using $(basename "$WHEEL")"
else
  if ! "$UV" build --quiet --wheel --out-dir "$WORK/dist" "$ROOT" > "$WORK/build.log" 2>&1; then
    cat "$WORK/build.log"
    echo "check-extras FAILED: building the wheel failed (before any extra was installed)"
    exit 1
  fi
  WHEEL="$(ls "$WORK"/dist/agentgym_runtime-*.whl)"
  echo "built $(basename "$WHEEL")"
fi

quickstart() {
  case "$1" in
    langchain) echo "langchain_agent.py" ;;
    autogen) echo "autogen_agent.py" ;;
    crewai) echo "crewai_crew.py" ;;
    train) echo "plain_python_agent.py" ;;
    *) return 1 ;;
  esac
}

# The framework versions an extra resolved to (what the "ok" line reports).
versions() {
  "$1" - "$2" <<'PY' 2>/dev/null || echo "(versions unavailable)"
import importlib.metadata as md
import sys

names = {"langchain": ["langchain", "langchain-core", "langgraph"], "autogen": ["autogen-agentchat", "autogen-ext"],
         "crewai": ["crewai"], "train": ["agentlightning", "torch", "transformers", "peft", "trl"]}[sys.argv[1]]
found = []
for name in names:
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        found.append(f"{name} missing")
print(", ".join(found))
PY
}

# check_one EXTRA LOG: install and run one extra; on failure print the step that broke and return 1.
check_one() {
  local extra="$1" log="$2" venv="$WORK/venv-$1" script
  local -a find_links=()
  local py="$venv/bin/python"
  if ! script="$(quickstart "$extra")"; then
    echo "step=arguments: unknown extra '$extra' (langchain, autogen, crewai, train)"
    return 1
  fi
  echo "step=venv" >> "$log"
  "$UV" venv --quiet --python "$PYTHON_VERSION" "$venv" >> "$log" 2>&1 || { echo "step=venv"; return 1; }
  local -a constraint=()
  if [ "$extra" = "train" ] && [ -n "$TORCH_WHEELS" ]; then
    local cpu
    cpu="$(ls "$TORCH_WHEELS"/torch-*+cpu-cp"${PYTHON_VERSION//./}"-*.whl 2>/dev/null | sort -V | tail -1)"
    if [ -n "$cpu" ]; then
      find_links=(--find-links "$TORCH_WHEELS")
      # torch-2.13.0+cpu-cp311-... -> torch==2.13.0+cpu
      echo "torch==$(basename "$cpu" | cut -d- -f2)" > "$WORK/torch-cpu.txt"
      constraint=(--constraint "$WORK/torch-cpu.txt")
    fi
  fi
  echo "step=install" >> "$log"
  # --refresh: ask the index again, never a cached resolution; no lock: the newest releases.
  if ! "$UV" pip install --quiet --refresh --python "$py" "${find_links[@]}" "${constraint[@]}" \
    "${WHEEL}[${extra}]" >> "$log" 2>&1; then
    echo "step=install: uv could not install agentgym-runtime[$extra]"
    return 1
  fi
  echo "step=dependencies" >> "$log"
  if [ "$extra" != "train" ]; then
    # Serving extras must not drag in Agent Lightning, its litellm[proxy]/AgentOps pins, or torch.
    if ! "$py" - "$extra" >> "$log" 2>&1 <<'PY'
import importlib.metadata as md
import sys

installed = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
pulled = sorted(installed & {"agentlightning", "agentops", "fastapi-sso", "litellm-proxy-extras", "torch", "vllm", "verl"})
if pulled:
    sys.exit(f"[{sys.argv[1]}] a serving extra pulls training dependencies: {pulled}")
PY
    then
      echo "step=dependencies: a serving extra pulls Agent Lightning or its pins ($(tail -1 "$log"))"
      return 1
    fi
  else
    if ! "$py" -c "import agentgym_runtime.trainers.lightning.replay, agentgym_runtime.trainers.apo" >> "$log" 2>&1; then
      echo "step=import: the trainers do not import ($(tail -1 "$log"))"
      return 1
    fi
  fi
  echo "step=quickstart examples/$script" >> "$log"
  # Run from an empty directory, so the installed wheel is imported, not the source tree.
  mkdir -p "$WORK/run-$extra"
  # XDG_DATA_HOME: what the framework keeps between runs (CrewAI's task-output database, keyed by the
  # directory's name) stays in this run's directory, not shared with other runs or crewai versions.
  if ! (cd "$WORK/run-$extra" && XDG_DATA_HOME="$WORK/data-$extra" "$py" "$ROOT/examples/$script") \
    > "$WORK/$extra.out" 2>&1; then
    cat "$WORK/$extra.out" >> "$log"
    echo "step=quickstart: examples/$script exited with an error ($(grep -v '^\s*$' "$WORK/$extra.out" | tail -1))"
    return 1
  fi
  cat "$WORK/$extra.out" >> "$log"
  if ! grep -q "reliability" "$WORK/$extra.out"; then
    echo "step=quickstart: examples/$script printed no reliability"
    return 1
  fi
  return 0
}

failed=()
for extra in "${EXTRAS[@]}"; do
  start=$(date +%s)
  log="$WORK/$extra.log"
  : > "$log"
  if problem="$(check_one "$extra" "$log")"; then
    echo "[$extra] ok in $(( $(date +%s) - start )) s: $(versions "$WORK/venv-$extra/bin/python" "$extra")"
  else
    echo "----- [$extra] log (last 60 lines) -----"
    tail -60 "$log"
    echo "-----"
    echo "[$extra] FAILED at ${problem#step=} after $(( $(date +%s) - start )) s;" \
      "resolved: $(versions "$WORK/venv-$extra/bin/python" "$extra")"
    failed+=("$extra")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-extras FAILED for: ${failed[*]} (of: ${EXTRAS[*]})"
  exit 1
fi
echo "check-extras ok: ${EXTRAS[*]}"
