// Drives the Node Pusher server SDK (npm `pusher`, pinned in package.json) for the tests:
// one JSON request on stdin, one JSON answer on stdout. tests/common/pusher.rs runs it.
//
// Request: {"app": {"id", "key", "secret"}, "host", "port", "op", ...op's fields}
// Answer:  {"ok": true, "result": ...} or {"ok": false, "error", "status"?, "body"?}
"use strict";
const Pusher = require("pusher");

async function http(promise) {
  const res = await promise;
  return { status: res.status, body: await res.text() };
}

async function run(req) {
  const { app } = req;
  const pusher = new Pusher({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: req.host || "127.0.0.1",
    port: req.port ? String(req.port) : undefined,
    useTLS: false,
    encryptionMasterKeyBase64: app.master_key_base64,
  });
  switch (req.op) {
    case "trigger":
      return http(pusher.trigger(req.channels, req.event, req.data, req.params || {}));
    case "trigger_batch":
      return http(pusher.triggerBatch(req.batch));
    case "get":
      return http(pusher.get({ path: req.path, params: req.params || {} }));
    case "terminate":
      return http(pusher.terminateUserConnections(req.user_id));
    case "send_to_user":
      return http(pusher.sendToUser(req.user_id, req.event, req.data));
    case "authorize_channel":
      return pusher.authorizeChannel(req.socket_id, req.channel, req.data);
    case "authenticate_user":
      return pusher.authenticateUser(req.socket_id, req.user_data);
    case "webhook_valid":
      return pusher.webhook({ headers: req.headers, rawBody: req.body }).isValid();
    default:
      throw new Error("unknown op " + req.op);
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  let answer;
  try {
    answer = { ok: true, result: await run(JSON.parse(input)) };
  } catch (e) {
    answer = { ok: false, error: String((e && e.message) || e), status: e && e.status, body: e && e.body };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
