//! JSON arguments, read as PHP's `json_decode($ext, true)` makes arrays of them, without
//! building a tree: every list stops at its limit, and a seed that refuses an entry says
//! why in a [`Fault`] cell.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::super::php;
use super::{BadRequest, Field, Limits, MAX_FIELD_BYTES, Scope, Select, Why, php_empty};

/// `ext` read with the seed `make` builds. A seed that refuses an entry says why in the
/// cell it is given, since serde_json turns its error into text with a position.
pub(super) fn json<'de, 'f, S: DeserializeSeed<'de>>(
    ext: &'de [u8],
    fault: &'f Fault,
    make: impl FnOnce(&'f Fault) -> S,
) -> Result<S::Value, Why> {
    let mut de = serde_json::Deserializer::from_slice(ext);
    let read = make(fault).deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    read.map_err(|e| fault.take().unwrap_or_else(|| Why::BadJson(e.to_string())))
}

/// Where a seed leaves the reason it refused an entry.
pub(super) type Fault = Cell<Option<Why>>;

/// Records `why` and returns the error that stops the read.
fn refuse<E: de::Error>(fault: &Fault, why: Why) -> E {
    let e = E::custom(BadRequest {
        cmd: 0,
        why: why.clone(),
    });
    fault.set(Some(why));
    e
}

/// One JSON value where GatewayWorker expects a name or a number.
enum Scalar {
    Str(String),
    Int(i64),
    /// An integer past `i64` (PHP makes it a float).
    Big,
    /// Anything else (float, bool, null, array, object), skipped whole.
    Other,
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(s))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(n).map_or(Scalar::Big, Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

impl Scalar {
    /// A connection id as PHP would find it as an array key: an integer, or a string
    /// that is one, inside `u32`. Anything else matches no connection.
    fn connection(&self) -> Option<u32> {
        match self {
            Scalar::Int(n) => u32::try_from(*n).ok(),
            Scalar::Str(s) => key_connection(s),
            _ => None,
        }
    }
}

/// An object key as a connection id (`"5"` is the key 5; `"05"` is no integer).
fn key_connection(key: &str) -> Option<u32> {
    match php::Key::from_bytes(key.as_bytes()) {
        php::Key::Int(n) => u32::try_from(n).ok(),
        php::Key::Str(_) => None,
    }
}

/// The values of a JSON array or object, each a uid or group (a string, or an integer
/// written in decimal, as PHP's array keys take both).
pub(super) struct NamesSeed<'f> {
    max: usize,
    max_bytes: usize,
    fault: &'f Fault,
}

impl<'f> NamesSeed<'f> {
    pub(super) fn new(max: usize, max_bytes: usize, fault: &'f Fault) -> NamesSeed<'f> {
        NamesSeed {
            max,
            max_bytes,
            fault,
        }
    }

    fn take<E: de::Error>(&self, names: &mut Vec<String>, value: Scalar) -> Result<(), E> {
        if names.len() == self.max {
            return Err(refuse(self.fault, Why::TooMany { max: self.max }));
        }
        let name = match value {
            Scalar::Str(s) => s,
            Scalar::Int(n) => n.to_string(),
            Scalar::Big | Scalar::Other => return Err(refuse(self.fault, Why::BadName)),
        };
        if name.len() > self.max_bytes {
            let max = self.max_bytes;
            return Err(refuse(self.fault, Why::NameTooLong { max }));
        }
        names.push(name);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for NamesSeed<'_> {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NamesSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array or object of names")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut names = Vec::new();
        while let Some(v) = seq.next_element::<Scalar>()? {
            self.take(&mut names, v)?;
        }
        Ok(names)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut names = Vec::new();
        while let Some((_, v)) = map.next_entry::<IgnoredAny, Scalar>()? {
            self.take(&mut names, v)?;
        }
        Ok(names)
    }
}

/// Connection ids from a JSON array or object: its values (`connections`,
/// `where.connection_id`) or its keys (`exclude`, which GatewayWorker tests with
/// `isset($exclude[$id])`). Entries that can name no connection are skipped, as they
/// match none in GatewayWorker. `null`, `false` and the like are no list: none.
struct ConnectionsSeed<'f> {
    max: usize,
    keys: bool,
    fault: &'f Fault,
}

impl ConnectionsSeed<'_> {
    fn push<E: de::Error>(&self, ids: &mut Vec<u32>, id: Option<u32>) -> Result<(), E> {
        if ids.len() == self.max {
            return Err(refuse(self.fault, Why::TooMany { max: self.max }));
        }
        ids.extend(id);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ConnectionsSeed<'_> {
    type Value = Vec<u32>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u32>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ConnectionsSeed<'_> {
    type Value = Vec<u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("connection ids")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
        let mut ids = Vec::new();
        let mut index = 0u64;
        while let Some(v) = seq.next_element::<Scalar>()? {
            // A JSON array's keys are its indexes.
            let id = if self.keys {
                u32::try_from(index).ok()
            } else {
                v.connection()
            };
            self.push(&mut ids, id)?;
            index += 1;
        }
        Ok(ids)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u32>, A::Error> {
        let mut ids = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
            let id = if self.keys {
                key_connection(&k)
            } else {
                v.connection()
            };
            self.push(&mut ids, id)?;
        }
        Ok(ids)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<u32>, E> {
        Ok(Vec::new())
    }
}

/// `sendToAll`'s `{"connections":{…}}` / `{"exclude":{…}}`. GatewayWorker checks
/// `connections` first; an object with neither means everyone.
pub(super) struct AllExt {
    pub(super) connections: Option<Vec<u32>>,
    pub(super) exclude: Vec<u32>,
}

pub(super) struct AllSeed<'f>(pub(super) usize, pub(super) &'f Fault);

impl<'de> DeserializeSeed<'de> for AllSeed<'_> {
    type Value = AllExt;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AllExt, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AllSeed<'_> {
    type Value = AllExt;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"connections":…} or {"exclude":…}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AllExt, A::Error> {
        let mut all = AllExt {
            connections: None,
            exclude: Vec::new(),
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "connections" => {
                    all.connections = Some(map.next_value_seed(ConnectionsSeed {
                        max: self.0,
                        keys: false,
                        fault: self.1,
                    })?);
                }
                "exclude" => {
                    all.exclude = map.next_value_seed(ConnectionsSeed {
                        max: self.0,
                        keys: true,
                        fault: self.1,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(all)
    }
}

/// `sendToGroup`'s `{"group":[…],"exclude":null|{…}}`.
pub(super) struct GroupExt {
    pub(super) groups: Vec<String>,
    pub(super) exclude: Vec<u32>,
}

pub(super) struct GroupSeed<'f>(pub(super) Limits, pub(super) &'f Fault);

impl<'de> DeserializeSeed<'de> for GroupSeed<'_> {
    type Value = GroupExt;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<GroupExt, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GroupSeed<'_> {
    type Value = GroupExt;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"group":[…],"exclude":…}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupExt, A::Error> {
        let limits = self.0;
        let mut groups = None;
        let mut exclude = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "group" => {
                    groups = Some(map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        limits.max_group_bytes,
                        self.1,
                    ))?);
                }
                "exclude" => {
                    exclude = map.next_value_seed(ConnectionsSeed {
                        max: limits.max_list,
                        keys: true,
                        fault: self.1,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(GroupExt {
            groups: groups.ok_or_else(|| de::Error::missing_field("group"))?,
            exclude,
        })
    }
}

/// `select`'s `{"fields":[…],"where":{…}}`.
pub(super) struct SelectSeed<'f>(pub(super) Limits, pub(super) &'f Fault);

impl<'de> DeserializeSeed<'de> for SelectSeed<'_> {
    type Value = Select;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Select, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SelectSeed<'_> {
    type Value = Select;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"fields":[…],"where":…}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Select, A::Error> {
        let limits = self.0;
        let mut fields = None;
        let mut scope = Scope::All;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "fields" => {
                    let names: Vec<String> = map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        MAX_FIELD_BYTES,
                        self.1,
                    ))?;
                    fields = Some(
                        names
                            .into_iter()
                            .map(|f| match f.as_str() {
                                "uid" => Field::Uid,
                                "groups" => Field::Groups,
                                "session" => Field::Session,
                                _ => Field::Other(f),
                            })
                            .collect(),
                    );
                }
                "where" => scope = map.next_value_seed(WhereSeed(limits, self.1))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Select {
            fields: fields.ok_or_else(|| de::Error::missing_field("fields"))?,
            scope,
        })
    }
}

/// `where`: PHP's `if ($where)` takes an empty array or object, `null`, `false`, `0`,
/// `""` and `"0"` for "no condition"; any other non-object value matches nothing.
struct WhereSeed<'f>(Limits, &'f Fault);

impl WhereSeed<'_> {
    fn nothing() -> Scope {
        Scope::Matching {
            groups: Vec::new(),
            uids: Vec::new(),
            connections: Vec::new(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for WhereSeed<'_> {
    type Value = Scope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scope, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for WhereSeed<'_> {
    type Value = Scope;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a where clause")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scope, A::Error> {
        let limits = self.0;
        let (mut groups, mut uids, mut connections) = (Vec::new(), Vec::new(), Vec::new());
        let mut any = false;
        while let Some(key) = map.next_key::<String>()? {
            any = true;
            match key.as_str() {
                "groups" => {
                    groups = map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        limits.max_group_bytes,
                        self.1,
                    ))?;
                }
                "uid" => {
                    uids = map.next_value_seed(NamesSeed::new(
                        limits.max_list,
                        limits.max_uid_bytes,
                        self.1,
                    ))?;
                }
                "connection_id" => {
                    connections = map.next_value_seed(ConnectionsSeed {
                        max: limits.max_list,
                        keys: false,
                        fault: self.1,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if any {
            Scope::Matching {
                groups,
                uids,
                connections,
            }
        } else {
            Scope::All
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scope, A::Error> {
        let mut any = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(if any {
            WhereSeed::nothing()
        } else {
            Scope::All
        })
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scope, E> {
        Ok(if php_empty(s) {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scope, E> {
        Ok(if n == 0 {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scope, E> {
        Ok(if n == 0 {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scope, E> {
        Ok(if n == 0.0 {
            Scope::All
        } else {
            WhereSeed::nothing()
        })
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scope, E> {
        Ok(if b { WhereSeed::nothing() } else { Scope::All })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scope, E> {
        Ok(Scope::All)
    }
}
