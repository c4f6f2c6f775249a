"""Drives the Python Pusher server SDK (PyPI `pusher`, pinned in requirements.txt) for the
tests: one JSON request on stdin, one JSON answer on stdout. tests/common/pusher.rs runs it
with tests/pusher/.venv's python (scripts/pusher-clients.sh makes it).

Request: {"app": {"id", "key", "secret"}, "host", "port", "op", ...op's fields}
Answer:  {"ok": true, "result": ...} or {"ok": false, "error": "..."}
"""
import json
import sys

import pusher


def run(req):
    app = req["app"]
    client = pusher.Pusher(
        app_id=app["id"],
        key=app["key"],
        secret=app["secret"],
        ssl=False,
        host=req.get("host", "127.0.0.1"),
        port=req.get("port"),
        encryption_master_key_base64=app.get("master_key_base64"),
    )
    op = req["op"]
    if op == "trigger":
        return client.trigger(req["channels"], req["event"], req["data"], req.get("socket_id"))
    if op == "trigger_batch":
        return client.trigger_batch(req["batch"])
    if op == "channels_info":
        return client.channels_info(req.get("prefix_filter"), req.get("attributes", []))
    if op == "channel_info":
        return client.channel_info(req["channel"], req.get("attributes", []))
    if op == "users_info":
        return client.users_info(req["channel"])
    if op == "terminate":
        return client.terminate_user_connections(req["user_id"])
    if op == "send_to_user":
        return client.send_to_user(req["user_id"], req["event"], req["data"])
    if op == "authorize_channel":
        return client.authenticate(req["channel"], req["socket_id"], req.get("data"))
    if op == "authenticate_user":
        return client.authenticate_user(req["socket_id"], req["user_data"])
    if op == "webhook_valid":
        return client.validate_webhook(req["key"], req["signature"], req["body"]) is not None
    raise ValueError("unknown op " + op)


def main():
    try:
        answer = {"ok": True, "result": run(json.load(sys.stdin))}
    except Exception as e:  # the test reads the error
        answer = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(answer, default=lambda b: b.decode() if isinstance(b, bytes) else str(b)) + "\n")


main()
