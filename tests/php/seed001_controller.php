<?php
// Seed 001's ThinkPHP 5.1 controller (ChatRoom::bind and ::sendMessage), as the seed wrote
// them but for the Register's address, run with php-cli by tests/gateway_door.rs:
//
//   php seed001_controller.php bind        REGISTER CLIENT_ID UID GROUP
//   php seed001_controller.php sendMessage REGISTER UID
//   php seed001_controller.php sendGroup   REGISTER GROUP
//
// The seed's `use GatewayClient\Gateway;` is the test GatewayClient here (the project holds
// no copy of the library: tests/php/Gateway.php is written from the protocol).
require __DIR__ . '/Gateway.php';

use PushwireTest\Gateway;

[$_, $action, $register] = $argv;

class ChatRoom
{
    public $userId;
    public $groupId;
    public $clientId;
    public $register;

    /* 用户登录后初始化以及绑定client_id */
    public function bind()
    {
        // 设置GatewayWorker服务的Register服务ip和端口,请根据实际情况改成实际值
        Gateway::$registerAddress = $this->register;
        $uid = $this->userId;
        $group_id = $this->groupId;
        $client_id = $this->clientId;
        // client_id与uid绑定
        Gateway::bindUid($client_id, $uid);
        // 加入某个群组(可调用多次加入多个群组)
        Gateway::joinGroup($client_id, $group_id);
    }

    public function sendMessage()
    {
        $uid = $this->userId;
        $group = $this->groupId;
        $message = json_encode([
            'type' => 'say',
            'msg' => 'Hello ThinkPHP5'
        ]);
        Gateway::$registerAddress = $this->register;
        // 向任意uid的网站页面发送数据
        Gateway::sendToUid($uid, $message);
    }

    public function sendGroup()
    {
        $group = $this->groupId;
        $message = json_encode([
            'type' => 'say',
            'msg' => 'Hello group'
        ]);
        Gateway::$registerAddress = $this->register;
        // 向任意群组的网站页面发送数据
        Gateway::sendToGroup($group, $message);
    }
}

$c = new ChatRoom();
$c->register = $register;
switch ($action) {
    case 'bind':
        [, , , $c->clientId, $c->userId, $c->groupId] = $argv;
        $c->bind();
        break;
    case 'sendMessage':
        $c->userId = $argv[3];
        $c->sendMessage();
        break;
    case 'sendGroup':
        $c->groupId = $argv[3];
        $c->sendGroup();
        break;
}
echo "done\n";
