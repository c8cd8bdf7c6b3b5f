//! `pools.<name>.stdio`: a stdio MCP server behind `mcp-worker stdio` bridges. Validated
//! here and turned into an ordinary spawned pool of bridges, so the request path and the
//! supervisor see nothing new.

use std::time::Duration;

use serde_saphyr::Location;

use super::super::file::{PoolFile, StdioFile};
use super::super::model::{PoolSource, SpawnConfig};
use super::Validator;

/// Bridges per pool, as for `spawn.count`.
const MAX_BRIDGES: usize = 64;
/// Children per bridge.
const MAX_CHILDREN: usize = 10_000;
const DEFAULT_MAX_CHILDREN: usize = 50;
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Bridges start fast (the stdio servers start per session, later).
const BRIDGE_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The bridge stops its children (each with its own grace) before it exits.
const BRIDGE_STOP_GRACE: Duration = Duration::from_secs(5);

impl Validator<'_> {
    pub(super) fn stdio_source(&mut self, at: &str, p: &PoolFile) -> Option<PoolSource> {
        let Some(st) = &p.stdio else {
            if let Some(c) = &p.count {
                self.err(
                    &c.referenced,
                    format!("{at}.count"),
                    "count belongs to stdio pools (spawn pools say spawn.count)",
                );
            }
            return None;
        };
        let mut ok = true;
        if let Some(s) = &p.spawn {
            self.err(
                &s.command.referenced,
                format!("{at}.spawn"),
                "a pool has either stdio or spawn, not both",
            );
            ok = false;
        }
        if let Some(u) = &p.upstreams {
            self.err(
                &u.referenced,
                format!("{at}.upstreams"),
                "a pool has either stdio or upstreams, not both",
            );
            ok = false;
        }
        let count = p.count.as_ref().map_or(1, |c| c.value);
        if let Some(c) = &p.count {
            if c.value == 0 || c.value > MAX_BRIDGES {
                self.err(
                    &c.referenced,
                    format!("{at}.count"),
                    format!("expected 1 to {MAX_BRIDGES}"),
                );
                ok = false;
            }
        }
        let args = self.stdio_args(&format!("{at}.stdio"), at, st);
        if !ok {
            return None;
        }
        let args = args?;
        let mut command = vec![st.bridge.clone().unwrap_or_else(|| "mcp-worker".into())];
        command.extend(args);
        Some(PoolSource::Spawn(SpawnConfig {
            command,
            count,
            env: Vec::new(),
            ready_timeout: BRIDGE_READY_TIMEOUT,
            stop_grace: BRIDGE_STOP_GRACE,
        }))
    }

    /// The bridge's arguments after its program name, or None after reporting errors.
    fn stdio_args(&mut self, at: &str, pool_at: &str, st: &StdioFile) -> Option<Vec<String>> {
        let mut ok = true;
        let pool = pool_at.strip_prefix("pools.").unwrap_or(pool_at);
        if st.command.value.is_empty() || st.command.value[0].trim().is_empty() {
            self.err(
                &st.command.referenced,
                format!("{at}.command"),
                "needs at least the program to run",
            );
            ok = false;
        }
        let isolation = match st.isolation.as_ref().map(|i| i.value.as_str()) {
            None | Some("per_session") => "per_session",
            Some("shared") => "shared",
            Some(other) => {
                let loc = st
                    .isolation
                    .as_ref()
                    .map_or(Location::UNKNOWN, |i| i.referenced);
                self.err(
                    &loc,
                    format!("{at}.isolation"),
                    format!("expected per_session or shared, got {other:?}"),
                );
                ok = false;
                "per_session"
            }
        };
        if st.pass_identity && isolation == "shared" {
            self.err(
                &Location::UNKNOWN,
                format!("{at}.pass_identity"),
                "needs isolation: per_session (a shared server serves many callers)",
            );
            ok = false;
        }
        let max_children = st
            .max_children
            .as_ref()
            .map_or(DEFAULT_MAX_CHILDREN, |m| m.value);
        if let Some(m) = &st.max_children {
            if m.value == 0 || m.value > MAX_CHILDREN {
                self.err(
                    &m.referenced,
                    format!("{at}.max_children"),
                    format!("expected 1 to {MAX_CHILDREN}"),
                );
                ok = false;
            }
        }
        for name in st.env.keys().chain(st.env_from.keys()) {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.err(
                    &Location::UNKNOWN,
                    format!("{at}.env"),
                    format!("{name:?} is not a valid variable name"),
                );
                ok = false;
            }
        }
        for (name, var) in &st.env_from {
            // Checked now so a missing secret is a load error, not a failing session;
            // the value itself is never read into the configuration.
            if std::env::var_os(&var.value).is_none() {
                self.err(
                    &var.referenced,
                    format!("{at}.env_from.{name}"),
                    format!("the gateway's environment has no variable {:?}", var.value),
                );
                ok = false;
            }
        }
        if let Some(cwd) = &st.cwd {
            if !std::path::Path::new(&cwd.value).is_dir() {
                self.err(
                    &cwd.referenced,
                    format!("{at}.cwd"),
                    format!("{:?} is not a directory", cwd.value),
                );
                ok = false;
            }
        }
        let start = st.start_timeout.map_or(DEFAULT_START_TIMEOUT, |d| d.0);
        let idle = st.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0);
        for (field, d) in [("start_timeout", start), ("idle_timeout", idle)] {
            if d.is_zero() {
                self.err(
                    &Location::UNKNOWN,
                    format!("{at}.{field}"),
                    "must be longer than zero",
                );
                ok = false;
            }
        }
        for (field, v) in [
            ("memory_limit_mb", st.memory_limit_mb.as_ref()),
            ("cpu_limit_secs", st.cpu_limit_secs.as_ref()),
        ] {
            if let Some(v) = v.filter(|v| v.value == 0) {
                self.err(&v.referenced, format!("{at}.{field}"), "must be at least 1");
                ok = false;
            }
        }
        if let Some(m) = st.max_line_bytes.as_ref().filter(|m| m.value < 1024) {
            self.err(
                &m.referenced,
                format!("{at}.max_line_bytes"),
                "must be at least 1024",
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        let mut args: Vec<String> = [
            "stdio",
            "--id",
            "{id}",
            "--listen",
            "127.0.0.1:{port}",
            "--pool",
            pool,
            "--isolation",
            isolation,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut opt = |k: &str, v: String| {
            args.push(k.to_string());
            args.push(v);
        };
        opt("--max-children", max_children.to_string());
        opt(
            "--start-timeout",
            humantime::format_duration(start).to_string(),
        );
        opt(
            "--idle-timeout",
            humantime::format_duration(idle).to_string(),
        );
        if let Some(cwd) = &st.cwd {
            opt("--cwd", cwd.value.clone());
        }
        for (k, v) in &st.env {
            opt("--env", format!("{k}={v}"));
        }
        for (k, var) in &st.env_from {
            opt("--env-from", format!("{k}={}", var.value));
        }
        if let Some(m) = &st.memory_limit_mb {
            opt("--memory-limit-mb", m.value.to_string());
        }
        if let Some(c) = &st.cpu_limit_secs {
            opt("--cpu-limit-secs", c.value.to_string());
        }
        if let Some(m) = &st.max_line_bytes {
            opt("--max-line-bytes", m.value.to_string());
        }
        if st.pass_identity {
            args.push("--pass-identity".into());
        }
        args.push("--".into());
        args.extend(st.command.value.iter().cloned());
        Some(args)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_and_validate;
    use crate::config::{ConfigError, GatewayConfig, PoolSource};

    fn yaml(pool: &str) -> String {
        format!(
            "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - path: /mcp\n    pool: p\npools:\n  p:\n{pool}"
        )
    }

    fn errors(pool: &str) -> Vec<ConfigError> {
        match parse_and_validate(&yaml(pool), "t.yaml") {
            Ok(_) => panic!("accepted:\n{pool}"),
            Err(e) => e.0,
        }
    }

    fn ok(pool: &str) -> GatewayConfig {
        parse_and_validate(&yaml(pool), "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn command(cfg: &GatewayConfig) -> (Vec<String>, usize) {
        match &cfg.pools[0].source {
            PoolSource::Spawn(s) => (s.command.clone(), s.count),
            other => panic!("not a spawned pool: {other:?}"),
        }
    }

    #[test]
    fn a_stdio_pool_becomes_spawned_bridges() {
        let cfg = ok(concat!(
            "    stdio:\n",
            "      command: [npx, -y, \"@modelcontextprotocol/server-everything\"]\n",
            "      isolation: shared\n",
            "      max_children: 5\n",
            "      env: { MODE: demo }\n",
            "      start_timeout: 5s\n",
            "      memory_limit_mb: 512\n",
            "    count: 2\n",
        ));
        let (cmd, count) = command(&cfg);
        assert_eq!(count, 2);
        let text = cmd.join(" ");
        assert!(
            text.starts_with("mcp-worker stdio --id {id} --listen 127.0.0.1:{port} --pool p"),
            "{text}"
        );
        for part in [
            "--isolation shared",
            "--max-children 5",
            "--start-timeout 5s",
            "--env MODE=demo",
            "--memory-limit-mb 512",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        assert!(
            text.ends_with("-- npx -y @modelcontextprotocol/server-everything"),
            "{text}"
        );
        // Defaults: per-session isolation, one bridge.
        let (cmd, count) = command(&ok("    stdio:\n      command: [my-server]\n"));
        assert_eq!(count, 1);
        assert!(cmd
            .join(" ")
            .contains("--isolation per_session --max-children 50"));
    }

    #[test]
    fn bad_stdio_fields_are_reported_with_their_line() {
        let errs = errors(concat!(
            "    stdio:\n",
            "      command: []\n",
            "      isolation: sometimes\n",
            "      max_children: 0\n",
            "      env_from: { TOKEN: STDIO_POOL_TEST_SURELY_UNSET_VAR }\n",
            "    count: 65\n",
        ));
        let find = |path: &str| {
            errs.iter()
                .find(|e| e.path == path)
                .unwrap_or_else(|| panic!("no error at {path}: {errs:?}"))
        };
        assert_eq!(find("pools.p.stdio.command").line, Some(9));
        let iso = find("pools.p.stdio.isolation");
        assert_eq!(iso.line, Some(10));
        assert!(
            iso.message.contains("per_session or shared"),
            "{}",
            iso.message
        );
        assert_eq!(find("pools.p.stdio.max_children").line, Some(11));
        let env = find("pools.p.stdio.env_from.TOKEN");
        assert_eq!(env.line, Some(12));
        assert!(env.message.contains("STDIO_POOL_TEST_SURELY_UNSET_VAR"));
        assert_eq!(find("pools.p.count").line, Some(13));
    }

    #[test]
    fn conflicting_stdio_settings_are_refused() {
        let errs = errors(concat!(
            "    stdio:\n",
            "      command: [srv]\n",
            "      isolation: shared\n",
            "      pass_identity: true\n",
        ));
        assert!(
            errs.iter().any(|e| e.path == "pools.p.stdio.pass_identity"),
            "{errs:?}"
        );
        let errs = errors(concat!(
            "    stdio:\n",
            "      command: [srv]\n",
            "    upstreams: [\"127.0.0.1:1\"]\n",
        ));
        assert!(
            errs.iter().any(|e| e.path == "pools.p.upstreams"),
            "{errs:?}"
        );
        let errs = errors(concat!(
            "    spawn:\n",
            "      command: [srv]\n",
            "    count: 2\n",
        ));
        assert!(errs.iter().any(|e| e.path == "pools.p.count"), "{errs:?}");
        let errs = errors(concat!(
            "    stdio:\n",
            "      command: [srv]\n",
            "      colour: blue\n",
        ));
        assert!(
            errs.iter()
                .any(|e| e.message.contains("unknown field `colour`")),
            "{errs:?}"
        );
    }
}
