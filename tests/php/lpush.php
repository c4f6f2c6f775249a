<?php
// Seed 000's push controller, the part that matters: `$redis->lpush(KEY, $content)` with
// php-redis, one element per argument after the first two.
//
//   php lpush.php PORT KEY CONTENT...
[$_, $port, $key] = $argv;
$redis = new \Redis();
$redis->connect('127.0.0.1', (int)$port);
foreach (array_slice($argv, 3) as $content) {
    $redis->lpush($key, $content);
}
echo "done\n";
