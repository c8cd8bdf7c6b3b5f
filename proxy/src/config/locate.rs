//! Find the line of a field path (`pools.tools.spawn.count`, `routes[0].pool`) in YAML text.
//! Used for problems found after deserialization, such as unknown fields. Block-style
//! mappings and sequences are tracked; a key written in flow style (`{ a: 1 }`) is found on
//! its parent's line.

use std::collections::HashMap;

/// Path → (line, column), both 1-based.
pub struct LineIndex {
    keys: HashMap<String, (u64, u64)>,
}

enum Seg {
    Key(String),
    Index(usize),
}

fn render(stack: &[(usize, Seg)]) -> String {
    let mut out = String::new();
    for (_, seg) in stack {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The key of `key: ...` at the start of `rest`, if any.
fn leading_key(rest: &str) -> Option<&str> {
    let rest = rest.trim_start();
    let (key, after) = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = rest.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = rest.find(':')?;
        (&rest[..end], &rest[end..])
    };
    let after = after.strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
        return None;
    }
    if key.is_empty() || key.contains(['{', '[', '#', ',']) {
        return None;
    }
    Some(key.trim())
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut keys = HashMap::new();
        let mut stack: Vec<(usize, Seg)> = Vec::new();
        let mut counters: HashMap<String, usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line_no = n as u64 + 1;
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut indent = raw.len() - trimmed.len();
            let mut rest = trimmed;
            while rest == "-" || rest.starts_with("- ") {
                while stack.last().is_some_and(|(i, s)| {
                    *i > indent || (*i == indent && matches!(s, Seg::Index(_)))
                }) {
                    stack.pop();
                }
                let parent = render(&stack);
                let c = counters.entry(parent).or_insert(0);
                let idx = *c;
                *c += 1;
                stack.push((indent, Seg::Index(idx)));
                let after = rest.get(1..).unwrap_or("");
                let inner = after.trim_start();
                indent += 1 + (after.len() - inner.len());
                rest = inner;
            }
            if let Some(key) = leading_key(rest) {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                stack.push((indent, Seg::Key(key.to_string())));
                let path = render(&stack);
                counters.retain(|k, _| !k.starts_with(&path) || k.len() == path.len());
                counters.remove(&path);
                keys.entry(path).or_insert((line_no, indent as u64 + 1));
            }
        }
        LineIndex { keys }
    }

    /// The line and column of `path`, or of its nearest ancestor found.
    pub fn find(&self, path: &str) -> Option<(u64, u64)> {
        let mut p = path;
        loop {
            if let Some(at) = self.keys.get(p) {
                return Some(*at);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "listen: x\nroutes:\n  - path: /a\n    pool: p\n  - path: /b\n    pool: q\npools:\n  p:\n    spawn:\n      command: [a]\n      colour: blue\n    health: { interval: 5s }\nlist:\n- a: 1\n- a: 2\n";

    #[test]
    fn finds_nested_keys_and_items() {
        let ix = LineIndex::new(TEXT);
        assert_eq!(ix.find("listen"), Some((1, 1)));
        assert_eq!(ix.find("routes[0].pool"), Some((4, 5)));
        assert_eq!(ix.find("routes[1].path"), Some((5, 5)));
        assert_eq!(ix.find("pools.p.spawn.colour"), Some((11, 7)));
        // Flow style: the parent's line.
        assert_eq!(ix.find("pools.p.health.interval"), Some((12, 5)));
        assert_eq!(ix.find("list[1].a"), Some((15, 3)));
        assert_eq!(ix.find("nothing"), None);
    }
}
