//! A line-aware YAML tree.
//!
//! The config is decoded by hand from this tree rather than with `#[derive(Deserialize)]` because
//! v0.3.13 is non-strict (unknown keys must become warnings, not errors), replica sections keep
//! every unrecognised scalar for the backends, and every error has to name the key and its line.

use std::fmt;

use serde_saphyr::{DuplicateKeyPolicy, Options};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// 1-based line of the node, or `None` when the parser could not tell.
    pub line: Option<usize>,
    /// Byte range of the node in the parsed text (used to recover a plain scalar's spelling).
    pub span: Option<(usize, usize)>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        let loc = s.referenced;
        let line = usize::try_from(loc.line()).ok().filter(|l| *l > 0);
        let span = loc.span();
        let span = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => usize::try_from(o).ok().zip(usize::try_from(l).ok()),
            _ => None,
        };
        Ok(Node {
            line,
            span,
            value: s.value,
        })
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(n) = a.next_element::<Node>()? {
            out.push(n);
        }
        Ok(Value::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = a.next_key::<Node>()? {
            let v = a.next_value::<Node>()?;
            out.push((k, v));
        }
        Ok(Value::Map(out))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// Deepest nesting accepted (see `parse`).
pub(crate) const MAX_DEPTH: usize = 16;

/// A parsed document: the first YAML document of the text, if any, and how many there were.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub root: Option<Node>,
    pub documents: usize,
}

/// A YAML syntax problem: line (when known) and message.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// Parses `text` into a tree.
///
/// Duplicate keys are passed through (the decoder warns, last wins, as yaml.v2 did); snippets are
/// off because the caller formats `file: line N: message` itself.
pub(crate) fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    options.emit_comments = false;
    // A config is at most 7 levels deep (dbs, db, replicas, replica, age, identities). Each level
    // of `Node` costs tens of KiB of stack in debug builds, so the library's default of 64 could
    // overflow a 2 MiB thread stack on hostile input; 16 cannot.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    options.budget = Some(budget);
    let docs: Vec<Node> =
        serde_saphyr::from_str_multiple_with_options(text, options).map_err(|e| {
            let e = e.without_snippet();
            let location = e.location();
            let mut message = e.to_string();
            if let Some(loc) = location {
                let suffix = format!(" at line {}, column {}", loc.line(), loc.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_owned();
                }
            }
            SyntaxError {
                line: location
                    .and_then(|l| usize::try_from(l.line()).ok())
                    .filter(|l| *l > 0),
                message,
            }
        })?;
    let documents = docs.len();
    Ok(Parsed {
        root: docs.into_iter().next(),
        documents,
    })
}

impl Node {
    /// The scalar as the user spelled it (`0755`, `yes`, `1e3` stay as written, like yaml.v2
    /// decoding into a Go string), or `None` for null and collections.
    pub fn scalar_text(&self, src: &str) -> Option<String> {
        let spelled = || {
            let (start, len) = self.span?;
            let raw = src.get(start..start.checked_add(len)?)?;
            // An alias, tag or anchor means the span is not the scalar itself.
            (!raw.is_empty() && !raw.starts_with(['*', '&', '!'])).then(|| raw.to_owned())
        };
        match &self.value {
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(spelled().unwrap_or_else(|| b.to_string())),
            Value::Int(i) => Some(spelled().unwrap_or_else(|| i.to_string())),
            Value::Float(x) => Some(spelled().unwrap_or_else(|| x.to_string())),
        }
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().root.unwrap()
    }

    fn map(n: &Node) -> &[(Node, Node)] {
        match &n.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn lines_of_keys_and_values() {
        let text = "# comment\naddr: ':9090'\ndbs:\n  - path: /x\n";
        let r = root(text);
        let m = map(&r);
        assert_eq!(m[0].0.line, Some(2));
        assert_eq!(m[0].1.scalar_text(text).as_deref(), Some(":9090"));
        assert_eq!(m[1].0.line, Some(3));
        let Value::Seq(items) = &m[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].line, Some(4));
    }

    #[test]
    fn scalars_keep_their_spelling() {
        let text = "a: 0755\nb: yes\nc: 1.50\nn: x\nd: 1e3\ne: ~\nf:\ng: \"q\"\nh: 123456789012345678901234567890\n";
        let r = root(text);
        let got: Vec<(Option<String>, Option<String>)> = map(&r)
            .iter()
            .map(|(k, v)| (k.scalar_text(text), v.scalar_text(text)))
            .collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            got,
            vec![
                (s("a"), s("0755")),
                (s("b"), s("yes")),
                (s("c"), s("1.50")),
                (s("n"), s("x")),
                (s("d"), s("1e3")),
                (s("e"), None),
                (s("f"), None),
                (s("g"), s("q")),
                (s("h"), s("123456789012345678901234567890")),
            ]
        );
    }

    #[test]
    fn duplicates_are_passed_through() {
        let r = root("a: 1\na: 2\n");
        assert_eq!(map(&r).len(), 2);
    }

    #[test]
    fn merge_keys_and_aliases() {
        let text = "base: &b {x: 1, y: two}\nm:\n  <<: *b\n  y: 2\nz: *b\n";
        let r = root(text);
        let m = map(&r);
        let merged = map(&m[1].1);
        let keys: Vec<_> = merged
            .iter()
            .map(|(k, _)| k.scalar_text(text).unwrap())
            .collect();
        assert!(
            keys.contains(&"x".to_owned()) && keys.contains(&"y".to_owned()),
            "{keys:?}"
        );
        let x = merged
            .iter()
            .find(|(k, _)| k.scalar_text(text).as_deref() == Some("x"))
            .unwrap();
        assert_eq!(x.1.scalar_text(text).as_deref(), Some("1"));
    }

    #[test]
    fn empty_documents() {
        assert!(parse("").unwrap().root.is_none());
        assert!(parse("# only a comment\n").unwrap().root.is_none());
        let p = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(p.documents, 2);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing() {
        for n in [MAX_DEPTH + 1, 100, 5000] {
            assert!(parse(&("- ".repeat(n) + "x")).is_err(), "{n}");
            assert!(parse(&"[".repeat(n)).is_err(), "{n}");
        }
        assert!(parse(&("- ".repeat(MAX_DEPTH - 1) + "x")).is_ok());
    }

    #[test]
    fn syntax_errors_carry_lines() {
        let e = parse("a: b\nc: [1, 2\n").unwrap_err();
        assert!(e.line.is_some(), "{e:?}");
        let e = parse("a: b\n c: d\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e:?}");
        assert!(!e.message.contains("column"), "{e:?}");
    }
}
