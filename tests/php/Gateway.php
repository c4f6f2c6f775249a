<?php
// A GatewayClient for pushwire's tests, written from the protocol (docs/gateway.md), not
// copied from the library: the same static API as `GatewayClient\Gateway`
// (walkor/GatewayClient), and the same bytes on the wire for every call, so a test that
// passes with it passes with the unmodified library.
//
// What it does as the library does, on purpose:
// - discovery: one line to the first Register address that accepts a connection, the
//   answer's addresses kept in a static for the rest of that second and the next (the
//   library's `time() - $last > 1`); `$addressesCacheDisable` asks every time;
// - one TCP connection per gateway per call, each starting with the secret frame (202)
//   when `$secretKey` is set; sends read nothing (persistent sockets if
//   `$persistentConnection`); queries read "4-byte length + serialize()" from every
//   gateway at once and give up after 5 s;
// - a client_id's commands go to the address inside it; `sendToAll`/`sendToGroup`
//   exclusions go only to the listed gateway whose address equals the excluded id's;
// - the merging of several gateways' answers, including the library's quirk in
//   getAllGroupUidList/getAllGroupClientIdList, which stop reading a gateway's answer at
//   the first connection without a uid/group.
// Where it differs: a gateway it cannot connect to for a send raises a RuntimeException
// (the library dies on a TypeError there), and a malformed client_id always raises
// (the library only checks its length).
namespace PushwireTest;

final class Gateway
{
    /** @var string|string[] "ip:port", or several tried in order */
    public static $registerAddress = '127.0.0.1:1236';
    /** @var string */
    public static $secretKey = '';
    /** @var int|float seconds */
    public static $connectTimeout = 3;
    /** @var bool */
    public static $persistentConnection = false;
    /** @var bool */
    public static $addressesCacheDisable = false;

    // GatewayWorker's command numbers.
    private const SEND_TO_ONE = 5;
    private const SEND_TO_ALL = 6;
    private const KICK = 7;
    private const DESTROY = 8;
    private const UPDATE_SESSION = 9;
    private const GET_ALL_CLIENT_SESSIONS = 10;
    private const IS_ONLINE = 11;
    private const BIND_UID = 12;
    private const UNBIND_UID = 13;
    private const SEND_TO_UID = 14;
    private const GET_CLIENT_ID_BY_UID = 15;
    private const BATCH_GET_CLIENT_ID_BY_UID = 16;
    private const JOIN_GROUP = 20;
    private const LEAVE_GROUP = 21;
    private const SEND_TO_GROUP = 22;
    private const GET_CLIENT_SESSIONS_BY_GROUP = 23;
    private const GET_CLIENT_COUNT_BY_GROUP = 24;
    private const SELECT = 25;
    private const GET_GROUP_ID_LIST = 26;
    private const UNGROUP = 27;
    private const BATCH_GET_CLIENT_COUNT_BY_GROUP = 28;
    private const GATEWAY_CLIENT_CONNECT = 202;
    private const GET_SESSION_BY_CLIENT_ID = 203;
    private const SET_SESSION = 204;

    private const BODY_IS_SCALAR = 0x01;
    private const NOT_CALL_ENCODE = 0x02;
    private const QUERY_TIMEOUT = 5;

    /** @var string[]|null */
    private static $gateways = null;
    /** @var int */
    private static $gatewaysAt = 0;

    // ---------------------------------------------------------------------------------
    // Sends

    public static function sendToAll($message, $client_id_array = null, $exclude_client_id = null, $raw = false)
    {
        $flag = $raw ? self::NOT_CALL_ENCODE : 0;
        if ($exclude_client_id && !is_array($exclude_client_id)) {
            $exclude_client_id = [$exclude_client_id];
        }
        if ($client_id_array) {
            if (!is_array($client_id_array)) {
                echo new \Exception('bad $client_id_array:' . var_export($client_id_array, true));
                return;
            }
            $skip = $exclude_client_id ? array_flip($exclude_client_id) : [];
            $chosen = self::byGateway(array_filter($client_id_array, function ($id) use ($skip) {
                return !isset($skip[$id]);
            }));
            foreach ($chosen as $address => $connections) {
                self::send($address, self::frame(self::SEND_TO_ALL, 0, json_encode(['connections' => $connections]), $message, $flag));
            }
            return;
        }
        if (is_array($client_id_array)) {
            return; // an empty list: nobody
        }
        if (!$exclude_client_id) {
            self::sendToEveryGateway(self::frame(self::SEND_TO_ALL, 0, '', $message, $flag));
            return;
        }
        $excluded = self::byGateway($exclude_client_id);
        foreach (self::gateways() as $address) {
            $ext = isset($excluded[$address]) ? json_encode(['exclude' => $excluded[$address]]) : '';
            self::send($address, self::frame(self::SEND_TO_ALL, 0, $ext, $message, $flag));
        }
    }

    public static function sendToClient($client_id, $message)
    {
        return self::toClient($client_id, self::SEND_TO_ONE, $message);
    }

    public static function sendToUid($uid, $message)
    {
        $uids = is_array($uid) ? $uid : [$uid];
        self::sendToEveryGateway(self::frame(self::SEND_TO_UID, 0, json_encode($uids), $message));
    }

    public static function sendToGroup($group, $message, $exclude_client_id = null, $raw = false)
    {
        if (!self::isValidGroupId($group)) {
            return false;
        }
        $flag = $raw ? self::NOT_CALL_ENCODE : 0;
        $groups = is_array($group) ? $group : [$group];
        $plain = json_encode(['group' => $groups, 'exclude' => null]);
        if (empty($exclude_client_id)) {
            self::sendToEveryGateway(self::frame(self::SEND_TO_GROUP, 0, $plain, $message, $flag));
            return;
        }
        $excluded = self::byGateway(is_array($exclude_client_id) ? $exclude_client_id : [$exclude_client_id]);
        foreach (self::gateways() as $address) {
            $ext = isset($excluded[$address]) ? json_encode(['group' => $groups, 'exclude' => $excluded[$address]]) : $plain;
            self::send($address, self::frame(self::SEND_TO_GROUP, 0, $ext, $message, $flag));
        }
    }

    // ---------------------------------------------------------------------------------
    // Binding, groups, kicks, sessions

    public static function bindUid($client_id, $uid)
    {
        self::toClient($client_id, self::BIND_UID, '', $uid);
    }

    public static function unbindUid($client_id, $uid)
    {
        self::toClient($client_id, self::UNBIND_UID, '', $uid);
    }

    public static function joinGroup($client_id, $group)
    {
        self::toClient($client_id, self::JOIN_GROUP, '', $group);
    }

    public static function leaveGroup($client_id, $group)
    {
        self::toClient($client_id, self::LEAVE_GROUP, '', $group);
    }

    public static function ungroup($group)
    {
        if (!self::isValidGroupId($group)) {
            return false;
        }
        self::sendToEveryGateway(self::frame(self::UNGROUP, 0, (string)$group, ''));
    }

    public static function closeClient($client_id, $message = null)
    {
        [$address, $connection] = self::address($client_id);
        return self::send($address, self::frame(self::KICK, $connection, '', $message));
    }

    public static function destoryClient($client_id)
    {
        [$address, $connection] = self::address($client_id);
        return self::send($address, self::frame(self::DESTROY, $connection, '', ''));
    }

    public static function setBusinessWorker($business_worker_instance)
    {
        throw new \LogicException('pushwire has no BusinessWorker');
    }

    public static function destoryCurrentClient()
    {
        throw new \Exception('destoryCurrentClient can not be called in async context');
    }

    public static function setSession($client_id, array $session)
    {
        self::setSocketSession($client_id, self::sessionBytes($session));
    }

    public static function updateSession($client_id, array $session)
    {
        self::toClient($client_id, self::UPDATE_SESSION, '', self::sessionBytes($session));
    }

    public static function setSocketSession($client_id, $session_str)
    {
        return self::toClient($client_id, self::SET_SESSION, '', $session_str);
    }

    public static function getSession($client_id)
    {
        [$address, $connection] = self::address($client_id);
        return self::ask($address, self::frame(self::GET_SESSION_BY_CLIENT_ID, $connection, '', ''));
    }

    // ---------------------------------------------------------------------------------
    // Queries

    public static function isOnline($client_id)
    {
        [$address, $connection] = self::address($client_id);
        return (int)self::ask($address, self::frame(self::IS_ONLINE, $connection, '', ''));
    }

    public static function isUidOnline($uid)
    {
        return (int)self::getClientIdByUid($uid);
    }

    public static function isUidsOnline($uids)
    {
        return array_map('intval', self::batchGetClientIdByUid($uids));
    }

    public static function getClientIdByUid($uid)
    {
        $ids = [];
        foreach (self::askAll(self::frame(self::GET_CLIENT_ID_BY_UID, 0, (string)$uid, '')) as $address => $connections) {
            foreach ($connections ?: [] as $connection) {
                $ids[] = self::clientId($address, $connection);
            }
        }
        return $ids;
    }

    public static function batchGetClientIdByUid($uids)
    {
        $ids = [];
        foreach (self::askAll(self::frame(self::BATCH_GET_CLIENT_ID_BY_UID, 0, json_encode($uids), '')) as $address => $byUid) {
            foreach ($byUid ?: [] as $uid => $connections) {
                $ids[$uid] = $ids[$uid] ?? [];
                foreach ($connections as $connection) {
                    $ids[$uid][] = self::clientId($address, $connection);
                }
            }
        }
        return $ids;
    }

    public static function getUidByClientId($client_id)
    {
        foreach (self::select(['uid'], ['client_id' => [$client_id]]) as $rows) {
            foreach ($rows ?: [] as $row) {
                return $row['uid'];
            }
        }
        return null;
    }

    public static function getAllClientIdList()
    {
        $ids = [];
        foreach (self::select(['uid']) as $address => $rows) {
            foreach ($rows ?: [] as $connection => $row) {
                $id = self::clientId($address, $connection);
                $ids[$id] = $id;
            }
        }
        return $ids;
    }

    public static function getAllClientIdCount()
    {
        return self::getClientIdCountByGroup();
    }

    public static function getAllClientCount()
    {
        return self::getClientIdCountByGroup();
    }

    public static function getClientIdCountByGroup($group = '')
    {
        $total = 0;
        foreach (self::askAll(self::frame(self::GET_CLIENT_COUNT_BY_GROUP, 0, (string)$group, '')) as $count) {
            if ($count) {
                $total += $count;
            }
        }
        return $total;
    }

    public static function getClientCountByGroup($group = '')
    {
        return self::getClientIdCountByGroup($group);
    }

    public static function batchGetClientIdCountByGroup(array $groups): array
    {
        $counts = [];
        foreach (self::askAll(self::frame(self::BATCH_GET_CLIENT_COUNT_BY_GROUP, 0, json_encode($groups), '')) as $byGroup) {
            foreach ($byGroup ?: [] as $group => $count) {
                $counts[$group] = ($counts[$group] ?? 0) + $count;
            }
        }
        return $counts;
    }

    public static function getClientIdListByGroup($group)
    {
        if (!self::isValidGroupId($group)) {
            return [];
        }
        $ids = [];
        foreach (self::select(['uid'], ['groups' => is_array($group) ? $group : [$group]]) as $address => $rows) {
            foreach ($rows ?: [] as $connection => $row) {
                $id = self::clientId($address, $connection);
                $ids[$id] = $id;
            }
        }
        return $ids;
    }

    public static function getUidListByGroup($group)
    {
        if (!self::isValidGroupId($group)) {
            return [];
        }
        return self::uids(self::select(['uid'], ['groups' => is_array($group) ? $group : [$group]]));
    }

    public static function getUidCountByGroup($group)
    {
        return self::isValidGroupId($group) ? count(self::getUidListByGroup($group)) : 0;
    }

    public static function getAllUidList()
    {
        return self::uids(self::select(['uid']));
    }

    public static function getAllUidCount()
    {
        return count(self::getAllUidList());
    }

    public static function getAllGroupIdList()
    {
        $groups = [];
        foreach (self::askAll(self::frame(self::GET_GROUP_ID_LIST, 0, '', '')) as $list) {
            foreach (is_array($list) ? $list : [] as $group) {
                $groups[$group] = $groups[$group] ?? $group;
            }
        }
        return $groups;
    }

    public static function getAllGroupUidList()
    {
        $byGroup = [];
        foreach (self::select(['uid', 'groups']) as $rows) {
            foreach ($rows ?: [] as $row) {
                if (empty($row['uid']) || empty($row['groups'])) {
                    break; // the library's quirk: the rest of this gateway's answer is skipped
                }
                foreach ($row['groups'] as $group) {
                    $byGroup[$group][$row['uid']] = $row['uid'];
                }
            }
        }
        return $byGroup;
    }

    public static function getAllGroupUidCount()
    {
        return array_map('count', self::getAllGroupUidList());
    }

    public static function getAllGroupClientIdList()
    {
        $byGroup = [];
        foreach (self::select(['groups']) as $address => $rows) {
            foreach ($rows ?: [] as $connection => $row) {
                if (empty($row['groups'])) {
                    break; // the library's quirk, as above
                }
                $id = self::clientId($address, $connection);
                foreach ($row['groups'] as $group) {
                    $byGroup[$group][$id] = $id;
                }
            }
        }
        return $byGroup;
    }

    public static function getAllGroupClientIdCount()
    {
        return array_map('count', self::getAllGroupClientIdList());
    }

    public static function getAllClientSessions($group = '')
    {
        $frame = $group
            ? self::frame(self::GET_CLIENT_SESSIONS_BY_GROUP, 0, (string)$group, '')
            : self::frame(self::GET_ALL_CLIENT_SESSIONS, 0, '', '');
        $sessions = [];
        foreach (self::askAll($frame) as $address => $byConnection) {
            foreach ($byConnection ?: [] as $connection => $bytes) {
                $sessions[self::clientId($address, $connection)] = $bytes ? unserialize($bytes) : [];
            }
        }
        return $sessions;
    }

    public static function getClientSessionsByGroup($group)
    {
        return self::isValidGroupId($group) ? self::getAllClientSessions($group) : [];
    }

    public static function getAllClientInfo($group = '')
    {
        echo "Warning: Gateway::getAllClientInfo is deprecated and will be removed in a future, please use Gateway::getAllClientSessions instead.";
        return self::getAllClientSessions($group);
    }

    public static function getClientInfoByGroup($group)
    {
        echo "Warning: Gateway::getClientInfoByGroup is deprecated and will be removed in a future, please use Gateway::getClientSessionsByGroup instead.";
        return self::getAllClientSessions($group);
    }

    // ---------------------------------------------------------------------------------
    // client_id ↔ gateway address

    /** The 20 hex digits naming connection $connection at gateway "ip:port". */
    public static function clientId(string $address, $connection): string
    {
        [$ip, $port] = explode(':', $address);
        return bin2hex(pack('NnN', ip2long($ip), (int)$port, (int)$connection));
    }

    /** [gateway "ip:port", connection number] of a client_id. */
    public static function address($client_id): array
    {
        if (!is_string($client_id) || !preg_match('/^[0-9a-fA-F]{20}$/', $client_id)) {
            throw new \Exception("client_id $client_id is invalid");
        }
        $a = unpack('Nip/nport/Nconnection', hex2bin($client_id));
        return [long2ip($a['ip']) . ':' . $a['port'], $a['connection']];
    }

    /** client ids grouped by gateway: ["ip:port" => [connection => connection]]. */
    private static function byGateway(array $client_ids): array
    {
        $out = [];
        foreach ($client_ids as $id) {
            [$address, $connection] = self::address($id);
            $out[$address][$connection] = $connection;
        }
        return $out;
    }

    // ---------------------------------------------------------------------------------
    // The wire

    /** One frame: "NCNnNnNCnN" header, ext_data, body (raw when scalar, else serialized). */
    private static function frame(int $cmd, int $connection, string $ext, $body, int $flag = 0): string
    {
        if (is_scalar($body)) {
            $flag |= self::BODY_IS_SCALAR;
            $body = (string)$body;
        } else {
            $body = serialize($body);
        }
        $length = 28 + strlen($ext) + strlen($body);
        return pack('NCNnNnNCnN', $length, $cmd, 0, 0, 0, 0, $connection, $flag, 0, strlen($ext)) . $ext . $body;
    }

    /** What every connection to a gateway starts with when a secret is set. */
    private static function credentials(): string
    {
        if (self::$secretKey === '' || self::$secretKey === null) {
            return '';
        }
        return self::frame(self::GATEWAY_CLIENT_CONNECT, 0, '', json_encode(['secret_key' => self::$secretKey]));
    }

    /** `cmd` for one client_id at its own gateway; ext_data only when not empty(). */
    private static function toClient($client_id, int $cmd, $message, $ext = '')
    {
        [$address, $connection] = self::address($client_id);
        return self::send($address, self::frame($cmd, $connection, empty($ext) ? '' : (string)$ext, $message));
    }

    private static function sessionBytes(array $session): string
    {
        return serialize($session);
    }

    private static function isValidGroupId($group): bool
    {
        if (empty($group)) {
            echo new \Exception('group(' . var_export($group, true) . ') empty');
            return false;
        }
        return true;
    }

    private static function sendToEveryGateway(string $frame): void
    {
        foreach (self::gateways() as $address) {
            self::send($address, $frame);
        }
    }

    /** Writes $frame to a gateway and reads nothing. */
    private static function send(string $address, string $frame): bool
    {
        $flags = STREAM_CLIENT_CONNECT | (self::$persistentConnection ? STREAM_CLIENT_PERSISTENT : 0);
        $socket = @stream_socket_client("tcp://$address", $errno, $error, self::$connectTimeout, $flags);
        if (!$socket) {
            throw new \RuntimeException("can not connect to tcp://$address: $error");
        }
        $bytes = self::credentials() . $frame;
        return fwrite($socket, $bytes) === strlen($bytes);
    }

    /** One query to one gateway, its answer unserialized. */
    private static function ask(string $address, string $frame)
    {
        $socket = @stream_socket_client("tcp://$address", $errno, $error, self::$connectTimeout);
        if (!$socket) {
            throw new \Exception("can not connect to tcp://$address $error");
        }
        $bytes = self::credentials() . $frame;
        if (fwrite($socket, $bytes) !== strlen($bytes)) {
            throw new \Exception("can not send to tcp://$address", 502);
        }
        stream_set_timeout($socket, 1);
        $deadline = microtime(true) + self::QUERY_TIMEOUT;
        $answer = '';
        while (!self::complete($answer) && microtime(true) < $deadline) {
            $chunk = fread($socket, 65536);
            if ($chunk === '' || $chunk === false) {
                if (feof($socket)) {
                    throw new \Exception("connection close tcp://$address");
                }
                continue;
            }
            $answer .= $chunk;
        }
        return unserialize(substr($answer, 4));
    }

    /** The query to every gateway at once: ["ip:port" => answer]. Unreachable ones are left out. */
    private static function askAll(string $frame): array
    {
        $frames = [];
        foreach (self::gateways() as $address) {
            $frames[$address] = $frame;
        }
        return self::askEach($frames);
    }

    /** Each gateway its own query, all at once: ["ip:port" => answer]. */
    private static function askEach(array $frames): array
    {
        $open = $answers = [];
        foreach ($frames as $address => $frame) {
            $socket = @stream_socket_client("tcp://$address", $errno, $error, self::$connectTimeout);
            $bytes = self::credentials() . $frame;
            if ($socket && fwrite($socket, $bytes) === strlen($bytes)) {
                $open[$address] = $socket;
                $answers[$address] = '';
            }
        }
        $deadline = microtime(true) + self::QUERY_TIMEOUT;
        while ($open && microtime(true) < $deadline) {
            $ready = array_values($open);
            $none = null;
            if (!@stream_select($ready, $none, $none, 0, 200000)) {
                continue;
            }
            foreach ($ready as $socket) {
                $address = array_search($socket, $open, true);
                $chunk = fread($socket, 65536);
                if ($chunk !== '' && $chunk !== false) {
                    $answers[$address] .= $chunk;
                }
                if (self::complete($answers[$address]) || feof($socket)) {
                    unset($open[$address]);
                }
            }
        }
        return array_map(function ($answer) {
            return unserialize(substr($answer, 4));
        }, $answers);
    }

    /** A reply is a 4-byte length and that many bytes. */
    private static function complete(string $answer): bool
    {
        return strlen($answer) >= 4 && strlen($answer) >= 4 + unpack('N', $answer)[1];
    }

    /**
     * `select` as GatewayClient runs it: with client ids in `where`, only their gateways
     * are asked (and, if `where` has more, every listed gateway too).
     * @return array ["ip:port" => [connection => [field => value]]]
     */
    private static function select(array $fields, array $where = []): array
    {
        $ask = ['fields' => $fields, 'where' => $where];
        if (!isset($where['client_id'])) {
            return self::askAll(self::frame(self::SELECT, 0, json_encode($ask), ''));
        }
        $perGateway = [];
        unset($ask['where']['client_id']);
        // The other gateways (if asked) get an empty connection_id list, as the library sends.
        $ask['where']['connection_id'] = [];
        foreach (self::byGateway($where['client_id']) as $address => $connections) {
            $mine = $ask;
            $mine['where']['connection_id'] = $connections;
            $perGateway[$address] = $mine;
        }
        if (count($where) !== 1) {
            foreach (self::gateways() as $address) {
                $perGateway[$address] = $perGateway[$address] ?? $ask;
            }
        }
        $frames = array_map(function ($a) {
            return self::frame(self::SELECT, 0, json_encode($a), '');
        }, $perGateway);
        return self::askEach($frames);
    }

    /** Every non-empty uid in select answers: [uid => uid]. */
    private static function uids(array $answers): array
    {
        $uids = [];
        foreach ($answers as $rows) {
            foreach ($rows ?: [] as $row) {
                if (!empty($row['uid'])) {
                    $uids[$row['uid']] = $row['uid'];
                }
            }
        }
        return $uids;
    }

    /** The gateways the Register names, asked again when the cached list is over a second old. */
    private static function gateways(): array
    {
        if (self::$addressesCacheDisable) {
            self::$gateways = null;
        }
        if (self::$gateways && time() - self::$gatewaysAt <= 1) {
            return self::$gateways;
        }
        $now = time();
        $socket = false;
        $error = '';
        foreach ((array)self::$registerAddress as $register) {
            $socket = @stream_socket_client("tcp://$register", $errno, $error, self::$connectTimeout);
            if ($socket) {
                break;
            }
        }
        if (!$socket) {
            throw new \Exception("Can not connect to tcp://$register $error");
        }
        // The secret goes in unescaped, as the library writes it.
        fwrite($socket, '{"event":"worker_connect","secret_key":"' . self::$secretKey . '"}' . "\n");
        stream_set_timeout($socket, 5);
        $line = fgets($socket, 655350);
        $answer = $line ? json_decode(trim($line), true) : null;
        if (!$answer) {
            throw new \Exception("getAllGatewayAddressesFromRegister fail. tcp://$register return " . var_export($line, true));
        }
        self::$gateways = $answer['addresses'];
        self::$gatewaysAt = $now;
        if (!self::$gateways) {
            throw new \Exception('Gateway::getAllGatewayAddressesFromRegister() with registerAddress:' .
                json_encode(self::$registerAddress) . '  return ' . var_export(self::$gateways, true));
        }
        return self::$gateways;
    }
}
