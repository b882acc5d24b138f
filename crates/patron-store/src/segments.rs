//! Stored segment definitions and the dependency-cycle check every backend runs under its write
//! lock.

use std::collections::{BTreeMap, BTreeSet};

use patron_domain::Timestamp;

/// A segment definition as stored. The rule is CEL source text, checked by
/// `patron-segmentation` before it is stored; `depends_on` lists the stored segments the rule
/// names with `in_segment("…")` (built-in segments are not stored and not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    pub segment_id: String,
    pub display_name: String,
    pub description: String,
    pub rule: String,
    /// Sorted, without repeats.
    pub depends_on: Vec<String>,
    /// 1 when created, one more per update.
    pub revision: i64,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

/// Whether giving `segment` the dependencies `depends_on`, with every other segment's stored
/// `edges` (segment, depends on) unchanged, makes a circle. Returns the circle as ids from
/// `segment` back to `segment`.
pub fn find_cycle(
    edges: &[(String, String)],
    segment: &str,
    depends_on: &[String],
) -> Option<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        if from != segment {
            graph.entry(from.as_str()).or_default().push(to.as_str());
        }
    }
    graph.insert(segment, depends_on.iter().map(String::as_str).collect());
    // Depth-first search from `segment` for a path back to it.
    let mut path: Vec<&str> = vec![segment];
    let mut visited: BTreeSet<&str> = BTreeSet::new();
    fn walk<'a>(
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        target: &str,
        path: &mut Vec<&'a str>,
        visited: &mut BTreeSet<&'a str>,
    ) -> bool {
        let Some(&node) = path.last() else {
            return false;
        };
        for &next in graph.get(node).map(Vec::as_slice).unwrap_or_default() {
            if next == target {
                path.push(next);
                return true;
            }
            if visited.insert(next) {
                path.push(next);
                if walk(graph, target, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    if walk(&graph, segment, &mut path, &mut visited) {
        Some(path.into_iter().map(str::to_owned).collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let edges = vec![e("b", "c"), e("c", "a"), e("d", "a")];
        assert_eq!(
            find_cycle(&edges, "a", &["b".to_owned()]),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(
            find_cycle(&edges, "a", &["a".to_owned()]),
            Some(vec!["a".into(), "a".into()])
        );
        assert_eq!(
            find_cycle(&edges, "a", &["d".to_owned()]),
            Some(vec!["a".into(), "d".into(), "a".into()])
        );
        assert_eq!(find_cycle(&edges, "b", &["d".to_owned()]), None);
        // The segment's own stored edges are replaced, not added to.
        let edges = vec![e("a", "b"), e("b", "c")];
        assert_eq!(
            find_cycle(&edges, "c", &["a".to_owned()]),
            Some(vec!["c".into(), "a".into(), "b".into(), "c".into()])
        );
        assert_eq!(find_cycle(&edges, "a", &[]), None);
    }
}
