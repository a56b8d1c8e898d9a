#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the wire snapshots the crates' tests pin (so seeds follow the
formats as they change) plus a few hand-made binary inputs. Run from anywhere; rerun after a
wire-format change and commit the result."""
import json, os, pathlib, struct, hashlib

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"

def snapshot(path):
    text = (root / path).read_text()
    # insta: a YAML header between '---' lines, then the value.
    body = text.split("---", 2)[2]
    return json.loads(body)

def write(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)

def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)

snap = "crates/dopus-proto/src/snapshots/"
for i, f in enumerate(snapshot(snap + "dopus_proto__signaling__tests__client_frames_snapshot.snap")):
    write("signaling_client_frame", f"{i:02}-{f['type']}.json", compact(f))
write("signaling_client_frame", "bad-json", "{not json")
write("signaling_client_frame", "unknown-type", '{"type":"teleport","id":5}')
for i, f in enumerate(snapshot(snap + "dopus_proto__signaling__tests__server_frames_snapshot.snap")):
    write("signaling_server_frame", f"{i:02}-{f['type']}.json", compact(f))
env = snapshot(snap + "dopus_proto__peer__tests__envelope_wire_format_snapshot.snap")
for i, e in enumerate(env if isinstance(env, list) else [env]):
    write("peer_envelope", f"{i:02}.json", compact(e))
for name in ["payload_wire_format", "every_content_kind"]:
    p = snapshot(snap + f"dopus_proto__peer__tests__{name}_snapshot.snap")
    for i, v in enumerate(p if isinstance(p, list) else [p]):
        write("peer_payload", f"{name}-{i:02}.json", compact(v))
claimed = snapshot(snap + "dopus_proto__bundle__tests__wire_format_snapshot.snap")
write("bundle", "claimed.json", compact(claimed))
write("bundle", "certificate.json", compact(claimed["certificate"]))
published = dict(claimed)
published.pop("one_time_key")
published["one_time_keys"] = [claimed["one_time_key"]]
write("bundle", "published.json", compact(published))

# Data channel messages: a single envelope, hellos, and frames of two envelopes.
envelope = compact(env[0] if isinstance(env, list) else env).encode()
write("channel_frame", "single", envelope)
write("channel_frame", "hello-v2", b"\x02")
write("channel_frame", "hello-v3", b"\x03")
write("channel_frame", "frames", b"\x02" + struct.pack(">I", len(envelope)) + envelope + struct.pack(">I", 3) + b"{ }")
write("channel_frame", "truncated", b"\x02\x00\x00\x01\x00{")

# STUN (RFC 8489): a Binding request with FINGERPRINT, and a success with XOR-MAPPED-ADDRESS.
MAGIC = 0x2112A442
tid = bytes(range(1, 13))
def fingerprint(msg):
    import zlib
    return struct.pack(">HHI", 0x8028, 4, (zlib.crc32(msg) ^ 0x5354554E) & 0xFFFFFFFF)
def message(mtype, attrs):
    body = b"".join(attrs)
    head = struct.pack(">HHI", mtype, len(body) + 8, MAGIC) + tid
    return head + body + fingerprint(head + body)
req = message(0x0001, [])
write("stun", "binding-request", req)
port = 54321 ^ (MAGIC >> 16)
addr = bytes(a ^ b for a, b in zip(bytes([127, 0, 0, 1]), struct.pack(">I", MAGIC)))
xma = struct.pack(">HHBBH", 0x0020, 8, 0, 1, port) + addr
write("stun", "binding-success-v4", message(0x0101, [xma]))
addr6 = bytes(a ^ b for a, b in zip(bytes(15) + b"\x01", struct.pack(">I", MAGIC) + tid))
xma6 = struct.pack(">HHBBH", 0x0020, 20, 0, 2, port) + addr6
write("stun", "binding-success-v6", message(0x0101, [xma6]))

# The store's key file.
kf = (root / "crates/dopus-store/src/snapshots/dopus_store__keyfile__tests__key_file_format_snapshot.snap").read_text()
write("store_key_file", "key-file.json", kf.split("---", 2)[2].strip() + "\n")

# Spaces: every op kind, invite codes (text and binary), a channel message and its payload.
ssnap = "crates/dopus-proto/src/space/snapshots/"
ops = snapshot(ssnap + "dopus_proto__space__tests__every_op_kind_snapshot.snap")
for i, op in enumerate(ops if isinstance(ops, list) else [ops]):
    write("space_op", f"{i:02}.json", compact(op))
def plain(path):
    return (root / path).read_text().split("---", 2)[2].strip().splitlines()
for i, text in enumerate(plain(ssnap + "dopus_proto__space__tests__invite_codes_round_trip_and_snapshot.snap")):
    write("invite_code", f"text-{i}", text)
    write("invite_code", f"link-{i}", f"dopus://invite/{text}")
msg, pay = plain(ssnap + "dopus_proto__space__tests__channel_message_and_payload_snapshot.snap")
write("space_channel_message", "message.json", msg)
write("space_channel_message", "payload.json", pay)

# Blob channel frames: every frame kind, from the hex the transfer snapshot pins.
for i, line in enumerate(plain(snap + "dopus_proto__transfer__tests__frames_snapshot.snap")):
    write("blob_frame", f"{i:02}", bytes.fromhex(line.rsplit("=> ", 1)[1]))

# File transfers inside a peer payload: a file message carrying the manifest, and the transfer
# control contents (so `peer_payload` reaches the manifest's and transfer contents' checks).
base = snapshot(snap + "dopus_proto__peer__tests__payload_wire_format_snapshot.snap")
base = base[0] if isinstance(base, list) else base
manifest = snapshot(snap + "dopus_proto__transfer__tests__manifest_json_snapshot.snap")
contents = [{"kind": "file", "file": manifest}]
contents += snapshot(snap + "dopus_proto__transfer__tests__transfer_content_snapshot.snap")
for i, c in enumerate(contents):
    write("peer_payload", f"transfer-{i:02}.json", compact(dict(base, content=c)))
