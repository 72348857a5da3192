#!/bin/bash
# The README's multi-node commands on one machine: a head node and a second node (two raylets,
# one CPU each) joined with `ray start --address`, then generate, ingest and embed over them with
# the CLI, each beside the local engine; prints whether the banks are the same and how many nodes
# the workers ran on. Needs the [ray] extra and ../shared (the tiny test network, generated.photos).
#
#     tools/ray_two_nodes.sh [WORKDIR]
#
# Ray 2.60's `ray start` turned on token authentication here: RAY_AUTH_MODE=token (with the token in
# ~/.ray/auth_token, which every node and client must share) is set for every command below.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${FACEBANK_SHARED:-$ROOT/../shared}
WORK=${1:-$(mktemp -d)}
PORT=${RAY_PORT:-6390}
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
mkdir -p "$WORK/faces" && cd "$WORK"
find "$SHARED/assets/generated_photos" -name "*.jpg" | sort | head -32 | xargs -I{} cp {} faces/
ray stop --force >/dev/null 2>&1 || true
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
ray start --head --port=$PORT --num-cpus=1 --include-dashboard=false --disable-usage-stats >/dev/null
ray start --address=127.0.0.1:$PORT --num-cpus=1 --disable-usage-stats >/dev/null
RAY="--engine ray --ray-address 127.0.0.1:$PORT"
NET="--network $SHARED/fixtures/stylegan2ada/tiny64.pkl --seeds 0-23 --psi 0.7"
facebank generate $NET --bank gen_ray.h5 $RAY --json >/dev/null
facebank generate $NET --bank gen_local.h5 --json >/dev/null
facebank ingest folder faces --bank ing_ray.h5 $RAY --json >/dev/null
facebank embed --bank ing_ray.h5 --space dlib $RAY --json >/dev/null
facebank ingest folder faces --bank ing_local.h5 --json >/dev/null
facebank embed --bank ing_local.h5 --space dlib --json >/dev/null
python - <<'PY'
import json

import numpy as np

from facebank.bank import open_bank


def same(a, b, columns, spaces=()):
    ok = list(a.ids) == list(b.ids) and all(a.image_bytes(r) == b.image_bytes(r) for r in range(len(a)))
    ok &= all(np.array_equal(a.column(c), b.column(c)) for c in columns)
    return ok and all(np.array_equal(a.vectors(s), b.vectors(s)) for s in spaces)


nodes = {}
for name, columns, spaces in (("gen", ("status",), ()), ("ing", ("age", "gender", "status", "box", "landmarks"), ("dlib",))):
    ray_bank, local = open_bank(f"{name}_ray.h5"), open_bank(f"{name}_local.h5")
    for e in ray_bank.log():
        if e.get("event") == "ray_workers" and e["workers"]:
            nodes[e["stage"]] = len({w["node"] for w in e["workers"]})
    print(f"{name}: {len(ray_bank)} faces, same bank as local: {same(ray_bank, local, columns, spaces)}")
print("nodes per stage:", json.dumps(nodes, sort_keys=True))
PY
