//! A YAML document as a plain tree that keeps what `serde_yaml::Value`
//! would hide: every mapping entry in document order, duplicates included,
//! and non-string keys. Validation walks this tree so it can report every
//! problem with its path instead of stopping at the first one.

use std::fmt;

use serde::de::{
    self, Deserialize, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// Any integer YAML can write that fits in i128 (covers i64 and u64).
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; duplicate keys are kept.
    Map(Vec<(Node, Node)>),
    /// A node with an explicit `!tag`; profiles never use tags.
    Tagged(String, Box<Node>),
}

impl Node {
    /// What kind of value this is, for "got …" in error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
            Node::Tagged(..) => "a tagged value",
        }
    }
}

/// Parses one YAML document. Multiple documents, syntax errors and
/// pathological nesting are reported by serde_yaml with a location.
pub(crate) fn parse(text: &str) -> Result<Node, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Map(entries))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (tag, variant) = data.variant::<String>()?;
        let inner = variant.newtype_variant::<Node>()?;
        Ok(Node::Tagged(tag, Box::new(inner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_duplicate_keys_in_order() {
        let n = parse("a: 1\nb: x\na: 2.5\n").unwrap();
        assert_eq!(
            n,
            Node::Map(vec![
                (Node::Str("a".into()), Node::Int(1)),
                (Node::Str("b".into()), Node::Str("x".into())),
                (Node::Str("a".into()), Node::Float(2.5)),
            ])
        );
    }

    #[test]
    fn serde_yaml_value_rejects_duplicates_without_a_path() {
        // Why this tree exists: Value gives up at the first duplicate and only
        // knows a line/column, not the key path.
        let e = serde_yaml::from_str::<serde_yaml::Value>("a: 1\na: 2\n").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn scalars_and_tags() {
        assert_eq!(parse("").unwrap(), Node::Null);
        assert_eq!(parse("~").unwrap(), Node::Null);
        assert_eq!(parse("true").unwrap(), Node::Bool(true));
        assert_eq!(
            parse("18446744073709551615").unwrap(),
            Node::Int(u64::MAX.into())
        );
        assert_eq!(parse("-3").unwrap(), Node::Int(-3));
        assert_eq!(parse("'3'").unwrap(), Node::Str("3".into()));
        assert!(matches!(parse("!x 3").unwrap(), Node::Tagged(t, _) if t == "x"));
        assert!(parse("a: [").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
