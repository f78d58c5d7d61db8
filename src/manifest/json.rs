//! JSON as a manifest must be read: one meaning only. `serde_json::Value` silently keeps the
//! last of two equal keys, while other readers (and other registries) may keep the first, so a
//! document with a duplicate key means different things to different readers. Here it is refused.
//!
//! Parsed JSON takes up to 16 times the bytes it came from (a 4 MiB array of zeros is two million
//! values of 32 bytes each, 70 MB measured), so a document may hold at most [`MAX_VALUES`] values:
//! the parse stops there, having built no more, and parsing any manifest costs a few MiB.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::limits::MAX_VALUES;

/// Parse `bytes` as one JSON value, refusing duplicate keys in any object. The error says what
/// was wrong ("not JSON: …" or "duplicate key …").
pub fn strict(bytes: &[u8]) -> std::result::Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let count = Cell::new(0);
    let v = Strict(&count).deserialize(&mut de).map_err(describe)?;
    de.end().map_err(describe)?;
    Ok(v)
}

fn describe(e: serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("duplicate key") || msg.starts_with(TOO_MANY) { msg } else { format!("not JSON: {msg}") }
}

const TOO_MANY: &str = "more than";

/// One value, counted against [`MAX_VALUES`] with every value inside it.
#[derive(Clone, Copy)]
struct Strict<'c>(&'c Cell<usize>);

impl Strict<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        let n = self.0.get() + 1;
        if n > MAX_VALUES {
            return Err(E::custom(format!("{TOO_MANY} {MAX_VALUES} JSON values")));
        }
        self.0.set(n);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            // A key costs what a value does.
            self.count()?;
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth_and_nothing_else_changes() {
        assert!(strict(br#"{"a":1,"a":2}"#).unwrap_err().starts_with("duplicate key \"a\""));
        assert!(strict(br#"{"x":[{"b":{"c":1,"c":1}}]}"#).unwrap_err().contains("duplicate key \"c\""));
        let text = br#"{"a":[1,-2,3.5,"s",null,true,{"b":{}}],"c":"\u00e9"}"#;
        let expected: Value = serde_json::from_slice(text).expect("test input is valid");
        assert_eq!(strict(text).expect("test input is valid"), expected);
        assert!(strict(b"{} x").unwrap_err().starts_with("not JSON"));
        assert!(strict(b"{\"a\":").unwrap_err().starts_with("not JSON"));
        // Values are counted at any depth, keys included.
        let at_most = format!("[{}0]", "0,".repeat(MAX_VALUES - 2));
        assert!(strict(at_most.as_bytes()).is_ok());
        let over = format!("[{}0]", "0,".repeat(MAX_VALUES - 1));
        assert!(strict(over.as_bytes()).unwrap_err().starts_with("more than 100000 JSON values"));
        let keys = format!("{{{}\"x\":0}}", (0..MAX_VALUES / 2).map(|i| format!("\"k{i}\":0,")).collect::<String>());
        assert!(strict(keys.as_bytes()).unwrap_err().contains("JSON values"));
    }
}
