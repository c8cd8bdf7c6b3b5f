//! Per-tool rules. A route's rules are tried in order; the first whose `roles` include one
//! of the caller's roles (or `*`) decides: a tool is allowed when it matches `allow` and not
//! `deny`. When no rule applies the tool is denied. Names are matched exactly as the worker
//! will see them (case-sensitive), with `*`/`?` globs.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;

pub struct ToolRule {
    roles: Vec<String>,
    allow: GlobSet,
    deny: GlobSet,
}

pub struct ToolPolicy {
    rules: Vec<ToolRule>,
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = Glob::new(p).map_err(|e| format!("bad pattern {p:?}: {e}"))?;
        b.add(g);
    }
    b.build().map_err(|e| e.to_string())
}

impl ToolRule {
    pub fn new(roles: Vec<String>, allow: &[String], deny: &[String]) -> Result<ToolRule, String> {
        Ok(ToolRule {
            roles,
            allow: globs(allow)?,
            deny: globs(deny)?,
        })
    }

    fn applies_to(&self, roles: &[String]) -> bool {
        self.roles
            .iter()
            .any(|r| r == "*" || roles.iter().any(|c| c == r))
    }
}

impl ToolPolicy {
    pub fn new(rules: Vec<ToolRule>) -> ToolPolicy {
        ToolPolicy { rules }
    }

    pub fn allows(&self, roles: &[String], tool: &str) -> bool {
        match self.rules.iter().find(|r| r.applies_to(roles)) {
            Some(rule) => rule.allow.is_match(tool) && !rule.deny.is_match(tool),
            None => false,
        }
    }

    /// Remove the tools this caller may not call from a `tools/list` result message.
    /// Returns `None` when the message is not such a result or nothing was removed.
    pub fn filter_list_message(&self, roles: &[String], message: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(message).ok()?;
        let tools = v.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
        let before = tools.len();
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| self.allows(roles, name))
        });
        if tools.len() == before {
            return None;
        }
        serde_json::to_vec(&v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn policy() -> ToolPolicy {
        ToolPolicy::new(vec![
            ToolRule::new(s(&["admin"]), &s(&["*"]), &[]).unwrap(),
            ToolRule::new(s(&["*"]), &s(&["*"]), &s(&["large_*", "whoami"])).unwrap(),
        ])
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = policy();
        assert!(p.allows(&s(&["admin"]), "large_result"));
        assert!(!p.allows(&s(&["user"]), "large_result"));
        assert!(!p.allows(&[], "whoami"));
        assert!(p.allows(&[], "add"));
        // Exact, case-sensitive names.
        assert!(p.allows(&[], "WhoAmI"));
        let only_users =
            ToolPolicy::new(vec![ToolRule::new(s(&["user"]), &s(&["add"]), &[]).unwrap()]);
        assert!(
            !only_users.allows(&s(&["guest"]), "add"),
            "no rule applies: denied"
        );
        assert!(!only_users.allows(&s(&["user"]), "echo"));
    }

    #[test]
    fn list_results_lose_denied_tools() {
        let p = policy();
        let msg = br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"add"},{"name":"whoami"},{"name":"large_result"}]}}"#;
        let out = p.filter_list_message(&s(&["user"]), msg).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<_> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["add"]);
        assert_eq!(v["id"], 2);
        assert!(
            p.filter_list_message(&s(&["admin"]), msg).is_none(),
            "nothing removed for admins"
        );
        assert!(p.filter_list_message(&[], b"not json").is_none());
    }
}
