#!/usr/bin/env bash
# The documents benchmark, run by `scripts/bench documents` with the local
# servers up and their environment sourced: a document of BENCH_DOC_MIB MiB
# (default 50) is uploaded (a staged upload, which then opens a case file
# through the create-file saga) and downloaded back through the gateway, next to a plain `cp` of the same file on this disk, while the peak
# memory (VmHWM) of the docs process is read. Release builds of auth, files,
# docs, bpm and the gateway run as processes on loopback ports of their own.
# Writes bench/results/documents.json.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${BENCH_DOC_MIB:-50}
ROUNDS=${BENCH_ROUNDS:-3}
WORK=$(mktemp -d /tmp/tramita-bench-docs.XXXXXX)
BIN="${BENCH_BIN_DIR:?set by scripts/bench: the release binaries (build_release in scripts/lib.sh)}"
pids=()
cleanup() {
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Ports of their own, so a running scripts/run is not disturbed.
export GATEWAY_PORT=18080 FILES_PORT=18081 AUTH_PORT=18083 DOCS_PORT=18084 BPM_PORT=18085
export GATEWAY_INTERNAL_PORT=19080
export AUTH_JWKS_URL=http://127.0.0.1:$AUTH_PORT/.well-known/jwks.json
export GATEWAY_UPSTREAMS=auth=http://127.0.0.1:$AUTH_PORT,files=http://127.0.0.1:$FILES_PORT,docs=http://127.0.0.1:$DOCS_PORT,bpm=http://127.0.0.1:$BPM_PORT
export GATEWAY_RATE_PER_SECOND=1000 GATEWAY_RATE_BURST=1000
export KAFKA_TOPIC_PREFIX="bench-docs-$(date +%s)."
export DOCS_MONGODB_URI=$MONGODB_URI DOCS_DATABASE="bench_docs_$(date +%s)"
export DOCS_CONSUMER_GROUP="bench-docs-$(date +%s)" BPM_CONSUMER_GROUP="bench-bpm-$(date +%s)"
# Development only, for this benchmark's throwaway users.
export TRAMITA_ENV=development AUTH_ADMIN_USERNAME=admin AUTH_ADMIN_PASSWORD=admin-dev-only AUTH_DEMO_USERS=true
export AUTH_TRUSTED_PROXIES=127.0.0.1 RUST_LOG=${RUST_LOG:-warn}

start() { # name
  "$BIN/tramita-$1" >>"$WORK/$1.log" 2>&1 &
  pids+=($!)
}
wait_ready() { # name port
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$2/health/ready" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "$1 did not become ready; its log:" >&2
      tail -n 30 "$WORK/$1.log" >&2
      exit 1
    fi
    sleep 0.5
  done
}

start auth
wait_ready auth $AUTH_PORT
start files
start docs
docs_pid=${pids[-1]}
start bpm
start gateway
wait_ready files $FILES_PORT
wait_ready docs $DOCS_PORT
wait_ready bpm $BPM_PORT
wait_ready gateway $GATEWAY_PORT

gw=http://127.0.0.1:$GATEWAY_PORT
token=$(curl -fsS "$gw/api/v1/auth/token" -d grant_type=password -d username=clerk -d password=clerk-dev-only |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
# A PDF-signed file of MIB MiB (docs checks the content's signature).
doc="$WORK/expediente.pdf"
{
  printf '%%PDF-1.7\n'
  head -c $((MIB * 1024 * 1024 - 9)) /dev/urandom
} >"$doc"
sha=$(sha256sum "$doc" | cut -d' ' -f1)

seconds() { python3 -c 'import sys; print(f"{float(sys.argv[1]):.4f}")' "$1"; }
uploads=() downloads=() copies=() synced=()
json() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if k.isdigit() else v[k]
print(v)' "$1"; }
document_id=
for round in $(seq 1 "$ROUNDS"); do
  # Upload: the document streamed as a staged upload (multipart, as a browser sends it).
  up=$(curl -fsS -o "$WORK/up.json" -w '%{time_total}' -X POST "$gw/api/v1/docs/uploads" \
    -H "authorization: Bearer $token" -F "file=@$doc;type=application/pdf")
  uploads+=("$(seconds "$up")")
  [[ $(json sha256 <"$WORK/up.json") == "$sha" ]] || { echo "round $round: docs computed another SHA-256" >&2; exit 1; }
  if [[ -z $document_id ]]; then
    # The first upload opens a case file (the create-file saga attaches it).
    upload_id=$(json id <"$WORK/up.json")
    file_id=$(curl -fsS -X POST "$gw/api/v1/files" -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d "{\"initial_option\":\"Sede electrónica\",\"description\":\"Banco de pruebas de documentos\",\"first_document\":{\"upload_id\":\"$upload_id\"}}" | json id)
    deadline=$((SECONDS + 60))
    until [[ $(curl -fsS "$gw/api/v1/files/$file_id" -H "authorization: Bearer $token" | json status) == active ]]; do
      ((SECONDS < deadline)) || { echo "file $file_id never became active" >&2; exit 1; }
      sleep 0.2
    done
    document_id=$(curl -fsS "$gw/api/v1/docs/files/$file_id/documents" -H "authorization: Bearer $token" | json items.0.id)
  fi
  down=$(curl -fsS -o "$WORK/down.pdf" -w '%{time_total}' "$gw/api/v1/docs/documents/$document_id/content" \
    -H "authorization: Bearer $token")
  downloads+=("$(seconds "$down")")
  got=$(sha256sum "$WORK/down.pdf" | cut -d' ' -f1)
  [[ $got == "$sha" ]] || { echo "round $round: the download differs from the upload" >&2; exit 1; }
  rm -f "$WORK/down.pdf"
  start_ns=$(date +%s%N); cp "$doc" "$WORK/copy.pdf"; end_ns=$(date +%s%N)
  copies+=("$(seconds "$(((end_ns - start_ns)))e-9")")
  rm -f "$WORK/copy.pdf"
  start_ns=$(date +%s%N); cp "$doc" "$WORK/copy.pdf"; sync "$WORK/copy.pdf"; end_ns=$(date +%s%N)
  synced+=("$(seconds "$(((end_ns - start_ns)))e-9")")
  rm -f "$WORK/copy.pdf"
done
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$docs_pid/status")
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$docs_pid/status")

out="$ROOT/bench/results/documents.json"
python3 - "$out" "$MIB" "$hwm_kib" "$rss_kib" "${uploads[*]}" "${downloads[*]}" "${copies[*]}" "${synced[*]}" <<'PY'
import json, statistics, sys
out, mib, hwm, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
series = {name: [float(x) for x in sys.argv[i].split()] for i, name in
          [(5, "upload"), (6, "download"), (7, "cp"), (8, "cp_and_sync")]}
def summary(values):
    median = statistics.median(values)
    return {"seconds": values, "median_seconds": median, "mib_per_second": round(mib / median, 1)}
results = {
    "document_mib": mib,
    "path": "client -> gateway -> docs -> MongoDB-compatible test server (GridFS), all on loopback",
    "store_note": "the test server is written in Python; MongoDB itself is faster",
    **{name: summary(values) for name, values in series.items()},
    "docs_peak_rss_mib": round(hwm / 1024, 1),
    "docs_rss_after_mib": round(rss / 1024, 1),
}
results["upload_over_cp"] = round(results["upload"]["median_seconds"] / results["cp"]["median_seconds"], 1)
results["download_over_cp"] = round(results["download"]["median_seconds"] / results["cp"]["median_seconds"], 1)
with open(out, "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
print(json.dumps(results, indent=2))
PY
echo "written to $out" >&2
