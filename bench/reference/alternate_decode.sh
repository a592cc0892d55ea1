#!/usr/bin/env bash
# Two r1 builds (or settings) and llama.cpp taking turns on one GGUF file, ROUNDS times,
# then the median and range of each one's decode and prefill tokens/s, and the medians of
# its load time, peak resident memory and (r1) decode as a fraction of the bandwidth bound:
#   bench/reference/alternate_decode.sh VENV/bin/python FILE.gguf ROUNDS 'CMD' ['CMD' ...]
# Each CMD runs `r1host` (a path, optionally after `env VAR=…`), e.g.
#   alternate_decode.sh VENV/bin/python /tmp/r1bench/qwen2.5-0.5b.f32.gguf 5 \
#       /tmp/r1host.before target/release/r1host
# On a VM whose memory bandwidth moves with other tenants, one run of each side is not a
# comparison; turns put every side through the same phases. Env: THREADS (every core),
# TOKENS (64), PROMPT (128), NOREF=1 to leave llama.cpp out.
set -euo pipefail
py=$1; file=$2; rounds=$3; shift 3
[ $# -ge 1 ] || { echo "give at least one r1host command" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
threads=${THREADS:-$(nproc)}
tokens=${TOKENS:-64}
prompt=${PROMPT:-128}
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for _ in $(seq "$rounds"); do
    i=0
    for cmd in "$@"; do
        i=$((i + 1))
        # shellcheck disable=SC2086 # CMD is words on purpose (`env VAR=… path`).
        $cmd bench decode --model "$file" --tokens "$tokens" --prompt "$prompt" --threads "$threads" --rounds 2 \
            | "$py" -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print('r1#$i', d['r1_decode_tok_s'], d['r1_prefill_tok_s'], d['load_s'], d['peak_rss_mb'], d['of_bound'])" >> "$lines"
    done
    if [ -z "${NOREF:-}" ]; then
        "$py" "$here/llamacpp_decode.py" "$file" "$tokens" "$prompt" "$threads" 2 f32 f32 \
            | "$py" -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print('llama.cpp', d['decode_tok_s'], d['prefill_tok_s'], d['load_s'], d['peak_rss_mb'], 'nan')" >> "$lines"
    fi
done
i=0
for cmd in "$@"; do i=$((i + 1)); echo "r1#$i: $cmd"; done
"$py" - "$lines" <<'PY'
import collections, statistics, sys
runs = collections.OrderedDict()
for line in open(sys.argv[1]):
    who, *values = line.split()
    columns = runs.setdefault(who, [[] for _ in values])
    for column, value in zip(columns, values):
        column.append(float(value))
for who, (dec, pre, load, rss, bound) in runs.items():
    bound = "" if any(b != b for b in bound) else f"   of bound {statistics.median(bound):.2f}"
    print(f"{who:10} decode median {statistics.median(dec):7.1f} [{min(dec):.1f}, {max(dec):.1f}]"
          f"   prefill median {statistics.median(pre):7.1f} [{min(pre):.1f}, {max(pre):.1f}]   ({len(dec)} runs)"
          f"   load {statistics.median(load):.2f} s   peak rss {statistics.median(rss):.0f} MB{bound}")
PY
