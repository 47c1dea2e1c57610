#!/usr/bin/env bash
# Lint: clang-format over src apps tests bench (dry run: any difference is an error), and
# clang-tidy (.clang-tidy) on the C++ files changed against a base (sources, and src/ headers on
# their own) on the lines changed since that base (new files whole), with the compile commands
# of build/compile_commands.json (configure first: scripts/build.sh).
#
#   scripts/lint.sh [--format-only | --tidy-only] [BASE] [-- PATH...]
#
# BASE: a commit to diff against; else $LINT_BASE; else the commit in .ci/lint-base (the last
# landing on main, updated at each landing, so CI tidies every C++ file changed since then);
# else HEAD~1.  Files changed in the work tree count as changed too.  PATHs (after --) limit
# clang-tidy to the changed files under them.  clang-tidy runs on $(nproc) files at a time
# ($LINT_JOBS overrides) and prints how long it took.
# Exit status: 0 clean, 1 findings, 2 usage or missing tools.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
base="${LINT_BASE:-}"
paths=(src apps tests bench)
while (($#)); do
  case "$1" in
    --format-only) mode=format ;;
    --tidy-only) mode=tidy ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; (($#)) && paths=("$@"); break ;;
    -*) echo "lint.sh: unknown option $1" >&2; exit 2 ;;
    *) base="$1" ;;
  esac
  shift
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
  if [[ -z $base && -f .ci/lint-base ]]; then
    base=$(tr -d '[:space:]' < .ci/lint-base)
    if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
      echo "lint.sh: .ci/lint-base names $base, not in this clone's history: checking HEAD~1 only" >&2
      base=
    fi
  fi
  if [[ -z $base ]]; then
    base=$(git merge-base HEAD HEAD~1 2>/dev/null) || { echo "lint.sh: no HEAD~1: give a BASE" >&2; exit 2; }
  fi
  git rev-parse --verify --quiet "$base^{commit}" >/dev/null || { echo "lint.sh: unknown base $base" >&2; exit 2; }
  mapfile -t changed < <( { git diff --name-only --diff-filter=ACMR "$base" -- "${paths[@]}";
                            git ls-files --others --exclude-standard -- "${paths[@]}"; } |
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
    jobs=${LINT_JOBS:-$(nproc 2>/dev/null || echo 2)}
    # Findings in headers count only for the headers that changed too.
    hdr_re='^$'
    for f in "${headers[@]}"; do
      hdr_re+="|^$(pwd)/${f//./\\.}\$"
    done
    # Findings count on the lines the change added or modified (clang-tidy's -line-filter, as
    # clang-tidy-diff does): code a change only moves past is not held to checks added after it
    # was written; a new file counts whole.
    line_filter=$(git diff -U0 --diff-filter=ACMR "$base" -- "${changed[@]}" | python3 -c '
import json, os, re, sys
ranges, name = {}, None
for line in sys.stdin:
    if line.startswith("+++ "):
        name = line[4:].strip()
        name = os.path.join(os.getcwd(), name[2:]) if name.startswith("b/") else None
    elif line.startswith("@@") and name:
        m = re.match(r"@@ -\S+ \+(\d+)(?:,(\d+))? @@", line)
        start, count = int(m.group(1)), int(m.group(2) or "1")
        if count:
            ranges.setdefault(name, []).append([start, start + count - 1])
for f in sys.argv[1:]:
    ranges.setdefault(os.path.join(os.getcwd(), f), [[1, 10**7]])
print(json.dumps([{"name": k, "lines": v} for k, v in ranges.items()]))
' $(git ls-files --others --exclude-standard -- "${paths[@]}" | grep -E '\.(cpp|cc|hpp|h)$'))
    started=$SECONDS
    tidy_rc=0
    printf '%s\0' "${existing[@]}" |
      xargs -0 -n 1 -P "$jobs" "$tidy" -p build --quiet --header-filter="$hdr_re" --line-filter="$line_filter" ||
      tidy_rc=$?
    echo "clang-tidy: ${#existing[@]} files in $((SECONDS - started)) s ($jobs in parallel)"
    if ((tidy_rc)); then
      echo "clang-tidy: findings above" >&2
      status=1
    fi
  fi
fi

exit $status
