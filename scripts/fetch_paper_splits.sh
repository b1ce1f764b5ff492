#!/usr/bin/env bash
# Fetch the paper's published CPSC2018 (icbeb_*.csv) and CSN (chapman_*.csv) split files from the
# original HeartLang repository at a fixed commit, check their SHA-256 and put them in
# datasets/paper_splits/ (not in git), where `--split_files paper` finds them (docs/preprocessing.md).
#
#   bash scripts/fetch_paper_splits.sh [DEST]        # DEST defaults to <repo>/datasets/paper_splits
#
# Needs git and network access to GitHub. The files are located by name in the commit's tree, so the
# script does not depend on where the repository keeps them; a file is accepted only if its SHA-256 is
# the published one. Overrides (for mirrors): HEARTLANG_REPO_URL, HEARTLANG_SPLITS_COMMIT.
# The same sums are in datasets/preprocess/splits.py (PAPER_SPLITS_SHA256; a test keeps them equal).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_URL="${HEARTLANG_REPO_URL:-https://github.com/PKUDigitalHealth/HeartLang.git}"
COMMIT="${HEARTLANG_SPLITS_COMMIT:-a08afd8117e813fee212a1ac283db4a7140a4669}"
DEST="${1:-$ROOT/datasets/paper_splits}"

declare -A SHA256=(
    [icbeb_train.csv]=013fa62513598e7a141d5ea810f73b6b75cdddbab25e11bcbbcdf84a18f000de
    [icbeb_val.csv]=17fc4f6f95aa818e147ff3b6d5c314c9ae4301989469a0488aaa19638d3e44c8
    [icbeb_test.csv]=ef85abba57aedba8bf857cf843457b5732f68adfd27b0f45af408870d4210a7f
    [chapman_train.csv]=8cb268dd4a1e87ea527c4ad57f23baafc4ba72c08edf0ffe2d13cbf6aa299572
    [chapman_val.csv]=2f611e3447008d36eaa10a33675127d57c90a156894577167a7932057a7ef8a8
    [chapman_test.csv]=a51df50676226bd7697845fc15036356a56af9379c3efaa917f1dbff274d1236
)
NAMES=(icbeb_train.csv icbeb_val.csv icbeb_test.csv chapman_train.csv chapman_val.csv chapman_test.csv)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
git -C "$WORK" init -q repo
echo "[fetch_paper_splits] fetching $REPO_URL at $COMMIT"
if ! git -C "$WORK/repo" fetch -q --depth 1 "$REPO_URL" "$COMMIT"; then
    echo "error: could not fetch commit $COMMIT from $REPO_URL (network, or a mirror without it)" >&2
    exit 1
fi
TREE="$(git -C "$WORK/repo" ls-tree -r --name-only FETCH_HEAD)"
mkdir -p "$WORK/out"
PROV=""
for name in "${NAMES[@]}"; do
    found=""
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        git -C "$WORK/repo" show "FETCH_HEAD:$path" >"$WORK/candidate"
        if [ "$(sha256sum "$WORK/candidate" | cut -d' ' -f1)" = "${SHA256[$name]}" ]; then
            mv "$WORK/candidate" "$WORK/out/$name"
            found="$path"
            break
        fi
        echo "[fetch_paper_splits] $path: SHA-256 differs from the published $name, not used" >&2
    done <<<"$(grep -E "(^|/)${name//./\\.}\$" <<<"$TREE" || true)"
    if [ -z "$found" ]; then
        echo "error: no file $name with SHA-256 ${SHA256[$name]} in $REPO_URL at $COMMIT; nothing written" >&2
        exit 1
    fi
    PROV+="$name  ${SHA256[$name]}  $found"$'\n'
done

mkdir -p "$DEST"
for name in "${NAMES[@]}"; do
    cp "$WORK/out/$name" "$DEST/$name.tmp"
    mv "$DEST/$name.tmp" "$DEST/$name"
done
{
    echo "The paper's CPSC2018 / CSN split files, fetched by scripts/fetch_paper_splits.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "from $REPO_URL at commit $COMMIT (the original HeartLang repository; it took them from the MERL benchmark)."
    echo "file  sha256  path in that commit"
    printf '%s' "$PROV"
} >"$DEST/PROVENANCE.txt"
echo "[fetch_paper_splits] wrote ${#NAMES[@]} files to $DEST (use --split_files paper)"
