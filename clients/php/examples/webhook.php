<?php
/**
 * The web endpoint pushwire's --events-url points at: verifies each delivery and hands
 * its events to Events (Events.php, the GatewayWorker class rewritten).
 *
 * Settings from the environment (PHP-FPM: `env[...]` in the pool, or your framework's
 * config): PUSHWIRE_EVENTS_SECRET (during a rotation, the new and the old one separated
 * by a space) and PUSHWIRE_PUSH (the push port, tcp://127.0.0.1:5678 by default).
 *
 * A batch whose handler throws is answered 500 and comes again: keep the last `seq` per
 * subject (uid, conn, group) in your database or Redis and skip events at or below it
 * if a handler must not run twice (docs/events.md, "Order and duplicates").
 */

declare(strict_types=1);

require_once __DIR__ . '/../Webhook.php';
require_once __DIR__ . '/Events.php';

$secrets = preg_split('/\s+/', trim((string)getenv('PUSHWIRE_EVENTS_SECRET')), -1, PREG_SPLIT_NO_EMPTY);
$push = getenv('PUSHWIRE_PUSH') ?: 'tcp://127.0.0.1:5678';

Pushwire\Webhook::serve($secrets, new Events(new Pushwire\Client($push)));
