//! `application/x-www-form-urlencoded` decoding, for query strings and forms (the
//! browser port's `?token=`, web-msg-sender's `type=publish&to=…&content=…`).

/// The value of the first `name=` pair in `raw`, decoded; `None` if absent.
pub fn param(raw: &[u8], name: &str) -> Option<Vec<u8>> {
    pairs(raw).find_map(|(k, v)| (k == name.as_bytes()).then(|| decode(v)))
}

/// The `name=value` pairs of `raw`, undecoded; a pair without `=` has an empty value.
pub fn pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|&b| b == b'&')
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        })
}

/// `+` is a space and `%XX` a byte; a `%` not followed by two hex digits stays as it is.
pub fn decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match raw[i] {
            b'%' if i + 2 < raw.len() => {
                if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(param(b"a=1&token=x.y.z", "token"), Some(b"x.y.z".to_vec()));
        assert_eq!(
            param(b"token=a%2Eb%zz%4", "token"),
            Some(b"a.b%zz%4".to_vec())
        );
        assert_eq!(param(b"tokens=1", "token"), None);
        assert_eq!(decode(b"a+b%26c%41"), b"a b&cA");
        assert_eq!(decode(b"%4"), b"%4");
        assert_eq!(decode(b"%"), b"%");
        assert_eq!(
            pairs(b"x&y=").collect::<Vec<_>>(),
            [(&b"x"[..], &b""[..]), (b"y", b"")]
        );
    }
}
