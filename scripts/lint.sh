#!/usr/bin/env bash
# Lint: clang-format over src apps tests bench (dry run: any difference is an error), and
# clang-tidy (.clang-tidy) on the C++ files changed against a base (sources, and src/ headers on
# their own; findings in changed headers count everywhere), with the compile commands
# of build/compile_commands.json (configure first: scripts/build.sh).
#
#   scripts/lint.sh [--format-only | --tidy-only] [BASE]
#
# BASE (or $LINT_BASE): a commit to diff against; default the merge base of HEAD and HEAD~1
# (the files of the last commit).  Files changed in the work tree count as changed too.
# Exit status: 0 clean, 1 findings, 2 usage or missing tools.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
base="${LINT_BASE:-}"
for arg in "$@"; do
  case "$arg" in
    --format-only) mode=format ;;
    --tidy-only) mode=tidy ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "lint.sh: unknown option $arg" >&2; exit 2 ;;
    *) base="$arg" ;;
  esac
done

find_tool() {
  for t in "$@"; do
    if command -v "$t" >/dev/null 2>&1; then echo "$t"; return 0; fi
  done
  return 1
}

status=0

if [[ $mode != tidy ]]; then
  fmt=$(find_tool clang-format-14 clang-format) || { echo "lint.sh: clang-format not found (scripts/deps.sh installs clang-format-14)" >&2; exit 2; }
  mapfile -d '' files < <(git ls-files -z -- 'src/*.cpp' 'src/*.hpp' 'src/*.h' 'apps/*.cpp' 'apps/*.hpp' \
                          'tests/*.cpp' 'tests/*.hpp' 'tests/*.h' 'bench/*.cpp' 'bench/*.hpp')
  echo "clang-format: ${#files[@]} files"
  if ((${#files[@]})) && ! printf '%s\0' "${files[@]}" | xargs -0 -n 50 "$fmt" --dry-run --Werror; then
    echo "clang-format: files differ from .clang-format (fix: $fmt -i FILE)" >&2
    status=1
  fi
fi

if [[ $mode != format ]]; then
  tidy=$(find_tool clang-tidy-14 clang-tidy) || { echo "lint.sh: clang-tidy not found (scripts/deps.sh installs clang-tidy-14)" >&2; exit 2; }
  db=build/compile_commands.json
  [[ -f $db ]] || { echo "lint.sh: $db is missing: configure first (scripts/build.sh)" >&2; exit 2; }
  if [[ -z $base ]]; then
    base=$(git merge-base HEAD HEAD~1 2>/dev/null) || { echo "lint.sh: no HEAD~1: give a BASE" >&2; exit 2; }
  fi
  git rev-parse --verify --quiet "$base^{commit}" >/dev/null || { echo "lint.sh: unknown base $base" >&2; exit 2; }
  mapfile -t changed < <( { git diff --name-only --diff-filter=ACMR "$base" -- src apps tests bench;
                            git ls-files --others --exclude-standard -- src apps tests bench; } |
                          grep -E '\.(cpp|cc|hpp|h)$' | sort -u)
  # Sources, and the headers of src/ (self-contained module headers) on their own; every changed
  # header is also checked where a linted source includes it (--header-filter below).
  existing=()
  headers=()
  for f in "${changed[@]}"; do
    [[ -f $f ]] || continue
    if [[ $f =~ \.(hpp|h)$ ]]; then
      headers+=("$f")
      [[ $f == src/* ]] && existing+=("$f")
    else
      existing+=("$f")
    fi
  done
  echo "clang-tidy: ${#existing[@]} changed C++ files against $(git rev-parse --short "$base")"
  if ((${#existing[@]})); then
    jobs=$(nproc 2>/dev/null || echo 2)
    ((jobs > 2)) && jobs=2
    # Findings in headers count only for the headers that changed too.
    hdr_re='^$'
    for f in "${headers[@]}"; do
      hdr_re+="|^$(pwd)/${f//./\\.}\$"
    done
    if ! printf '%s\0' "${existing[@]}" |
         xargs -0 -n 1 -P "$jobs" "$tidy" -p build --quiet --header-filter="$hdr_re"; then
      echo "clang-tidy: findings above" >&2
      status=1
    fi
  fi
fi

exit $status
