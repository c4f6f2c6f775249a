<?php
/**
 * pushwire PHP client: one file, nothing but PHP 8.0+ itself.
 *
 *     require_once 'Pushwire.php';
 *     $pw = new Pushwire\Client('tcp://127.0.0.1:5678');
 *     $pw->push(['uid' => 'uid1', 'percent' => '88%']);   // true ("ok") or false ("fail")
 *
 * The connection is persistent by default (STREAM_CLIENT_PERSISTENT): under PHP-FPM a
 * worker keeps one socket per daemon address across requests, so a request does not pay
 * a connect and a close per push. See clients/php/README.md for what the client
 * guarantees when that socket has gone stale (daemon restarted, idle connection closed).
 *
 * Exceptions: Pushwire\Exception is the base of all of them;
 * Pushwire\ConnectionException (cannot connect, connection lost; ->wasSent() says whether
 * the line had been written), Pushwire\TimeoutException (a ConnectionException: no reply
 * within read_timeout) and Pushwire\ServerException (the daemon answered
 * {"ok":false,"error":"..."}; ->getReply() has the decoded reply). Invalid arguments
 * (a payload with a newline, JSON that cannot be encoded) are \InvalidArgumentException.
 */

declare(strict_types=1);

namespace Pushwire;

/** Base class of every exception this client throws (except \InvalidArgumentException). */
class Exception extends \RuntimeException
{
}

/**
 * Could not connect, or the connection failed during a call.
 *
 * wasSent() is false when the line never left (connect refused, nothing written): it was
 * certainly not delivered. It is true when the line was written and no reply came: see
 * README.md ("Stale connections") for what that means.
 */
class ConnectionException extends Exception
{
    private bool $sent;

    public function __construct(string $message, bool $sent = false, ?\Throwable $previous = null)
    {
        parent::__construct($message, 0, $previous);
        $this->sent = $sent;
    }

    /** True if the whole line had been written to the daemon before the failure. */
    public function wasSent(): bool
    {
        return $this->sent;
    }
}

/** No (complete) reply within read_timeout. The line was sent; it may have been delivered. */
class TimeoutException extends ConnectionException
{
}

/** The daemon refused the call: {"ok":false,"error":"..."}; the message is its error text. */
class ServerException extends Exception
{
    /** @var array<string,mixed> */
    private array $reply;

    /** @param array<string,mixed> $reply */
    public function __construct(string $message, array $reply)
    {
        parent::__construct($message);
        $this->reply = $reply;
    }

    /** @return array<string,mixed> the daemon's decoded reply */
    public function getReply(): array
    {
        return $this->reply;
    }
}

/**
 * A connection to one pushwire daemon's push port.
 *
 * Options (all optional):
 * - connect_timeout (float seconds, 1.0): TCP/Unix connect.
 * - read_timeout (float seconds, 5.0): waiting for a reply (and for a write to complete).
 * - persistent (bool, true): keep the socket across requests (STREAM_CLIENT_PERSISTENT).
 * - secret (string) or secret_file (path; a trailing newline is ignored, as the daemon
 *   does): the daemon's push secret, sent as `/auth SECRET` once per connection.
 * - retry_unanswered (bool, true): resend a line once, on a new connection, when the
 *   daemon closed the connection without answering it (see README.md).
 * - json_flags (int, 0): extra json_encode flags for arrays you pass
 *   (e.g. JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES).
 */
class Client
{
    /*
     * The state of a socket is kept in the socket itself, because a persistent socket
     * outlives the request (and this object) that used it, and PHP has no other
     * per-process storage. stream_set_chunk_size() returns the previous value and the
     * value lives in the stream, so it doubles as a marker that survives requests:
     * - PHP's default (8192): a connection no call of this client has used yet.
     * - CHUNK_READY: every call on it completed; /auth, if configured, was accepted.
     * - CHUNK_BUSY: a call is in progress. Found at the start of a call, it means an
     *   earlier call never finished (its request died mid-call: a fatal error, an
     *   exception from an error handler): its reply may still arrive, so the socket is
     *   thrown away rather than risk reading that reply as ours.
     * The read chunk size itself makes no difference for one-line replies.
     */
    private const CHUNK_READY = 8190;
    private const CHUNK_BUSY = 8191;

    private string $address;
    private float $connectTimeout;
    private float $readTimeout;
    private bool $persistent;
    private ?string $secret;
    private bool $retryUnanswered;
    private int $jsonFlags;
    /** @var resource|null */
    private $stream = null;
    /** @var array<string,mixed>|null */
    private ?array $lastReply = null;

    /**
     * @param string $address tcp://HOST:PORT (HOST:PORT alone means tcp) or unix:///PATH
     * @param array<string,mixed> $options see the class comment
     */
    public function __construct(string $address = 'tcp://127.0.0.1:5678', array $options = [])
    {
        $known = ['connect_timeout', 'read_timeout', 'persistent', 'secret', 'secret_file',
            'retry_unanswered', 'json_flags'];
        foreach (array_keys($options) as $k) {
            if (!in_array($k, $known, true)) {
                throw new \InvalidArgumentException("unknown option '$k'");
            }
        }
        $this->address = strpos($address, '://') === false ? "tcp://$address" : $address;
        $this->connectTimeout = (float) ($options['connect_timeout'] ?? 1.0);
        $this->readTimeout = (float) ($options['read_timeout'] ?? 5.0);
        $this->persistent = (bool) ($options['persistent'] ?? true);
        $this->retryUnanswered = (bool) ($options['retry_unanswered'] ?? true);
        $this->jsonFlags = (int) ($options['json_flags'] ?? 0);
        $secret = $options['secret'] ?? null;
        if (isset($options['secret_file'])) {
            $read = @file_get_contents((string) $options['secret_file']);
            if ($read === false) {
                throw new \InvalidArgumentException("cannot read secret_file {$options['secret_file']}");
            }
            $secret = rtrim($read, "\r\n");
        }
        if ($secret !== null) {
            $secret = (string) $secret;
            if ($secret === '' || strpbrk($secret, "\r\n") !== false) {
                throw new \InvalidArgumentException('secret must be non-empty and on one line');
            }
        }
        $this->secret = $secret;
    }

    public function __destruct()
    {
        // A persistent socket stays open for the next request; a private one is closed.
        if (!$this->persistent) {
            $this->close();
        }
    }

    // ---------------------------------------------------------------------------------
    // Calls

    /**
     * A plain push (the seed's protocol): the line goes, byte for byte, to every tab of
     * its "uid". True for `ok` (a live connection of the uid took it), false for `fail`
     * (nobody bound, every queue full, or a malformed line).
     *
     * @param array<mixed>|string $message an array (JSON-encoded here) or a JSON line
     */
    public function push(array|string $message): bool
    {
        $reply = $this->roundTrip($this->line($message));
        if ($reply === 'ok') {
            return true;
        }
        if ($reply === 'fail') {
            return false;
        }
        $this->decode($reply); // a JSON refusal (e.g. authentication required) throws
        throw new Exception("unexpected reply to a push: $reply");
    }

    /**
     * `/push ID LINE`: a plain push with its detailed outcome. Returns the decoded reply,
     * e.g. ['ok'=>true,'result'=>'delivered','connections'=>2,'refused'=>0,'id'=>'42'];
     * result is delivered, offline or refused. A malformed line throws ServerException.
     *
     * @param array<mixed>|string $message
     * @return array<string,mixed>
     */
    public function pushDetailed(string|int $id, array|string $message): array
    {
        return $this->command('/push ' . $this->arg($id) . ' ' . $this->line($message));
    }

    /**
     * `/push ID [ttl=MS] [ack=MS] LINE` (protocol v1, docs/protocol.md). With $ttlMs a
     * uid nobody is connected as keeps it that long (result `queued`: delivered on its
     * next bind). With $ackMs the daemon waits that long for one of the uid's opted-in
     * tabs to acknowledge it (result `acked`, with `acks` tabs, or `not_acked`); the read
     * deadline grows by that wait. Resending the same ID and message after an accepted
     * one (within the daemon's dedupe window) answers `duplicate` with `first` instead of
     * delivering it again, so a retry after a timeout is safe. Returns the decoded reply
     * (with `seq` and `epoch`); a malformed line throws ServerException.
     *
     * @param array<mixed>|string $message
     * @return array<string,mixed>
     */
    public function pushTracked(string|int $id, array|string $message, ?int $ttlMs = null, ?int $ackMs = null): array
    {
        $options = '';
        foreach (['ttl' => $ttlMs, 'ack' => $ackMs] as $name => $ms) {
            if ($ms === null) {
                continue;
            }
            if ($ms < 0) {
                throw new \InvalidArgumentException("$name must be a non-negative number of ms");
            }
            $options .= " $name=$ms";
        }
        $line = '/push ' . $this->arg($id) . $options . ' ' . $this->line($message);
        $r = $this->runCommand($line, $ackMs === null ? 0.0 : $ackMs / 1000);
        if (!is_array($r)) {
            throw new Exception("unexpected reply to /push: $r");
        }
        return $r;
    }

    /**
     * `/send`: the payload to every tab of each uid. Returns how many uids were reached.
     *
     * @param array<string|int>|string|int $uids
     * @param array<mixed>|string $payload an array (JSON-encoded) or the exact text to send
     */
    public function send(array|string|int $uids, array|string $payload): int
    {
        return (int) $this->command('/send ' . $this->targets($uids) . ' ' . $this->payload($payload))['reached'];
    }

    /**
     * `/group`: the payload to every member of the group. Returns how many members were
     * reached (0 for an unknown group).
     *
     * @param array<mixed>|string $payload
     */
    public function group(string $group, array|string $payload): int
    {
        return (int) $this->command('/group ' . $this->arg($group) . ' ' . $this->payload($payload))['reached'];
    }

    /**
     * `/broadcast`: the payload to every bound connection. Returns how many took it.
     *
     * @param array<mixed>|string $payload
     */
    public function broadcast(array|string $payload): int
    {
        return (int) $this->command('/broadcast ' . $this->payload($payload))['connections'];
    }

    /**
     * `/join`: adds uids to a group. Returns how many were not members yet.
     *
     * @param array<string|int>|string|int $uids
     */
    public function join(string $group, array|string|int $uids): int
    {
        return (int) $this->command('/join ' . $this->arg($group) . ' ' . $this->targets($uids))['added'];
    }

    /**
     * `/leave`: removes uids from a group. Returns how many were members.
     *
     * @param array<string|int>|string|int $uids
     */
    public function leave(string $group, array|string|int $uids): int
    {
        return (int) $this->command('/leave ' . $this->arg($group) . ' ' . $this->targets($uids))['removed'];
    }

    /** `/online`: how many connections the uid has bound (0: offline). */
    public function online(string|int $uid): int
    {
        return (int) $this->command('/online ' . $this->arg($uid))['connections'];
    }

    /**
     * `/count`: ['uids' => online uids, 'connections' => bound connections, 'groups' => N].
     *
     * @return array<string,int>
     */
    public function count(): array
    {
        $r = $this->command('/count');
        return ['uids' => (int) $r['uids'], 'connections' => (int) $r['connections'],
            'groups' => (int) $r['groups']];
    }

    /**
     * `/kick`: closes every connection of the uids (close code 4001, the reason or
     * "kicked"). Returns how many connections were closed.
     *
     * @param array<string|int>|string|int $uids
     */
    public function kick(array|string|int $uids, ?string $reason = null): int
    {
        $line = '/kick ' . $this->targets($uids);
        if ($reason !== null && $reason !== '') {
            $line .= ' ' . $this->payload($reason);
        }
        return (int) $this->command($line)['connections'];
    }

    /** `/ping`: true when the daemon answers `pong`. */
    public function ping(): bool
    {
        return $this->command('/ping') === 'pong';
    }

    /**
     * Any command line (starting with `/`), e.g. '/stats' or '/members room1'. Returns
     * the decoded reply (the string 'pong' for /ping); an error reply throws
     * ServerException.
     *
     * @return array<string,mixed>|string
     */
    public function command(string $line): array|string
    {
        return $this->runCommand($line, 0.0);
    }

    /**
     * A command whose reply may take $wait seconds more than read_timeout (an ack wait).
     *
     * @return array<string,mixed>|string
     */
    private function runCommand(string $line, float $wait): array|string
    {
        if ($line === '' || $line[0] !== '/') {
            throw new \InvalidArgumentException('a command starts with /');
        }
        $this->checkLine($line);
        $this->lastReply = null;
        $reply = $this->roundTrip($line, $wait);
        if ($reply === 'pong') {
            return $reply;
        }
        return $this->decode($reply);
    }

    /**
     * The decoded reply of the last command (all of /send's, /group's... figures).
     *
     * @return array<string,mixed>|null
     */
    public function lastReply(): ?array
    {
        return $this->lastReply;
    }

    /**
     * An HS256 JWT a browser binds with when the daemon has a JWT secret: `sub` is the
     * uid, `exp` now + $ttl. The browser sends it as its first frame or as ?token=.
     */
    public static function token(string $secret, string|int $uid, int $ttl = 3600): string
    {
        $b64 = static function (string $s): string {
            return rtrim(strtr(base64_encode($s), '+/', '-_'), '=');
        };
        $head = $b64('{"alg":"HS256","typ":"JWT"}');
        $body = $b64(json_encode(['sub' => $uid, 'exp' => time() + $ttl], JSON_THROW_ON_ERROR));
        return "$head.$body." . $b64(hash_hmac('sha256', "$head.$body", $secret, true));
    }

    /** Closes the connection, persistent or not (the next call opens a new one). */
    public function close(): void
    {
        if (is_resource($this->stream)) {
            @fclose($this->stream);
        }
        $this->stream = null;
    }

    // ---------------------------------------------------------------------------------
    // Encoding

    /** @param array<mixed>|string $message */
    private function line(array|string $message): string
    {
        $line = is_string($message) ? $message : $this->json($message);
        $this->checkLine($line);
        return $line;
    }

    /** @param array<mixed>|string $payload */
    private function payload(array|string $payload): string
    {
        $text = is_string($payload) ? $payload : $this->json($payload);
        if ($text === '') {
            throw new \InvalidArgumentException('empty payload');
        }
        $this->checkLine($text);
        return $text;
    }

    /** One argument (uid, group, id) as a JSON string, whatever it contains. */
    private function arg(string|int $value): string
    {
        return $this->json((string) $value);
    }

    /** @param array<string|int>|string|int $uids */
    private function targets(array|string|int $uids): string
    {
        $list = [];
        foreach (is_array($uids) ? $uids : [$uids] as $uid) {
            $list[] = is_int($uid) ? $uid : (string) $uid;
        }
        return $this->json($list);
    }

    private function json(mixed $value): string
    {
        try {
            return json_encode($value, JSON_THROW_ON_ERROR | $this->jsonFlags);
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException('cannot JSON-encode: ' . $e->getMessage(), 0, $e);
        }
    }

    /** A line must not contain a newline, nor end with \r (the daemon strips it). */
    private function checkLine(string $line): void
    {
        if (strpos($line, "\n") !== false || substr($line, -1) === "\r") {
            throw new \InvalidArgumentException('a line must not contain "\n" nor end with "\r"');
        }
    }

    /** @return array<string,mixed> */
    private function decode(string $reply): array
    {
        if ($reply === 'fail') {
            // What older daemons answered a command longer than --max-line-bytes
            // (current ones answer a JSON error).
            throw new ServerException('line too long or not taken (the daemon answered "fail")', []);
        }
        $r = json_decode($reply, true);
        if (!is_array($r) || !array_key_exists('ok', $r)) {
            throw new Exception("unexpected reply: $reply");
        }
        $this->lastReply = $r;
        if (isset($r['error'])) {
            throw new ServerException((string) $r['error'], $r);
        }
        return $r;
    }

    // ---------------------------------------------------------------------------------
    // The connection

    /**
     * Writes one line and returns its reply line (without "\n").
     *
     * A socket that is stale before the write (EOF from a restarted daemon or an idle
     * close, leftover bytes, a call that never finished) is replaced before anything is
     * written. If the line was written but the connection ended before any byte of its
     * reply, the daemon did not run it (it answers every complete line it read before
     * closing, unless it crashed in between): with retry_unanswered it is sent once more
     * on a new connection. A timeout is never retried: the daemon may have run the line.
     */
    private function roundTrip(string $line, float $wait = 0.0): string
    {
        for ($attempt = 1; ; $attempt++) {
            [$s, $fresh] = $this->begin();
            $auth = $fresh && $this->secret !== null;
            $out = ($auth ? "/auth {$this->secret}\n" : '') . $line . "\n";
            $done = false;
            try {
                $deadline = microtime(true) + $this->readTimeout + $wait;
                $this->setTimeout($s, $this->readTimeout + $wait);
                $written = @fwrite($s, $out);
                $written = $written === false ? 0 : $written;
                if ($written < strlen($out)) {
                    if ($written === 0 && $attempt === 1) {
                        continue; // nothing was written: safe to send on a new connection
                    }
                    // Part of the line left: reset rather than close, so the daemon
                    // cannot take the part it has as a line at EOF.
                    $this->discard(true);
                    throw new ConnectionException(
                        "write to {$this->address} failed after $written of " . strlen($out) . ' bytes'
                    );
                }
                $reply = null;
                $closed = false;
                if ($auth) {
                    $authReply = $this->readLine($s, $deadline);
                    if ($authReply === null) {
                        $closed = true;
                    } else {
                        $r = json_decode($authReply, true);
                        if (!is_array($r) || ($r['ok'] ?? false) !== true) {
                            $this->decode($authReply); // throws the daemon's reason
                            throw new Exception("unexpected reply to /auth: $authReply");
                        }
                    }
                }
                if (!$closed) {
                    $reply = $this->readLine($s, $deadline);
                }
                if ($reply === null) {
                    if ($this->retryUnanswered && $attempt === 1) {
                        continue; // closed before answering: the line was not run
                    }
                    throw new ConnectionException(
                        "{$this->address} closed the connection without answering the line"
                        . ($attempt > 1 ? ' (on a new connection too)' : '')
                        . '; not resent',
                        true
                    );
                }
                stream_set_chunk_size($s, self::CHUNK_READY);
                $done = true;
                return $reply;
            } finally {
                if (!$done) {
                    $this->discard(false);
                }
            }
        }
    }

    /**
     * A usable socket, marked busy, and whether it is fresh (needs /auth). Replaces a
     * stale one: EOF or leftover bytes on a reused socket, or a call that never finished.
     *
     * @return array{0: resource, 1: bool}
     */
    private function begin(): array
    {
        for ($tries = 0; ; $tries++) {
            if (!is_resource($this->stream)) {
                $this->stream = $this->connect();
            }
            $s = $this->stream;
            $was = stream_set_chunk_size($s, self::CHUNK_BUSY);
            if ($was === self::CHUNK_READY) {
                if (!$this->readable($s)) {
                    return [$s, false];
                }
                // Readable while idle: EOF (the daemon restarted or closed an idle
                // connection) or bytes nobody asked for. Either way, not this socket.
            } elseif ($was !== self::CHUNK_BUSY) {
                return [$s, true];
            }
            $this->discard(false);
            if ($tries >= 2) {
                throw new ConnectionException("no usable connection to {$this->address}");
            }
        }
    }

    /** @return resource */
    private function connect()
    {
        $flags = STREAM_CLIENT_CONNECT | ($this->persistent ? STREAM_CLIENT_PERSISTENT : 0);
        $options = strncmp($this->address, 'tcp://', 6) === 0 ? ['socket' => ['tcp_nodelay' => true]] : [];
        $errno = 0;
        $errstr = '';
        $s = @stream_socket_client(
            $this->address,
            $errno,
            $errstr,
            $this->connectTimeout,
            $flags,
            stream_context_create($options)
        );
        if ($s === false) {
            throw new ConnectionException("cannot connect to {$this->address}: $errstr ($errno)");
        }
        stream_set_blocking($s, true);
        return $s;
    }

    /** True if the socket has something to read (data or EOF) right now. */
    private function readable($s): bool
    {
        $r = [$s];
        $w = null;
        $e = null;
        return @stream_select($r, $w, $e, 0, 0) !== 0;
    }

    /**
     * One reply line without its "\n"; null if the connection ended before any byte.
     * Throws TimeoutException at the deadline, ConnectionException on EOF mid-line.
     */
    private function readLine($s, float $deadline): ?string
    {
        $buf = '';
        for (;;) {
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                throw new TimeoutException("no reply from {$this->address} within {$this->readTimeout} s", true);
            }
            $this->setTimeout($s, $left);
            $chunk = @fgets($s);
            if (is_string($chunk) && $chunk !== '') {
                $buf .= $chunk;
                if (substr($buf, -1) === "\n") {
                    return substr($buf, 0, -1);
                }
                continue;
            }
            $meta = stream_get_meta_data($s);
            if ($meta['timed_out']) {
                throw new TimeoutException("no reply from {$this->address} within {$this->readTimeout} s", true);
            }
            if ($buf === '' && ($meta['eof'] || feof($s))) {
                return null;
            }
            throw new ConnectionException("connection to {$this->address} lost while reading a reply", true);
        }
    }

    private function setTimeout($s, float $seconds): void
    {
        $sec = (int) $seconds;
        stream_set_timeout($s, $sec, (int) (($seconds - $sec) * 1e6));
    }

    /** Throws the socket away (and out of PHP's persistent pool). */
    private function discard(bool $reset): void
    {
        if (is_resource($this->stream)) {
            if ($reset && function_exists('socket_import_stream')) {
                $sock = @socket_import_stream($this->stream);
                if ($sock !== false && $sock !== null) {
                    @socket_set_option($sock, SOL_SOCKET, SO_LINGER, ['l_onoff' => 1, 'l_linger' => 0]);
                }
            }
            @fclose($this->stream);
        }
        $this->stream = null;
    }
}
