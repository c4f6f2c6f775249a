<?php
// tests/php_webhook.rs: clients/php/Webhook.php under `php -S`, its handler writing each
// event it is given as one JSON line to $RECORD. An event with uid "boom" throws the
// first time it comes (a marker file remembers), to show the batch coming again.

declare(strict_types=1);

require_once __DIR__ . '/../../clients/php/Webhook.php';

final class Recorder
{
    public function __construct(private string $file)
    {
    }

    private function keep(array $event): void
    {
        if (($event['uid'] ?? null) === 'boom' && !file_exists($this->file . '.boom')) {
            touch($this->file . '.boom');
            throw new RuntimeException('the first boom fails');
        }
        file_put_contents($this->file, json_encode($event) . "\n", FILE_APPEND | LOCK_EX);
    }

    public function onOnline(array $e): void { $this->keep($e); }
    public function onOffline(array $e): void { $this->keep($e); }
    public function onConnect(array $e): void { $this->keep($e); }
    public function onBind(array $e): void { $this->keep($e); }
    public function onClose(array $e): void { $this->keep($e); }
    public function onGroupOccupied(array $e): void { $this->keep($e); }
    public function onGroupVacated(array $e): void { $this->keep($e); }
    public function onMessage(array $e): void { $this->keep($e); }
}

Pushwire\Webhook::serve((string)getenv('PUSHWIRE_EVENTS_SECRET'), new Recorder((string)getenv('RECORD')));
