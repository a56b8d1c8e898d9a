#!/usr/bin/env bash
# Node-to-node file rate on loopback: two real `discordopus` processes (release build) and a
# signaling server, a file of SIZE_MIB pseudo-random MiB sent with `POST …/files`, timed from
# the moment the sender's transfer leaves `preparing` (the file is hashed, encrypted, announced;
# the call itself answers at once) until the
# receiver's transfer is `done` (every group verified, plaintext hash checked). Prints MiB/s and
# the CPU seconds per GiB of each node over that interval (utime + stime from /proc).
# During the transfer a chat message goes from alice to bob once a second; its latency (alice's
# POST until bob's API lists it, polled every 5 ms) is printed as median / p99 / max.
# DISCORDOPUS_BLOB_IN_FLIGHT_KIB in the environment sets the ceiling of the blob channel's share
# of the SCTP send buffer on both nodes (default 768; the share in use is sized to the path's RTT
# below it, at least 128 KiB or the ceiling if smaller).
#
#   cargo build --release -p dopus-node -p dopus-server && bench/files/nodes.sh [SIZE_MIB]
#
# Needs curl and python3. Everything runs on 127.0.0.1 under a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-256}
BIN=${BIN:-target/release}
WORK=$(mktemp -d /var/tmp/dopus-bench-nodes.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export DISCORDOPUS_INSECURE_FAST_KDF=1 DISCORDOPUS_PASSPHRASE=pw DISCORDOPUS_LOG=warn
unset DISCORDOPUS_SERVER DISCORDOPUS_DATA_DIR

json() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SPORT=$(port)
"$BIN/discordopus-server" --listen "127.0.0.1:$SPORT" --data-dir "$WORK/server" \
  --stun-listen off --log warn >"$WORK/server.log" 2>&1 &
PIDS+=($!); disown "$!"
SERVER="ws://127.0.0.1:$SPORT"

declare -A UID_OF URL TOKEN PID_OF
for n in alice bob; do
  UID_OF[$n]=$("$BIN/discordopus" --data-dir "$WORK/$n" --json id create --name "$n" | json 'v["user_id"]')
done
"$BIN/discordopus" --data-dir "$WORK/alice" contacts add "${UID_OF[bob]}" >/dev/null
"$BIN/discordopus" --data-dir "$WORK/bob" contacts add "${UID_OF[alice]}" >/dev/null
for n in alice bob; do
  "$BIN/discordopus" --data-dir "$WORK/$n" --json run --server "$SERVER" --api 127.0.0.1:0 \
    >"$WORK/$n.log" 2>&1 </dev/null &
  PID_OF[$n]=$!; disown "$!"
  PIDS+=($!)
done
for n in alice bob; do
  for _ in $(seq 600); do
    if [ -f "$WORK/$n/api.json" ]; then break; fi
    sleep 0.05
  done
  URL[$n]=$(json 'v["url"]' <"$WORK/$n/api.json")
  TOKEN[$n]=$(json 'v["token"]' <"$WORK/$n/api.json")
  for _ in $(seq 600); do
    s=$(curl -s -H "Authorization: Bearer ${TOKEN[$n]}" "${URL[$n]}/api/v1/status" || true)
    if echo "$s" | grep -q '"connected"' && echo "$s" | grep -q '"ready"'; then break; fi
    sleep 0.05
  done
done
api() { # node method path [body]
  curl -sf -X "$2" -H "Authorization: Bearer ${TOKEN[$1]}" -H 'Content-Type: application/json' \
    ${4:+-d "$4"} "${URL[$1]}/api/v1$3"
}
cpu() { # ticks of a process
  awk '{print $14 + $15}' "/proc/$1/stat"
}
TICK=$(getconf CLK_TCK)

# A warm-up message opens the direct connection first.
api alice POST "/conversations/${UID_OF[bob]}/messages" '{"body":"warm-up"}' >/dev/null
for _ in $(seq 300); do
  c=$(api alice GET "/contacts/${UID_OF[bob]}/connection")
  if echo "$c" | grep -q '"mode":"direct"'; then break; fi
  sleep 0.1
done

head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/file.bin"
cat "$WORK/file.bin" >/dev/null # in the page cache, as a file just written would be
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); blob share ceiling: ${DISCORDOPUS_BLOB_IN_FLIGHT_KIB:-768} KiB"
T0=$(date +%s.%N)
ID=$(api alice POST "/conversations/${UID_OF[bob]}/files" "{\"path\":\"$WORK/file.bin\"}" | json 'v["id"]')
# The call answers at once (`preparing`); the file is announced once hashed and encrypted.
for _ in $(seq 36000); do
  st=$(api alice GET "/transfers/$ID" 2>/dev/null | json 'v["state"]' 2>/dev/null || echo none)
  if [ "$st" != preparing ] && [ "$st" != none ]; then break; fi
  sleep 0.02
done
T1=$(date +%s.%N)
A0=$(cpu "${PID_OF[alice]}"); B0=$(cpu "${PID_OF[bob]}")
# Chat during the transfer: one message a second until $WORK/stop-chat exists.
python3 - "${URL[alice]}" "${TOKEN[alice]}" "${URL[bob]}" "${TOKEN[bob]}" "${UID_OF[alice]}" \
  "${UID_OF[bob]}" "$WORK/stop-chat" >"$WORK/chat.txt" 2>"$WORK/chat.err" <<'CHAT' &
import http.client, json, os, sys, time, urllib.parse
a_url, a_tok, b_url, b_tok, a_uid, b_uid, stop = sys.argv[1:8]
def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)
ca, cb = conn(a_url), conn(b_url)
lat = []
for i in range(3600):
    if os.path.exists(stop):
        break
    body = f"chat-probe-{i}"
    t0 = time.monotonic()
    ca.request("POST", f"/api/v1/conversations/{b_uid}/messages", json.dumps({"body": body}),
               {"Authorization": f"Bearer {a_tok}", "Content-Type": "application/json"})
    ca.getresponse().read()
    seen = None
    while time.monotonic() - t0 < 30:
        cb.request("GET", f"/api/v1/conversations/{a_uid}/messages?limit=3",
                   headers={"Authorization": f"Bearer {b_tok}"})
        page = json.loads(cb.getresponse().read())
        if any(m.get("body") == body for m in page.get("messages", [])):
            seen = time.monotonic()
            break
        time.sleep(0.005)
    lat.append(None if seen is None else (seen - t0) * 1000)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
print(json.dumps(lat))
CHAT
CHAT_PID=$!
for _ in $(seq 36000); do
  st=$(api bob GET "/transfers/$ID" 2>/dev/null | json 'v["state"]' 2>/dev/null || echo none)
  if [ "$st" = done ] || [ "$st" = failed ]; then break; fi
  sleep 0.05
done
T2=$(date +%s.%N)
A1=$(cpu "${PID_OF[alice]}"); B1=$(cpu "${PID_OF[bob]}")
touch "$WORK/stop-chat"
wait "$CHAT_PID" || true
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$SIZE_MIB" "$T0" "$T1" "$T2" "$A0" "$A1" "$B0" "$B1" "$TICK" "$st" "$WORK/chat.txt" <<'EOF'
import json, sys
size, t0, t1, t2, a0, a1, b0, b1, tick = map(float, sys.argv[1:10])
state = sys.argv[10]
try:
    lat = json.load(open(sys.argv[11]))
except (OSError, ValueError):
    lat = []
got = sorted(x for x in lat if x is not None)
if got:
    p99 = got[min(len(got) - 1, int(0.99 * len(got)))]
    print(f"chat during the transfer: {len(got)} of {len(lat)} arrived, latency median "
          f"{got[len(got) // 2]:.0f} ms, p99 {p99:.0f} ms, max {got[-1]:.0f} ms")
else:
    print(f"chat during the transfer: none of {len(lat)} arrived")
gib = size / 1024
print(f"state: {state}")
print(f"prepare + announce (POST …/files until it leaves `preparing`): {t1 - t0:.2f} s ({size / (t1 - t0):.0f} MiB/s)")
print(f"transfer (announced -> receiver done): {t2 - t1:.2f} s, {size / (t2 - t1):.1f} MiB/s for {size:.0f} MiB")
print(f"CPU per GiB: sender {(a1 - a0) / tick / gib:.2f} s, receiver {(b1 - b0) / tick / gib:.2f} s")
EOF
