#!/usr/bin/env bash
# Filter and one extract job at 1M and 10M records with CPU time split from wall time, and a
# plain cp of each pool as the I/O floor (bench/RESULTS.md, issue 20 completed). Run in a
# folder holding keep-10M.jsonl (a 10M JSON Lines pool of bench/pool_scale.py), its validate
# report keep-report-10M.json, and pool_scale's images/ and tiny-llava/ under pools/.
set -euo pipefail
PY=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
cd "${1:-.}"
head -n 1000000 keep-10M.jsonl > keep-1M.jsonl
$PY -m scalselect validate --dataset keep-1M.jsonl --image-root pools/images --no-decode-images \
    --out keep-report-1M.json --no-progress --workers 2
t() { /usr/bin/time -f "$1 wall %e s user %U s sys %S s maxrss %M kB" "${@:2}"; }
for n in 1M 10M; do
  sync; t "copy-$n" cp keep-$n.jsonl copy-$n.jsonl; rm copy-$n.jsonl; sync
  t "filter-$n" $PY -m scalselect filter --dataset keep-$n.jsonl --report keep-report-$n.json \
      --out f-$n.jsonl --index f-$n.jsonl.index.npz
done
for n in 1M 10M; do
  count=$([ $n = 1M ] && echo 1000000 || echo 10000000)
  for how in index scan; do
    rm -rf store shard
    extra=$([ $how = index ] && echo "--index f-$n.jsonl.index.npz" || true)
    t "extract-$how-$n" $PY -m scalselect extract --model pools/tiny-llava --model-type llava \
        --dataset f-$n.jsonl --image-root pools/images --shard 0 --num-shards $((count / 2000)) \
        --num-workers 0 $extra --out shard --cache-dir store
  done
done
