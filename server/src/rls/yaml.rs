//! A small YAML document tree that remembers where every node starts (line and column), so
//! that errors in a rate limit file name the line of the rule they are about. Built from
//! yaml-rust2's event parser; scalars stay text (as envoy ratelimit's Go structs read
//! them: `value: 1` is the string "1").
use std::collections::HashMap;

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Self {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One node of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar's text; `plain` when it was written without quotes (so `~`, `null` and an
    /// empty plain scalar mean "nothing").
    Scalar {
        /// The text.
        text: String,
        /// Written without quotes.
        plain: bool,
        /// Where it starts.
        pos: Pos,
    },
    /// A sequence.
    Seq(Vec<Node>, Pos),
    /// A mapping, in document order.
    Map(Vec<(String, Node)>, Pos),
}

impl Node {
    /// Where the node starts.
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. } | Node::Seq(_, pos) | Node::Map(_, pos) => *pos,
        }
    }

    /// Whether the node is YAML null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true, .. }
            if text.is_empty() || text == "~" || text.eq_ignore_ascii_case("null"))
    }

    /// What kind of node this is, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }
}

/// A parse failure with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where.
    pub pos: Pos,
    /// What.
    pub message: String,
}

/// A collection being built.
#[derive(Debug)]
struct Open {
    /// The sequence or mapping so far.
    node: Node,
    /// A mapping's key waiting for its value.
    key: Option<String>,
    /// The collection's anchor id (0: none).
    anchor: usize,
}

/// Builds the tree from parser events.
#[derive(Debug, Default)]
struct Builder {
    /// Open collections, innermost last.
    stack: Vec<Open>,
    /// Anchored nodes, by anchor id (aliases copy them).
    anchors: HashMap<usize, Node>,
    /// The finished documents.
    docs: Vec<Node>,
    /// The first problem met.
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                pos,
                message: message.to_owned(),
            });
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(open) = self.stack.last_mut() else {
            self.docs.push(node);
            return;
        };
        match &mut open.node {
            Node::Seq(items, _) => items.push(node),
            Node::Map(entries, map_pos) => match open.key.take() {
                Some(k) => entries.push((k, node)),
                None => match node {
                    Node::Scalar { text, pos, .. } => {
                        // A block mapping starts where its first key does (the parser's
                        // start mark may lie after it).
                        if entries.is_empty() {
                            *map_pos = pos;
                        }
                        open.key = Some(text)
                    }
                    other => {
                        // A placeholder key keeps the structure consistent.
                        open.key = Some(String::new());
                        self.fail(other.pos(), "mapping keys must be scalars");
                    }
                },
            },
            Node::Scalar { .. } => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(text, style, anchor, _) => self.push_value(
                Node::Scalar {
                    text,
                    plain: style == TScalarStyle::Plain,
                    pos,
                },
                anchor,
            ),
            Event::SequenceStart(anchor, _) => self.stack.push(Open {
                node: Node::Seq(Vec::new(), pos),
                key: None,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Open {
                node: Node::Map(Vec::new(), pos),
                key: None,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    self.push_value(open.node, open.anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.push_value(node, 0),
                None => self.fail(pos, "alias to an unknown anchor"),
            },
            _ => {}
        }
    }
}

/// Parses one YAML document (an empty text is a null scalar).
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| YamlError {
            pos: Pos::from(*e.marker()),
            message: e.info().to_owned(),
        })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    if builder.docs.len() > 1 {
        return Err(YamlError {
            pos: builder.docs[1].pos(),
            message: "one YAML document per file (found a second `---`)".into(),
        });
    }
    Ok(builder.docs.pop().unwrap_or(Node::Scalar {
        text: String::new(),
        plain: true,
        pos: Pos { line: 1, col: 1 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_lines() {
        let doc = parse("domain: d\ndescriptors:\n  - key: a\n    value: \"1\"\n").unwrap();
        let Node::Map(entries, _) = doc else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0, "domain");
        let Node::Seq(items, _) = &entries[1].1 else {
            panic!("not a list")
        };
        assert_eq!(items[0].pos().line, 3);
        let Node::Map(d, _) = &items[0] else {
            panic!("not a map")
        };
        assert_eq!(
            d[1].1,
            Node::Scalar {
                text: "1".into(),
                plain: false,
                pos: Pos { line: 4, col: 12 }
            }
        );
    }

    #[test]
    fn anchors_aliases_and_errors() {
        let doc = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        let Node::Map(entries, _) = doc else {
            panic!("not a map")
        };
        assert!(matches!(entries[1].1, Node::Map(..)));
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
        assert!(parse("").unwrap().is_null());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
