<?php
// Drives clients/php/Pushwire.php for tests/php_client.rs: one JSON request per stdin
// line, one JSON answer per stdout line, all in one PHP process (so persistent sockets
// are shared between the Client objects it creates, as between requests of one FPM
// worker).
//
//   {"op":"new","address":"tcp://127.0.0.1:P","options":{...}}  a new Client (the old one
//                                        is dropped first, like the end of a request)
//   {"op":"call","method":"push","args":[...]}   {"value":...} or {"exception":...};
//                                        an arg {"repeat":"ab","times":N} is str_repeat()
//   {"op":"socket"}                      the current socket's local address, or null
//   {"op":"abandon","line":"..."}        a call that dies after writing its line (as when
//                                        a request hits a fatal error mid-call): the
//                                        client's own begin(), a write, no read
//   {"op":"foreign_write","address":"...","line":"..."}  someone else's write on the same
//                                        persistent socket; answers once its reply
//                                        has arrived, and leaves it unread
//   {"op":"token","secret":"...","uid":...,"ttl":N}
require __DIR__ . '/../../clients/php/Pushwire.php';

$client = null;

function private_of(object $o, string $name)
{
    $p = new ReflectionProperty($o, $name);
    $p->setAccessible(true);
    return $p->getValue($o);
}

function answer(array $a): void
{
    fwrite(STDOUT, json_encode($a, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE) . "\n");
}

while (($in = fgets(STDIN)) !== false) {
    $req = json_decode($in, true);
    try {
        switch ($req['op']) {
            case 'new':
                $client = null;
                $client = new Pushwire\Client($req['address'], $req['options'] ?? []);
                answer(['value' => true]);
                break;
            case 'call':
                $args = array_map(function ($a) {
                    return is_array($a) && isset($a['repeat'], $a['times']) ? str_repeat($a['repeat'], $a['times']) : $a;
                }, $req['args'] ?? []);
                answer(['value' => $client->{$req['method']}(...$args)]);
                break;
            case 'socket':
                $s = private_of($client, 'stream');
                answer(['value' => is_resource($s) ? stream_socket_get_name($s, false) : null]);
                break;
            case 'abandon':
                $begin = new ReflectionMethod($client, 'begin');
                $begin->setAccessible(true);
                [$s] = $begin->invoke($client);
                fwrite($s, $req['line'] . "\n");
                answer(['value' => stream_socket_get_name($s, false)]);
                break;
            case 'foreign_write':
                $s = stream_socket_client($req['address'], $errno, $errstr, 1,
                    STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT);
                fwrite($s, $req['line'] . "\n");
                $r = [$s];
                $w = $e = null;
                if (stream_select($r, $w, $e, 5) !== 1) { // until its reply is there, unread
                    throw new RuntimeException('no reply to the foreign write within 5 s');
                }
                answer(['value' => stream_socket_get_name($s, false)]);
                break;
            case 'token':
                answer(['value' => Pushwire\Client::token($req['secret'], $req['uid'], $req['ttl'] ?? 3600)]);
                break;
            default:
                answer(['exception' => 'driver', 'message' => "unknown op {$req['op']}"]);
        }
    } catch (Throwable $e) {
        answer([
            'exception' => get_class($e),
            'message' => $e->getMessage(),
            'sent' => $e instanceof Pushwire\ConnectionException ? $e->wasSent() : null,
            'reply' => $e instanceof Pushwire\ServerException ? $e->getReply() : null,
        ]);
    }
}
