//! JSON as a manifest must be read: one meaning only. `serde_json::Value` silently keeps the
//! last of two equal keys, while other readers (and other registries) may keep the first, so a
//! document with a duplicate key means different things to different readers. Here it is refused.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parse `bytes` as one JSON value, refusing duplicate keys in any object. The error says what
/// was wrong ("not JSON: …" or "duplicate key …").
pub fn strict(bytes: &[u8]) -> std::result::Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(v) = Strict::deserialize(&mut de).map_err(describe)?;
    de.end().map_err(describe)?;
    Ok(v)
}

fn describe(e: serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("duplicate key") { msg } else { format!("not JSON: {msg}") }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
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
    }
}
