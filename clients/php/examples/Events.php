<?php
/**
 * The Events.php of a GatewayWorker chat room (a live-stream room: users join it and say
 * things to it), rewritten for pushwire. docs/events.md walks through it.
 *
 * GatewayWorker ran this class inside its BusinessWorker processes, next to the sockets.
 * pushwire holds the sockets and posts what happens to webhook.php (next to this file),
 * which calls these methods; what the class did with Gateway::* it does with
 * Pushwire\Client over the push port. Start pushwire with the browsers' messages asked for:
 *
 *     --events-url 'https://app.example.com/pushwire/webhook.php#types=*,message'
 *     --events-secret-file /etc/pushwire/events.secret
 */

declare(strict_types=1);

require_once __DIR__ . '/../Pushwire.php';

final class Events
{
    public function __construct(private Pushwire\Client $pw)
    {
    }

    /**
     * GatewayWorker: onConnect($client_id) sent the page {"type":"init","client_id":...}
     * so it could post it to the MVC app, which then called Gateway::bindUid(). A pushwire
     * page binds its uid itself (its first frame, or a signed token), so there is nothing
     * to do; the `bind` event that follows says which uid it is.
     */
    public function onConnect(array $event): void
    {
    }

    /**
     * GatewayWorker: onMessage($client_id, $message). The sender is $event['uid'], bound
     * by pushwire (with --jwt-secret-file: proven by a token), never a userId field the
     * page wrote into its message.
     */
    public function onMessage(array $event): void
    {
        $data = json_decode($event['data'], true);
        if (!is_array($data)) {
            return;
        }
        $uid = (string)$event['uid'];
        $room = (string)($data['roomId'] ?? '');
        $name = (string)($data['userName'] ?? $uid);
        $now = date('Y-m-d H:i:s');
        switch ($data['type'] ?? '') {
            case 'join':
                // Gateway::joinGroup($client_id, $roomId) + Gateway::sendToGroup(...)
                if ($room === '') {
                    return;
                }
                $this->pw->join($room, $uid);
                $this->pw->group($room, [
                    'type' => 'join', 'roomId' => $room, 'userName' => $name,
                    'msg' => 'enters the Room', 'joinTime' => $now,
                ]);
                break;
            case 'say':
                // Gateway::sendToGroup($roomId, ...)
                if ($room === '') {
                    return;
                }
                $this->pw->group($room, [
                    'type' => 'say', 'roomId' => $room, 'userName' => $name,
                    'content' => (string)($data['content'] ?? ''), 'commentTime' => $now,
                ]);
                break;
            // 'pong', the page's heartbeat: pushwire pings browsers itself, nothing to do.
        }
    }

    /**
     * GatewayWorker: onClose($client_id). pushwire has already taken the connection out of
     * its uid; the uid keeps its groups for --group-grace-ms, so a reload does not leave the
     * room. $event['code'] says how it ended (1001: page closed, 1006: dropped...).
     */
    public function onClose(array $event): void
    {
    }

    /** No GatewayWorker counterpart: the uid's first connection anywhere. */
    public function onOnline(array $event): void
    {
    }

    /** The uid's last connection is gone, and none came back within the debounce. */
    public function onOffline(array $event): void
    {
    }
}
