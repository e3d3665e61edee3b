#!/usr/bin/env bash
# A/B of two lucebox builds on one GPU, in one run, on the same synthetic
# Qwen3.5-0.8B BF16 checkpoint: `lucebox bench` alternating base and new
# (ROUNDS rounds, so clock or thermal drift hits both), then each build's
# per-phase decode profile and/or per-kernel prefill profile (PROFILES, default
# "decode prefill"; "" for none). Prints the bench and profile summaries last.
# CHECKS=prefill (or decode, or prefill,decode) also runs the new build's checks after the first
# round: `check --only prefill` (and/or `--only decode`) on both HF fixtures and on the 0.8B
# checkpoint (prefill up to T = CHECK_MAX, default 520), and compute-sanitizer memcheck and
# racecheck of a 70-token fixture request (where installed). CHECK_BUILDS names the builds
# checked (base, new or variants; default new and every variant).
# VARIANTS="NAME=JSON ..." adds schedule variants of the new build (LUCEBOX_SCHEDULE_PATCH=JSON; JSON
# without spaces): each is benched after base and new in every round, checked like new, profiled.
# BUDGET (seconds, default 570) bounds the whole run: each stage's limit is cut to what is left,
# and a stage with less than 20 s left is skipped and named at the end (the run then fails), so
# a short device window still returns the first rounds.
# usage: scripts/bench/decode-ab.sh BASE_BIN NEW_BIN [ROUNDS]   (logs under $OUT or ./decode-ab-logs)
set -uo pipefail
BASE=$(realpath "$1")
NEW=$(realpath "$2")
ROUNDS=${3:-2}
BIN=$NEW
root=$(cd "$(dirname "$0")/../.." && pwd)
LOG="${OUT:-$PWD/decode-ab-logs}"
# shellcheck source=scripts/lib/gpu-stages.sh
source "$root/scripts/lib/gpu-stages.sh"
BUDGET=${BUDGET:-570}
skipped=()
timed() { # timed NAME SECONDS CMD...: `stage` with its limit cut to the budget left, or skipped
  local name=$1 secs=$2 left=$((BUDGET - SECONDS)); shift 2
  if ((left < 20)); then skipped+=("$name"); echo "=== $name: skipped (budget)"; return; fi
  stage "$name" $((secs < left ? secs : left)) "$@"
}
declare -A patch=()
variants=()
for v in ${VARIANTS:-}; do
  name=${v%%=*}
  [[ $v == *=* && $name =~ ^[a-z0-9_-]+$ && $name != base && $name != new ]] || { echo "decode-ab: bad VARIANTS entry '$v' (NAME=JSON, NAME in [a-z0-9_-], not base or new)" >&2; exit 2; }
  patch[$name]=${v#*=}
  variants+=("$name")
done
use() { # use BUILD: ENVP (env prefix, empty unless a variant) and BINP (binary) for base, new or a variant
  ENVP=(); BINP=$NEW
  case $1 in
    base) BINP=$BASE ;;
    new) ;;
    *) ENVP=(env "LUCEBOX_SCHEDULE_PATCH=${patch[$1]}") ;;
  esac
}
only=()
checks_list=${CHECKS:-}
for c in ${checks_list//,/ }; do
  [[ $c == prefill || $c == decode ]] || { echo "decode-ab: unknown CHECKS entry '$c' (prefill, decode)" >&2; exit 2; }
  only+=(--only "$c")
done
# shellcheck disable=SC2206  # CHECK_BUILDS is a space-separated list: split it
check_builds=(${CHECK_BUILDS:-new "${variants[@]}"})
for b in "${check_builds[@]}"; do
  [[ $b == base || $b == new || -v "patch[$b]" ]] || { echo "decode-ab: CHECK_BUILDS names '$b', not base, new or a variant" >&2; exit 2; }
done
checks() {
  ((${#only[@]})) || return 0
  local b sfx ids tool ENVP BINP
  ids=$(python3 -c "print(','.join(str(i * 37 % 250 + 3) for i in range(70)))")
  for b in "${check_builds[@]}"; do
    sfx=; [[ $b == new ]] || sfx=-$b
    use "$b"
    timed "check-fixtures$sfx" 150 "${ENVP[@]}" "$BINP" check "${only[@]}" --model "$FIX/tiny-composite-tied" --model "$FIX/tiny-text-untied" --prefill-max 200
    timed "check-0.8b$sfx" 300 "${ENVP[@]}" "$BINP" check "${only[@]}" --model "$CKPT" --prefill-max "${CHECK_MAX:-520}" --greedy-steps 32 --logit-positions 16
    command -v compute-sanitizer >/dev/null || continue
    for tool in memcheck racecheck; do
      timed "check-$tool$sfx" 120 "${ENVP[@]}" compute-sanitizer --tool "$tool" --error-exitcode 9 "$BINP" run --model "$FIX/tiny-text-untied" --ids "$ids" --max-tokens 4 --backend gpu --output json
    done
  done
}
synth_0_8b
for r in $(seq 1 "$ROUNDS"); do
  for b in base new "${variants[@]}"; do
    use "$b"
    timed "bench-$b-$r" 200 "${ENVP[@]}" "$BINP" bench --model "$CKPT" --pp 520 --tg 128 --reps 5 --energy-seconds 0
  done
  ((r == 1)) && checks
done
for p in ${PROFILES-decode prefill}; do
  [[ $p == decode || $p == prefill ]] || { echo "decode-ab: unknown profile '$p' (decode, prefill)" >&2; status=1; continue; }
  for b in base new "${variants[@]}"; do
    use "$b"
    case $p in
      decode) timed "profile-$b" 200 "${ENVP[@]}" "$BINP" profile --model "$CKPT" --pp 376 --steps 128 --skip 8 ;;
      prefill) timed "prefill-profile-$b" 100 "${ENVP[@]}" "$BINP" profile --prefill --model "$CKPT" --pp 520 --reps 5 ;;
    esac
  done
done
echo
for f in "$LOG"/bench-*.log; do
  echo "== $(basename "$f" .log)"
  grep -E "^(pp|tg)[0-9]|roofline" "$f" | sed 's/^/  /'
done
for f in "$LOG"/profile-*.log; do
  [[ -e $f ]] || continue
  echo "== $(basename "$f" .log)"
  grep -E "^(GDN|ATT|MLP|LM_|token|phase )|tok/s" "$f" | cut -c1-100 | sed 's/^/  /'
done
for f in "$LOG"/prefill-profile-*.log; do
  [[ -e $f ]] || continue
  echo "== $(basename "$f" .log)"
  grep -E "median|^gemm|^gdn|sum" "$f" | sed 's/^/  /'
done
for f in "$LOG"/check-*.log; do
  [[ -e $f ]] || continue
  echo "== $(basename "$f" .log)"
  grep -E "^(PASS|FAIL)|passed,|SUMMARY" "$f" | cut -c1-160 | sed 's/^/  /'
done
if ((${#skipped[@]})); then echo "skipped for the budget (BUDGET=$BUDGET s): ${skipped[*]}"; status=1; fi
exit $status
