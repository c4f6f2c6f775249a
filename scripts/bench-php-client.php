<?php
// One side of scripts/bench-php-client.sh: N pushes from php-cli, each by a new
// Pushwire\Client object, as N PHP-FPM requests of one worker would make them.
//   fresh:      persistent => false, so a connect and a close per push (what FPM code
//               without persistence pays: the seed snippet does exactly this)
//   persistent: the default, one socket kept by the process across Client objects
// Usage: php scripts/bench-php-client.php fresh|persistent tcp://HOST:PORT N [UID]
// Prints: MODE N pushes ok=K fail=F client_wall_s=S
require __DIR__ . '/../clients/php/Pushwire.php';

[, $mode, $addr, $n] = $argv;
$uid = $argv[4] ?? 'bench-offline';
if ($mode !== 'fresh' && $mode !== 'persistent') {
    fwrite(STDERR, "mode must be fresh or persistent\n");
    exit(2);
}
$options = ['persistent' => $mode === 'persistent'];
$ok = $fail = 0;
$t0 = microtime(true);
for ($i = 0; $i < (int) $n; $i++) {
    $client = new Pushwire\Client($addr, $options);
    $client->push(['uid' => $uid, 'n' => $i]) ? $ok++ : $fail++;
    $client = null; // the end of a "request"
}
printf("%s %d pushes ok=%d fail=%d client_wall_s=%.3f\n", $mode, $n, $ok, $fail, microtime(true) - $t0);
