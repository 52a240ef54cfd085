//! Per-allocation attributes: the handle that groups an allocation and Calico's free-form
//! `secondary` map.
//!
//! A block stores each distinct [`Attribute`] once (Calico's `attributes` array) and every
//! allocated ordinal points at one of them, so thousands of allocations made with the same
//! handle and attributes cost one entry. [`Attrs`] shares its map behind an `Arc`: cloning
//! it, which the allocator does once per allocation, is a reference-count increment.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value as Json};

use crate::net::HandleId;

/// Calico's `secondary` attributes of an allocation: a JSON object, or JSON `null`.
///
/// calicoctl passes `{}` ([`Attrs::empty`]); Calico's Docker plugin passes `null` for
/// auto-assigned addresses ([`Attrs::null`], also the [`Default`]). Values may be any JSON
/// (Calico's own tests store numbers).
#[derive(Clone, Debug, Default)]
pub struct Attrs(Option<Arc<Map<String, Json>>>);

impl Attrs {
    /// JSON `null`.
    pub fn null() -> Attrs {
        Attrs(None)
    }

    /// The empty object `{}`.
    pub fn empty() -> Attrs {
        Attrs(Some(Arc::new(Map::new())))
    }

    /// An object with the given members.
    pub fn from_map(map: Map<String, Json>) -> Attrs {
        Attrs(Some(Arc::new(map)))
    }

    /// An object built from `(key, value)` pairs.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Attrs
    where
        K: Into<String>,
        V: Into<Json>,
    {
        Attrs::from_map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Converts a JSON value: an object or `null`; anything else is rejected.
    pub fn from_json(value: Json) -> Result<Attrs, String> {
        match value {
            Json::Null => Ok(Attrs::null()),
            Json::Object(map) => Ok(Attrs::from_map(map)),
            other => Err(format!(
                "secondary attributes must be an object or null, got {other}"
            )),
        }
    }

    /// The members, or `None` for `null`.
    pub fn as_map(&self) -> Option<&Map<String, Json>> {
        self.0.as_deref()
    }

    /// True for JSON `null`.
    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    /// One member's value.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.as_ref().and_then(|m| m.get(key))
    }

    /// The attributes as a JSON value.
    pub fn to_json(&self) -> Json {
        match &self.0 {
            None => Json::Null,
            Some(map) => Json::Object((**map).clone()),
        }
    }
}

impl PartialEq for Attrs {
    fn eq(&self, other: &Attrs) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Eq for Attrs {}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => s.serialize_none(),
            Some(map) => map.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Attrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attrs, D::Error> {
        Attrs::from_json(Json::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One entry of a block's `attributes` array: `{"handle_id": ..., "secondary": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// The handle grouping the allocation, if any (`handle_id`, `null` when absent).
    #[serde(rename = "handle_id")]
    pub handle: Option<HandleId>,
    /// Free-form attributes (`secondary`).
    #[serde(default)]
    pub secondary: Attrs,
}

impl Attribute {
    /// An attribute entry.
    pub fn new(handle: Option<HandleId>, secondary: Attrs) -> Attribute {
        Attribute { handle, secondary }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let a = Attribute::new(
            Some(HandleId::new("h1").unwrap()),
            Attrs::from_pairs([("key1", "value1")]),
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"handle_id":"h1","secondary":{"key1":"value1"}}"#
        );
        let b = Attribute::new(None, Attrs::null());
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"handle_id":null,"secondary":null}"#
        );
        let back: Attribute =
            serde_json::from_str(r#"{"handle_id":null,"secondary":{"a":1}}"#).unwrap();
        assert_eq!(back.secondary.get("a"), Some(&Json::from(1)));
        assert!(serde_json::from_str::<Attribute>(r#"{"handle_id":null,"secondary":3}"#).is_err());
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(Attrs::empty(), Attrs::empty());
        assert_ne!(Attrs::empty(), Attrs::null());
        assert_eq!(Attrs::from_pairs([("a", 1)]), Attrs::from_pairs([("a", 1)]));
    }
}
