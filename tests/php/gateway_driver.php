<?php
// Drives tests/php/Gateway.php (a GatewayClient written from the protocol) for the Rust
// tests: one JSON request per stdin line, one JSON answer per stdout line, all in one PHP
// process (so the static address cache and persistent sockets live on between calls, as
// between the requests of one PHP-FPM worker).
//
//   {"op":"set","name":"secretKey","value":"s3"}     Gateway::$secretKey = "s3"
//   {"op":"call","method":"bindUid","args":[...]}    {"value":…, "serialized":base64 of
//        serialize($value), "output":what it echoed} or {"exception":class, "message":…};
//        "value" is JSON, so a float JSON cannot hold (INF, NAN) is 0 there: read "serialized"
require __DIR__ . '/Gateway.php';

use PushwireTest\Gateway;

function answer(array $a): void
{
    fwrite(STDOUT, json_encode($a, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR) . "\n");
}

while (($in = fgets(STDIN)) !== false) {
    $req = json_decode($in, true);
    ob_start();
    try {
        switch ($req['op']) {
            case 'set':
                Gateway::${$req['name']} = $req['value'];
                answer(['value' => true, 'output' => ob_get_clean()]);
                break;
            case 'call':
                $value = Gateway::{$req['method']}(...($req['args'] ?? []));
                $output = ob_get_clean();
                answer(['value' => $value, 'serialized' => base64_encode(serialize($value)), 'output' => $output]);
                break;
            default:
                ob_end_clean();
                answer(['exception' => 'driver', 'message' => "unknown op {$req['op']}"]);
        }
    } catch (Throwable $e) {
        ob_end_clean();
        answer(['exception' => get_class($e), 'message' => $e->getMessage()]);
    }
}
