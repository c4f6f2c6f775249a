#!/usr/bin/env bash
# nchan (nginx + libnginx-mod-nchan, Debian) as pushwire's load tool compares it
# (scripts/bench-doors.sh, bench/tests/bench_doors.rs): `worker_processes 2`, 20,000
# descriptors, logs off, `keepalive_requests` raised so one publisher connection lasts a
# run, nchan's defaults otherwise (memory store; a message buffer of 10 per channel for an
# hour, or none with `buf0`).
#
#   scripts/peers/nchan.sh start DIR PORT [default|buf0]   prints the master's pid
#   scripts/peers/nchan.sh stop DIR
#
# DIR holds the config, pid and temp files. Subscribers: ws://127.0.0.1:PORT/sub/CHANNEL
# (nchan sends nothing when the subscription is live); publishers: POST
# http://127.0.0.1:PORT/pub/CHANNEL with the message as body (201: a subscriber was there,
# 202: none). The workers are the master's children (pushwire-bench --server-children).
set -eu
stop() {
	local dir=$1 pid
	[[ -f $dir/nginx.pid ]] || return 0
	pid=$(cat "$dir/nginx.pid")
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$dir/nginx.pid"
}
case ${1:-} in
start)
	dir=$2 port=$3 mode=${4:-default}
	nginx=$(command -v nginx || echo /usr/sbin/nginx)
	module=/usr/lib/nginx/modules/ngx_nchan_module.so
	[[ -x $nginx && -f $module ]] || { echo "nchan.sh: apt-get install nginx libnginx-mod-nchan" >&2; exit 2; }
	buffer=""
	[[ $mode == buf0 ]] && buffer="nchan_message_buffer_length 0;"
	stop "$dir"
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<CONF
load_module $module;
worker_processes 2;
worker_rlimit_nofile 20000;
error_log $dir/error.log crit;
pid nginx.pid;
events {
    worker_connections 19990;
}
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path body;
    proxy_temp_path       proxy;
    fastcgi_temp_path     fastcgi;
    uwsgi_temp_path       uwsgi;
    scgi_temp_path        scgi;
    $buffer
    server {
        listen 127.0.0.1:$port;
        location ~ ^/sub/([^/]+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
        }
        location ~ ^/pub/([^/]+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
        }
    }
}
CONF
	ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
	"$nginx" -p "$dir" -c "$dir/nginx.conf" -g 'daemon on;' 2>"$dir/start.log" || { cat "$dir/start.log" >&2; exit 1; }
	for _ in $(seq 100); do
		[[ -s $dir/nginx.pid ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.05
	done
	cat "$dir/nginx.pid"
	;;
stop) stop "$2" ;;
*) echo "usage: $0 start DIR PORT [default|buf0] | stop DIR" >&2; exit 2 ;;
esac
