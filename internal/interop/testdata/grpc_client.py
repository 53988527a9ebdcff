# A grpcio client of the users service (examples/users), without generated
# code: python3-grpcio has no protoc, so the messages are encoded by hand
# (protobuf wire format) and the calls made with grpc's generic
# unary_unary. It prints one JSON line per call.
#
# usage: grpc_client.py ADDRESS TRACEPARENT
import json
import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def fields(buf):
    """Decodes the varint and length-delimited fields of a message."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num], i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            out[num] = buf[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wire)
    return out


def identity(b):
    return b


address, traceparent = sys.argv[1], sys.argv[2]
with grpc.insecure_channel(address) as channel:
    grpc.channel_ready_future(channel).result(timeout=60)
    get_user = channel.unary_unary("/users.v1.UserService/GetUser", request_serializer=identity, response_deserializer=identity)
    # UserRequest{id: 7}: field 1, varint.
    resp, call = get_user.with_call(b"\x08" + varint(7), timeout=60, metadata=(("traceparent", traceparent),))
    f = fields(resp)
    served_by = dict(call.initial_metadata()).get("served-by")
    print(json.dumps({"call": "GetUser", "id": f.get(1), "name": f.get(2, b"").decode(), "served_by": served_by}), flush=True)

    try:
        get_user(b"\x08" + varint(0), timeout=60)
        print(json.dumps({"call": "GetUser0", "code": "OK"}), flush=True)
    except grpc.RpcError as e:
        print(json.dumps({"call": "GetUser0", "code": e.code().name, "details": e.details()}), flush=True)

    check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=identity, response_deserializer=identity)
    # HealthCheckRequest{service: ""} is the empty message; the response's
    # field 1 is the ServingStatus enum (1 SERVING, 2 NOT_SERVING).
    f = fields(check(b"", timeout=60))
    print(json.dumps({"call": "Check", "status": f.get(1, 0)}), flush=True)
