<?php
/**
 * pushwire webhook receiver: checks that a delivery comes from your pushwire and is
 * fresh, then hands each event to your code. One file, nothing but PHP 8.0+ itself
 * (docs/events.md is the reference).
 *
 *     require_once 'Webhook.php';
 *     Pushwire\Webhook::serve(getenv('PUSHWIRE_EVENTS_SECRET'), new Events());
 *
 * A delivery is a POST of {"events":[...]} with two headers:
 *     X-Pushwire-Timestamp: seconds since the epoch, when it was signed
 *     X-Pushwire-Signature: sha256=hex(HMAC-SHA256(secret, TIMESTAMP . "." . BODY))
 * A timestamp further than $tolerance seconds (300) from this server's clock is refused,
 * so a captured delivery cannot be replayed later. Each event has a `seq`: keep the last
 * one per subject (the uid for online/offline, `conn` for connection events, `group` for
 * group events) and ignore an event whose seq is not above it; that drops a delivery
 * replayed within the window and one sent again after a lost answer.
 *
 * The answer tells pushwire what happened: 204 taken; 401 a bad or stale signature, 400 a
 * body that is not a delivery (neither is sent again); 500 when a handler threw, so the
 * same batch comes again (handlers must therefore take an event twice without harm:
 * the seq check above does that).
 */

declare(strict_types=1);

namespace Pushwire;

/** Why a delivery is refused; getCode() is the HTTP status to answer with. */
final class WebhookRefused extends \RuntimeException
{
}

final class Webhook
{
    /** How far, in seconds, a delivery's timestamp may be from this server's clock. */
    public const TOLERANCE = 300;

    /**
     * Checks a delivery and returns its events (each an array with `type`, `seq`, `node`,
     * `time_ms` and its subject's fields).
     *
     * @param string|string[] $secrets the events secret; during a rotation the new one
     *                                 and the old one (either may have signed it)
     * @throws WebhookRefused (code 401 or 400) with the reason
     */
    public static function verify(
        string|array $secrets,
        ?string $timestamp,
        ?string $signature,
        string $body,
        int $tolerance = self::TOLERANCE,
        ?int $now = null
    ): array {
        if ($timestamp === null || $signature === null) {
            throw new WebhookRefused('no X-Pushwire-Timestamp or X-Pushwire-Signature header', 401);
        }
        if (!ctype_digit($timestamp)) {
            throw new WebhookRefused('X-Pushwire-Timestamp is not a number of seconds', 401);
        }
        $now ??= time();
        if (abs($now - (int)$timestamp) > $tolerance) {
            throw new WebhookRefused('stale timestamp: more than ' . $tolerance . ' s from this clock', 401);
        }
        $given = trim($signature);
        $signed = false;
        foreach ((array)$secrets as $secret) {
            if (!is_string($secret) || $secret === '') {
                continue;
            }
            $want = 'sha256=' . hash_hmac('sha256', $timestamp . '.' . $body, $secret);
            if (hash_equals($want, $given)) {
                $signed = true;
                break;
            }
        }
        if (!$signed) {
            throw new WebhookRefused('bad signature', 401);
        }
        $delivery = json_decode($body, true);
        if (!is_array($delivery) || !isset($delivery['events']) || !is_array($delivery['events'])) {
            throw new WebhookRefused('the body is not {"events":[...]}', 400);
        }
        return array_values(array_filter($delivery['events'], 'is_array'));
    }

    /**
     * Calls $handler's method for each event, in order: `online` → onOnline($event),
     * `group_occupied` → onGroupOccupied($event), and so on; kinds it has no method for
     * are skipped.
     */
    public static function dispatch(array $events, object $handler): void
    {
        foreach ($events as $event) {
            $type = is_string($event['type'] ?? null) ? $event['type'] : '';
            $method = 'on' . str_replace('_', '', ucwords($type, '_'));
            if ($type !== '' && method_exists($handler, $method)) {
                $handler->$method($event);
            }
        }
    }

    /**
     * Serves one delivery in a web request: reads the body and the headers, verifies,
     * dispatches, answers (204, or the refusal's status with its reason as text).
     * Returns the events handled (an empty array when refused).
     *
     * @param string|string[] $secrets see verify()
     */
    public static function serve(string|array $secrets, object $handler, int $tolerance = self::TOLERANCE): array
    {
        if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
            self::answer(405, 'POST only');
            return [];
        }
        $body = (string)file_get_contents('php://input');
        try {
            $events = self::verify(
                $secrets,
                $_SERVER['HTTP_X_PUSHWIRE_TIMESTAMP'] ?? null,
                $_SERVER['HTTP_X_PUSHWIRE_SIGNATURE'] ?? null,
                $body,
                $tolerance
            );
        } catch (WebhookRefused $e) {
            self::answer($e->getCode(), $e->getMessage());
            return [];
        }
        try {
            self::dispatch($events, $handler);
        } catch (\Throwable $e) {
            // pushwire sends the batch again: a handler failed half-way.
            error_log('pushwire webhook: ' . get_class($e) . ': ' . $e->getMessage());
            self::answer(500, 'handler failed');
            return [];
        }
        self::answer(204, '');
        return $events;
    }

    private static function answer(int $status, string $text): void
    {
        http_response_code($status);
        if ($text !== '') {
            header('Content-Type: text/plain; charset=utf-8');
            echo $text, "\n";
        }
    }
}
