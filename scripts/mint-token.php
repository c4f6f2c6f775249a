<?php
// An HS256 JWT for pushwire (sub = uid, exp = now + ttl) with nothing but PHP itself.
// Usage: php scripts/mint-token.php SECRET UID [TTL_SECONDS]
function pushwire_token(string $secret, string $uid, int $ttl = 3600): string
{
    $b64 = function (string $s): string { return rtrim(strtr(base64_encode($s), '+/', '-_'), '='); };
    $head = $b64(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $body = $b64(json_encode(['sub' => $uid, 'exp' => time() + $ttl]));
    return "$head.$body." . $b64(hash_hmac('sha256', "$head.$body", $secret, true));
}
if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    if ($argc < 3) { fwrite(STDERR, "usage: php mint-token.php SECRET UID [TTL_SECONDS]\n"); exit(2); }
    echo pushwire_token($argv[1], $argv[2], isset($argv[3]) ? (int) $argv[3] : 3600), "\n";
}
