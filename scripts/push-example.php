<?php
// A PHP backend pushing to a browser through pushwire, as in the workerman
// tutorial pushwire replaces: the calls below are the tutorial's, unchanged.
//
// Usage: php scripts/push-example.php [uid] [tcp://127.0.0.1:5678]
// A browser bound as uid (it sent 'uid1' as its first WebSocket message) gets
// {"uid":"uid1","percent":"88%"}; this prints `ok`, or `fail` if none is bound.

$uid = isset($argv[1]) ? $argv[1] : 'uid1';
$addr = isset($argv[2]) ? $argv[2] : 'tcp://127.0.0.1:5678';

// 建立socket连接到内部推送端口 (connect to the internal push port)
$client = stream_socket_client($addr, $errno, $errmsg, 1);
if (!$client) {
    fwrite(STDERR, "cannot connect to $addr: $errmsg ($errno)\n");
    exit(2);
}
// 推送的数据,包含uid字段,表示是给这个uid推送 (the data; uid says which page gets it)
$data = array('uid'=>$uid, 'percent'=>'88%');
// 发送数据,注意5678端口是Text协议的端口,Text协议需要在数据末尾加上换行符
// (send it: the push port speaks the text protocol, one line per message)
fwrite($client, json_encode($data)."\n");
// 读取推送结果 (read the push result)
$r = fread($client, 8192);
echo $r;
exit(trim($r) === 'ok' ? 0 : 1);
