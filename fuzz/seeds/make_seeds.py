#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/ (frames
and headers as real clients send them, from the wire doc and the tests). Run once; the runs
then add what they discover, and `make fuzz` minimizes the corpora."""
import hashlib
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
SEP = b"\xff"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def event(seq, args=None, **extra):
    e = {"name": "todoCreated-v1", "args": args if args is not None else {"id": f"t{seq}", "text": f"hello {seq}"},
         "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "client-A", "sessionId": "session-1"}
    e.update(extra)
    return e


def frames():
    c = json.dumps
    yield '{"_tag":"Request","id":"0","tag":"SyncWsRpc.Pull","traceId":"3a5b","payload":{"storeId":"s1","payload":{"authToken":"x"},"live":false,"cursor":{"_tag":"None"}},"spanId":"afec","sampled":true,"headers":[]}'
    yield '{"_tag":"Request","id":"5","tag":"SyncWsRpc.Pull","payload":{"storeId":"s1","live":true,"cursor":{"_tag":"Some","value":{"backendId":"V4bq","eventSequenceNumber":1}}},"headers":[]}'
    yield c({"_tag": "Request", "id": "2", "tag": "SyncWsRpc.Push", "payload": {"storeId": "s1", "payload": {"authToken": "x"},
            "batch": [event(1), event(2)], "backendId": {"_tag": "Some", "value": "V4bq"}}, "headers": []}, separators=(",", ":"))
    yield c({"_tag": "Request", "id": 3, "tag": "SyncHttpRpc.Push", "payload": {"storeId": "s", "batch": [event(1, args=[1, [2, {"a": None}]])],
            "backendId": {"_tag": "None"}}, "headers": []})
    yield '{"_tag":"Request","id":"0","tag":"SyncHttpRpc.Ping","payload":{"storeId":"S"},"headers":[]}'
    yield '{"_tag":"Request","id":"2","tag":"SyncHttpRpc.Pull","payload":{"storeId":"S","cursor":{"_tag":"None"}},"headers":[]}'
    yield '{"_tag":"Request","id":"3","tag":"SyncDoRpc.Pull","payload":{"cursor":{"_tag":"None"},"rpcContext":{"callerContext":{"bindingName":"CLIENT_DO","durableObjectId":"abc"}},"storeId":"s1"},"headers":[]}'
    yield '[{"_tag":"Request","id":"4","tag":"SyncDoRpc.Ping","payload":{"storeId":"s1"},"headers":[]}]'
    yield '[{"_tag":"Request","id":"4","tag":"SyncDoRpc.Push","payload":{"storeId":"s1","batch":[],"backendId":{"_tag":"None"}}},{"_tag":"Ack","requestId":"4"}]'
    yield '{"_tag":"Request","id":0,"tag":"SyncWsRpc.Pull","payload":{"storeId":"s1","live":true,"cursor":{"_tag":"None"}},"headers":[],"traceId":"t","spanId":"s","sampled":true}'
    yield '{"_tag":"Ack","requestId":"0"}'
    yield '{"_tag":"Interrupt","requestId":1,"interruptors":[]}'
    yield '{"_tag":"Ping"}'
    yield '{"_tag":"Eof"}'
    yield '{"_tag":"Request","id":"1","tag":"SyncWsRpc.Bogus","payload":{}}'
    yield '{"_tag":"Request","id":"1","tag":"SyncWsRpc.Push","payload":{"storeId":"s","batch":[{"name":"e","seqNum":9007199254740992,"parentSeqNum":0,"clientId":"c","sessionId":"s"}],"backendId":{"_tag":"None"}}}'
    yield '{"_tag":"Request","id":"1","tag":"SyncWsRpc.Push","payload":{"storeId":"s","batch":[{"name":"e","args":' + "[" * 130 + "]" * 130 + ',"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}],"backendId":{"_tag":"None"}}}'
    yield "this is {not json"


def queries():
    yield b"\x00storeId=store-ws-1795339968239&payload=%257B%2522authToken%2522%253A%2522secret%2520%2526%2520%25C3%25BC%252F%253F%253D%2522%257D&transport=ws"
    yield b"\x05storeId=my+store&transport=http"
    yield b"\x04storeId=a&transport=sse"
    yield b"\x00"
    yield b"\x04storeId=%F0%9F%98%80-x&transport=ws&payload=%257B%257D"
    yield b"\x01storeId=a&storeId=b&transport=ws&transport=http"


def main():
    for f in frames():
        write("wire_frame", f)
    for q in queries():
        write("sync_query", q)
    for a, b in [("a-b", "a_b"), ("ABC", "abc"), ("store-ws-1795339968239", "x"), ("é😀x", "___x"), ("x\"; DROP TABLE t; --", "'")]:
        write("store_id", a.encode() + SEP + b.encode())
    for o in ["-1", "now", "0000000000000000_0000000000000042", "0_7", "0_99999999999999999999", "1_0", "0_9007199254740991"]:
        write("offset", o.encode() + SEP + b"0000000000000000_0000000000000010")
    for flags, i, e, s in [(7, "p", "1", "2"), (15, "producer-1", "0", "0"), (3, "p", "9007199254740991", "x")]:
        write("producer", bytes([flags]) + i.encode() + SEP + e.encode() + SEP + s.encode() + SEP + b"\x01\0\0\0\0\0\0\0\x02")
    for flags, a, b in [(1, "3600", ""), (2, "", "2024-10-09T02:00:00.5+02:00"), (3, "1", "2000-02-29T12:00:00Z"),
                        (0, "application/json; charset=utf-8", "line one\r\nline two\rthree\n"), (0, "37456", "37455"),
                        (0, "18446744073709551615", "")]:
        write("stream_headers", bytes([flags]) + a.encode() + SEP + b.encode())
    for flag, body in [(0, b'{"a":1}'), (0, b'[1, "two", {"x":[3]}]'), (1, b"[]"), (0, b"[[1,2],[3,4]]"), (0, b" 42 "), (0, b"{nope")]:
        write("stream_json", bytes([flag]) + body)
    fe = b"\xfe"
    hdr = lambda i, v: fe + bytes([i]) + v
    body = lambda v: fe + b"\x00" + v
    sessions = [
        [b"\x00" + hdr(1, b"application/json"), b"\x01" + hdr(1, b"application/json") + body(b'[{"a":1},{"b":2}]'),
         b"\x02offset=-1", b"\x02offset=0000000000000000_0000000000000001&live=long-poll", b"\x02offset=now&live=sse"],
        [b"\x08" + hdr(1, b"text/plain") + hdr(2, b"60"), b"\x09" + hdr(1, b"text/plain") + hdr(6, b"p") + hdr(7, b"0") + hdr(8, b"0") + body(b"hello"),
         b"\x09" + hdr(1, b"text/plain") + hdr(6, b"p") + hdr(7, b"0") + hdr(8, b"0") + body(b"hello"),
         b"\x00" + hdr(1, b"text/plain") + hdr(9, b"/v1/stream/b") + hdr(10, b"0000000000000000_0000000000000001"),
         b"\x02offset=-1", b"\x0c", b"\xf2offset=-1"],
        [b"\x00" + hdr(3, b"2024-10-09T00:00:10Z"), b"\x01" + hdr(4, b"true"), b"\x01" + hdr(5, b"1") + hdr(1, b"application/octet-stream") + body(b"\x00\x01")],
    ]
    for s in sessions:
        write("stream_engine", SEP.join(s))


if __name__ == "__main__":
    sys.exit(main())
