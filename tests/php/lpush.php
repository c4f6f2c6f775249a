<?php
// Seed 000's push controller, the part that matters: `$redis->lpush(KEY, $content)` with
// php-redis, one element per argument after the first two. With a comma-separated list
// of HOST:PORT seeds instead of a port, php-redis's `RedisCluster` class does the same
// on a Redis Cluster (it follows each key to the master that holds its slot).
//
//   php lpush.php PORT KEY CONTENT...
//   php lpush.php HOST:PORT,HOST:PORT,... KEY CONTENT...
[$_, $port, $key] = $argv;
if (strpos($port, ',') !== false) {
    $redis = new \RedisCluster(null, explode(',', $port));
} else {
    $redis = new \Redis();
    $redis->connect('127.0.0.1', (int)$port);
}
foreach (array_slice($argv, 3) as $content) {
    $redis->lpush($key, $content);
}
echo "done\n";
