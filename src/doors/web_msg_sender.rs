//! web-msg-sender's push API on the HTTP door (`GET|POST /?type=publish&to=UID&content=TEXT`):
//! its form (a query, `application/x-www-form-urlencoded` or `multipart/form-data`), the
//! HTML escaping its pages expect, and its bare `ok` / `offline` / `fail` answers. What a
//! publish means is the service's (`service::publish`), so it reaches every node.

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, StatusCode};

use super::http::{HttpReply, bare, text};
use crate::state::State;
use crate::wire::Payload;

/// web-msg-sender's push API: `type=publish&to=UID&content=TEXT` in the query or a form
/// (`application/x-www-form-urlencoded`, or `multipart/form-data` as PHP's curl posts an
/// array). TEXT goes to every connection of UID (every bound connection without `to`)
/// with the HTML escaping web-msg-sender applies (`& < > " '`), since pages written for
/// it insert it as HTML. Answers exactly `ok`, `offline` (no connection of UID took it)
/// or `fail` (not a publish request), without a newline, as web-msg-sender does: PHP
/// callers compare the body with `'ok'`. The service says what it means, so a publish
/// reaches the tabs on every node in cluster mode.
pub(super) async fn web_msg_sender(
    query: Option<&str>,
    form: Option<Form>,
    ctx: &State,
) -> HttpReply {
    // A form with any field wins whole, as `$_POST = $_POST ? $_POST : $_GET` does.
    let params = match form {
        Some(Form { fields, params }) if fields > 0 => params,
        _ => {
            let mut params = Params::default();
            if let Some(q) = query {
                params.read(q.as_bytes());
            }
            params
        }
    };
    if params.kind.as_deref() != Some("publish") {
        return bare(StatusCode::OK, "fail");
    }
    // The push port's line limit bounds what browsers are sent: the escaped text, up to
    // six times the form's.
    let content = params.content.as_deref().unwrap_or("");
    let max = ctx.config.max_line_bytes;
    if escaped_len(content) > max {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("content larger than {max} bytes once HTML-escaped"),
        );
    }
    let payload = Payload::from(html_escape(content));
    let to = params.to.as_deref().filter(|to| !to.is_empty());
    let reached = crate::service::publish(ctx, to, &payload).resolve().await;
    bare(StatusCode::OK, if reached { "ok" } else { "offline" })
}

#[derive(Default)]
struct Params {
    kind: Option<String>,
    to: Option<String>,
    content: Option<String>,
}

impl Params {
    /// Reads `application/x-www-form-urlencoded` pairs; later ones win. Invalid UTF-8
    /// becomes U+FFFD. Returns how many fields (named pairs) there were.
    fn read(&mut self, raw: &[u8]) -> usize {
        let mut fields = 0;
        for (k, v) in crate::urlencoded::pairs(raw) {
            if k.is_empty() {
                continue;
            }
            fields += 1;
            // Names are form-encoded too (`t%79pe`), as PHP decodes them.
            self.set(&crate::urlencoded::decode(k), &crate::urlencoded::decode(v));
        }
        fields
    }

    fn set(&mut self, name: &[u8], value: &[u8]) {
        let slot = match name {
            b"type" => &mut self.kind,
            b"to" => &mut self.to,
            b"content" => &mut self.content,
            _ => return,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
}

/// A posted form: its fields, and how many there were (PHP's `$_POST` is "set" when
/// there is at least one).
pub(super) struct Form {
    fields: usize,
    params: Params,
}

impl Form {
    pub(super) fn read(body: &[u8], multipart: Option<&[u8]>) -> Form {
        let mut params = Params::default();
        let fields = match multipart {
            Some(boundary) => read_multipart(body, boundary, &mut params),
            None => params.read(body),
        };
        Form { fields, params }
    }
}

/// The boundary of a `multipart/form-data` request, if it is one.
pub(super) fn multipart_boundary(req: &Request<Incoming>) -> Option<Vec<u8>> {
    let ct = req.headers().get(CONTENT_TYPE)?.as_bytes();
    let (mime, params) = match ct.iter().position(|&b| b == b';') {
        Some(i) => (&ct[..i], &ct[i + 1..]),
        None => (ct, &[][..]),
    };
    if !mime
        .trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
    {
        return None;
    }
    params.split(|&b| b == b';').find_map(|p| {
        let p = p.trim_ascii();
        let (k, v) = p.split_at_checked(9)?;
        if !k.eq_ignore_ascii_case(b"boundary=") {
            return None;
        }
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_vec())
    })
}

/// Reads the fields of a `multipart/form-data` body (RFC 7578) into `params`; parts that
/// are files (a `filename`) are skipped, as PHP keeps them out of `$_POST`. Returns how
/// many fields there were.
fn read_multipart(body: &[u8], boundary: &[u8], params: &mut Params) -> usize {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut fields = 0;
    for part in split(body, &delimiter).skip(1) {
        // After a delimiter: `--` ends the body, else CRLF, headers, CRLF CRLF, value
        // up to the CRLF before the next delimiter.
        if part.starts_with(b"--") {
            break;
        }
        let Some(part) = part.strip_prefix(b"\r\n") else {
            break;
        };
        let Some(end) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let (head, value) = (&part[..end], &part[end + 4..]);
        let value = value.strip_suffix(b"\r\n").unwrap_or(value);
        let disposition = head
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .find(|l| l.len() > 20 && l[..20].eq_ignore_ascii_case(b"content-disposition:"));
        let Some(disposition) = disposition else {
            continue;
        };
        if find(disposition, b"filename=").is_some() {
            continue;
        }
        let Some(name) = disposition_name(disposition) else {
            continue;
        };
        fields += 1;
        params.set(name, value);
    }
    fields
}

/// The `name="..."` of a `Content-Disposition: form-data` line.
fn disposition_name(line: &[u8]) -> Option<&[u8]> {
    let at = line
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .find(|p| p.starts_with(b"name="))?;
    let v = &at[5..];
    Some(
        v.strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v),
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// `hay` cut at each `sep`.
fn split<'a>(hay: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = Some(hay);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r, sep) {
            Some(i) => {
                rest = Some(&r[i + sep.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The length of `s` after [`html_escape`].
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'&' => 5,
            b'<' | b'>' => 4,
            b'"' | b'\'' => 6,
            _ => 1,
        })
        .sum()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(escaped_len(s));
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#039;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let mut p = Params::default();
        p.read(b"type=publish&to=u%201&content=a+b%26c%zz&x=1");
        assert_eq!(p.kind.as_deref(), Some("publish"));
        assert_eq!(p.to.as_deref(), Some("u 1"));
        assert_eq!(p.content.as_deref(), Some("a b&c%zz"));
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#039;&amp;&#039;&lt;/a&gt;"
        );
        let mut q = Params::default();
        q.read(b"t%79pe=publish&%74o=u2");
        assert_eq!(
            (q.kind.as_deref(), q.to.as_deref()),
            (Some("publish"), Some("u2"))
        );
        assert_eq!(Params::default().read(b""), 0);
        assert_eq!(Params::default().read(b"&=x&"), 0);
        assert_eq!(Params::default().read(b"to=u1&x"), 2);
    }

    #[test]
    fn multipart_forms() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\npublish\r\n\
            --XyZ\r\ncontent-disposition: form-data; name=\"content\"\r\n\r\na\r\n--Xy b\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"to\"; filename=\"f\"\r\n\r\nfile\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\nu1\r\n--XyZ--\r\n";
        let form = Form::read(body, Some(b"XyZ"));
        assert_eq!(form.fields, 3);
        assert_eq!(form.params.kind.as_deref(), Some("publish"));
        assert_eq!(form.params.content.as_deref(), Some("a\r\n--Xy b"));
        assert_eq!(form.params.to.as_deref(), Some("u1"));
        assert_eq!(Form::read(b"--XyZ--\r\n", Some(b"XyZ")).fields, 0);
        assert_eq!(Form::read(b"garbage", Some(b"XyZ")).fields, 0);
    }

    #[test]
    fn escaped_lengths() {
        for s in ["", "plain", r#"<a href="x">'&'</a>"#, "é'<"] {
            assert_eq!(escaped_len(s), html_escape(s).len(), "{s}");
        }
    }
}
