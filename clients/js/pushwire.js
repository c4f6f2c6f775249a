/*!
 * pushwire.js: the browser side of pushwire's protocol v1 (docs/protocol.md), no
 * dependencies. Also served by the daemon at GET /pushwire.js on its browser port.
 *
 *   var pw = new Pushwire('ws://127.0.0.1:1234/', { uid: 'uid1' });
 *   pw.onmessage = function (data, meta) { ... };   // meta.seq (null for a broadcast)
 *   pw.onstatus = function (status, detail) { ... }; // 'connected' | 'reconnecting' | 'not_recovered'
 *
 * It reconnects with jittered exponential backoff, resumes after the last message the
 * page processed (?pushwire=1&since=EPOCH:SEQ), drops duplicates, and acknowledges each message
 * (`a SEQ`, cumulative) once onmessage has returned, so a backend waiting with
 * `/push ID ack=MS` learns the page really got it. On 'not_recovered' the daemon could not
 * replay what was missed (restart, history trimmed or expired): refetch your state.
 *
 * Options: uid (string or number), or token (a string, or a function returning a string
 * or a Promise of one, called before every connect: refresh expired tokens there);
 * tokenInUrl (send the token as ?token= rather than as the first frame); minDelay (ms,
 * 500), maxDelay (ms, 30000).
 */
(function (root) {
  'use strict';

  function Pushwire(url, options) {
    if (!(this instanceof Pushwire)) {
      return new Pushwire(url, options);
    }
    var o = options || {};
    this.url = url;
    this.uid = o.uid;
    this.token = o.token;
    this.tokenInUrl = !!o.tokenInUrl;
    this.minDelay = o.minDelay || 500;
    this.maxDelay = o.maxDelay || 30000;
    this.onmessage = null;
    this.onstatus = null;
    this.ws = null;
    /** The last message processed: {epoch, seq}, or null before the first session. */
    this.last = null;
    this.attempt = 0;
    this.stopped = false;
    this.ackTimer = null;
    this.connect();
  }

  Pushwire.prototype.status = function (status, detail) {
    if (typeof this.onstatus === 'function') {
      this.onstatus(status, detail || {});
    }
  };

  Pushwire.prototype.connect = function () {
    var self = this;
    var token = typeof this.token === 'function' ? this.token() : this.token;
    Promise.resolve(token).then(function (token) {
      if (self.stopped) {
        return;
      }
      var query = 'pushwire=1';
      if (self.last) {
        query += '&since=' + self.last.epoch + ':' + self.last.seq;
      }
      if (token != null && self.tokenInUrl) {
        query += '&token=' + encodeURIComponent(token);
      }
      var ws = new WebSocket(self.url + (self.url.indexOf('?') < 0 ? '?' : '&') + query);
      self.ws = ws;
      ws.onopen = function () {
        if (token != null && !self.tokenInUrl) {
          ws.send(String(token));
        } else if (token == null) {
          ws.send(String(self.uid));
        }
      };
      ws.onmessage = function (e) {
        if (ws === self.ws) {
          self.frame(String(e.data));
        }
      };
      ws.onclose = function (e) {
        if (ws === self.ws) {
          self.retry(e.code, e.reason);
        }
      };
    }, function (err) {
      self.retry(0, 'token: ' + err);
    });
  };

  Pushwire.prototype.frame = function (text) {
    var tag = text.charAt(0);
    if (tag === 'm') {
      var sp = text.indexOf(' ', 2);
      var seq = Number(text.slice(2, sp));
      if (this.last && seq <= this.last.seq) {
        return; // already processed
      }
      var epoch = this.last.epoch;
      try {
        this.deliver(text.slice(sp + 1), { seq: seq, epoch: epoch });
      } finally {
        this.last = { epoch: epoch, seq: seq };
        this.ack();
      }
    } else if (tag === 'b') {
      this.deliver(text.slice(2), { seq: null, epoch: null });
    } else if (tag === 's') {
      var parts = text.split(' ');
      var at = parts[2].split(':');
      var detail = { status: parts[1], epoch: at[0], seq: Number(at[1]) };
      this.attempt = 0;
      this.last = { epoch: detail.epoch, seq: detail.seq };
      if (detail.status === 'not_recovered') {
        this.status('not_recovered', detail);
      }
      this.status('connected', detail);
    }
  };

  Pushwire.prototype.deliver = function (data, meta) {
    if (typeof this.onmessage === 'function') {
      this.onmessage(data, meta);
    }
  };

  /** Acknowledges the last processed message, once per burst (acks are cumulative). */
  Pushwire.prototype.ack = function () {
    var self = this;
    if (this.ackTimer !== null) {
      return;
    }
    this.ackTimer = setTimeout(function () {
      self.ackTimer = null;
      if (self.ws && self.ws.readyState === 1 && self.last) {
        self.ws.send('a ' + self.last.seq);
      }
    }, 0);
  };

  Pushwire.prototype.retry = function (code, reason) {
    this.ws = null;
    if (this.stopped) {
      return;
    }
    var base = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
    var delay = Math.round(base / 2 + Math.random() * base / 2);
    this.attempt = Math.min(this.attempt + 1, 30);
    this.status('reconnecting', { code: code, reason: reason, delay: delay });
    var self = this;
    setTimeout(function () { self.connect(); }, delay);
  };

  /** Closes for good (no reconnect). */
  Pushwire.prototype.close = function () {
    this.stopped = true;
    if (this.ws) {
      var ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
  };

  root.Pushwire = Pushwire;
  if (typeof module === 'object' && module.exports) {
    module.exports = Pushwire;
  }
})(typeof self !== 'undefined' ? self : this);
