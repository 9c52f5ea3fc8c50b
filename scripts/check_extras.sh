#!/usr/bin/env bash
# Install the built wheel the way users do: a fresh virtualenv per extra, the newest releases the
# package index serves (no lock, no constraints), then run that framework's quickstart offline.
#
#   scripts/check_extras.sh [langchain autogen crewai train]     (default: all four)
#
# The quickstarts are the README's, made runnable offline with scripted models: examples/*.py.
# Serving extras must not pull Agent Lightning (or its pins): asserted for each of them.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
UV="${UV:-$ROOT/.venv/bin/uv}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
WORK="$(mktemp -d -t agentgym-extras-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
EXTRAS=("$@")
[ ${#EXTRAS[@]} -eq 0 ] && EXTRAS=(langchain autogen crewai train)

export LITELLM_LOCAL_MODEL_COST_MAP=True CREWAI_DISABLE_TELEMETRY=true CREWAI_TESTING=true \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false COLUMNS=200

"$UV" build --quiet --wheel --out-dir "$WORK/dist" "$ROOT"
WHEEL="$(ls "$WORK"/dist/agentgym_runtime-*.whl)"
echo "built $(basename "$WHEEL")"

quickstart() {
  case "$1" in
    langchain) echo "langchain_agent.py" ;;
    autogen) echo "autogen_agent.py" ;;
    crewai) echo "crewai_crew.py" ;;
    train) echo "plain_python_agent.py" ;;
  esac
}

for extra in "${EXTRAS[@]}"; do
  start=$(date +%s)
  venv="$WORK/venv-$extra"
  "$UV" venv --quiet --python "$PYTHON_VERSION" "$venv"
  # --refresh: ask the index again, never a cached resolution; no -c/-r: the newest releases.
  "$UV" pip install --quiet --refresh --python "$venv/bin/python" "${WHEEL}[${extra}]"
  py="$venv/bin/python"
  if [ "$extra" != "train" ]; then
    # Serving extras must not drag in Agent Lightning (or torch through it).
    "$py" - "$extra" <<'PY'
import importlib.metadata as md
import sys

installed = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
pulled = sorted(installed & {"agentlightning", "torch", "vllm", "verl"})
assert not pulled, f"[{sys.argv[1]}] pulls {pulled}"
PY
  else
    "$py" -c "import agentgym_runtime.trainers.lightning.replay, agentgym_runtime.trainers.apo"
  fi
  # Run from an empty directory, so the installed wheel is imported, not the source tree.
  (cd "$WORK" && "$py" "$ROOT/examples/$(quickstart "$extra")" > "$WORK/$extra.out")
  grep -q "reliability" "$WORK/$extra.out" || { cat "$WORK/$extra.out"; echo "[$extra] quickstart printed no reliability"; exit 1; }
  versions=$("$py" -c "
import importlib.metadata as md
names = {'langchain': ['langchain', 'langchain-core', 'langgraph'], 'autogen': ['autogen-agentchat', 'autogen-ext'],
         'crewai': ['crewai'], 'train': ['agentlightning', 'torch', 'transformers', 'peft']}['$extra']
print(', '.join(f'{n} {md.version(n)}' for n in names))")
  echo "[$extra] ok in $(( $(date +%s) - start )) s: $versions"
done
