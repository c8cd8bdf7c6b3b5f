//! The request mix: which MCP operation the k-th request performs, and the
//! JSON-RPC request each operation sends.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// One kind of operation in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `tools/list`.
    ToolsList,
    /// `tools/call` of `add`.
    SmallCall,
    /// `tools/call` of `echo` with `--payload-bytes` of text.
    LargeCall,
    /// `tools/call` of `slow_count` (n=3, delay_ms=10) with a progress token.
    Progress,
    /// A whole session: initialize, initialized, `add`, DELETE.
    Churn,
}

impl Op {
    /// Every operation, in mix order.
    pub const ALL: [Op; 5] = [
        Op::ToolsList,
        Op::SmallCall,
        Op::LargeCall,
        Op::Progress,
        Op::Churn,
    ];

    /// The name used in `--workload` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::ToolsList => "tools_list",
            Op::SmallCall => "small_call",
            Op::LargeCall => "large_call",
            Op::Progress => "progress",
            Op::Churn => "churn",
        }
    }

    /// Parse a name used in `--workload`.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Steps of `slow_count` in the progress operation.
pub const PROGRESS_STEPS: u32 = 3;
/// Per-step delay of `slow_count` in the progress operation.
pub const PROGRESS_DELAY_MS: u64 = 10;
/// Largest accepted sum of weights (bounds the precomputed cycle).
pub const MAX_TOTAL_WEIGHT: u32 = 10_000;

/// Weighted operation mix. Selection is deterministic: a smooth weighted
/// round-robin cycle, so any window of `total` consecutive picks holds each
/// operation exactly `weight` times, evenly interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    cycle: Vec<Op>,
}

impl Mix {
    /// Parse `tools_list=1,small_call=8,...`. Operations not named get weight 0.
    pub fn parse(spec: &str) -> Result<Mix, String> {
        let mut weights: Vec<(Op, u32)> = Op::ALL.iter().map(|&op| (op, 0)).collect();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("workload entry `{part}` is not name=weight"))?;
            let op = Op::from_name(name.trim()).ok_or_else(|| {
                let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
                format!(
                    "unknown operation `{}` (known: {})",
                    name.trim(),
                    names.join(", ")
                )
            })?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("weight of `{}` is not a non-negative integer", op.name()))?;
            if let Some(slot) = weights.iter_mut().find(|(o, _)| *o == op) {
                slot.1 = w;
            }
        }
        Mix::from_weights(&weights)
    }

    /// Build a mix from explicit weights.
    pub fn from_weights(weights: &[(Op, u32)]) -> Result<Mix, String> {
        let total: u64 = weights.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 {
            return Err("workload has no operation with a weight above 0".into());
        }
        if total > u64::from(MAX_TOTAL_WEIGHT) {
            return Err(format!(
                "workload weights sum to {total}, more than {MAX_TOTAL_WEIGHT}"
            ));
        }
        let weights: Vec<(Op, u32)> = weights.to_vec();
        let total = total as i64;
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &(_, w)) in weights.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            cycle.push(weights[best].0);
        }
        Ok(Mix { weights, cycle })
    }

    /// The operation of the `k`-th pick.
    pub fn pick(&self, k: u64) -> Op {
        // `cycle` is never empty (total weight > 0).
        let len = self.cycle.len() as u64;
        self.cycle[(k % len) as usize]
    }

    /// Weight of `op`.
    pub fn weight(&self, op: Op) -> u32 {
        self.weights
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |&(_, w)| w)
    }

    /// Canonical `name=weight,...` form.
    pub fn spec(&self) -> String {
        self.weights
            .iter()
            .map(|(op, w)| format!("{}={w}", op.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What a successful answer must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `result.tools` is a non-empty array.
    ToolList,
    /// The first text content equals this.
    Text(String),
    /// The first text content has this many bytes.
    TextLen(usize),
}

/// A JSON-RPC request body to send, minus `jsonrpc`/`id` and `_meta`.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// JSON-RPC method.
    pub method: &'static str,
    /// Tool name for `tools/call` (also sent as `Mcp-Name` on 2026-07-28).
    pub tool: Option<&'static str>,
    /// Members of `params` besides `_meta`, as JSON text without braces.
    pub fields: Arc<str>,
    /// Whether to ask for progress notifications (token = request id).
    pub progress: bool,
    /// Progress notifications expected before the answer.
    pub expect_notifications: u32,
    /// Check applied to the result.
    pub expect: Expect,
}

/// Builds the requests of each operation; holds the large payload once.
#[derive(Debug, Clone)]
pub struct Requests {
    large_fields: Arc<str>,
    payload_bytes: usize,
    tools_list_fields: Arc<str>,
    progress_fields: Arc<str>,
}

/// Text of exactly `len` ASCII bytes.
pub fn payload_text(len: usize) -> String {
    const PATTERN: &[u8] = b"The quick brown fox jumps over the lazy dog 0123456789. ";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let take = (len - out.len()).min(PATTERN.len());
        out.extend(PATTERN[..take].iter().map(|&b| char::from(b)));
    }
    out
}

impl Requests {
    /// Prepare the requests for a payload of `payload_bytes`.
    pub fn new(payload_bytes: usize) -> Requests {
        let text = serde_json::Value::String(payload_text(payload_bytes)).to_string();
        Requests {
            large_fields: format!(r#""name":"echo","arguments":{{"text":{text}}}"#).into(),
            payload_bytes,
            tools_list_fields: "".into(),
            progress_fields: format!(
                r#""name":"slow_count","arguments":{{"n":{PROGRESS_STEPS},"delay_ms":{PROGRESS_DELAY_MS}}}"#
            )
            .into(),
        }
    }

    /// The `add` call of the `k`-th request (operands vary with `k`).
    pub fn small(&self, k: u64) -> RequestSpec {
        let a = k % 1000;
        let b = 7u64;
        RequestSpec {
            method: "tools/call",
            tool: Some("add"),
            fields: format!(r#""name":"add","arguments":{{"a":{a},"b":{b}}}"#).into(),
            progress: false,
            expect_notifications: 0,
            // The worker formats an f64 sum: integral values print without ".0".
            expect: Expect::Text(((a + b) as f64).to_string()),
        }
    }

    /// The request of a single-request operation (`None` for churn, which is
    /// a sequence).
    pub fn for_op(&self, op: Op, k: u64) -> Option<RequestSpec> {
        Some(match op {
            Op::ToolsList => RequestSpec {
                method: "tools/list",
                tool: None,
                fields: self.tools_list_fields.clone(),
                progress: false,
                expect_notifications: 0,
                expect: Expect::ToolList,
            },
            Op::SmallCall => self.small(k),
            Op::LargeCall => RequestSpec {
                method: "tools/call",
                tool: Some("echo"),
                fields: self.large_fields.clone(),
                progress: false,
                expect_notifications: 0,
                expect: Expect::TextLen(self.payload_bytes),
            },
            Op::Progress => RequestSpec {
                method: "tools/call",
                tool: Some("slow_count"),
                fields: self.progress_fields.clone(),
                progress: true,
                expect_notifications: PROGRESS_STEPS,
                expect: Expect::Text(format!("counted to {PROGRESS_STEPS}")),
            },
            Op::Churn => return None,
        })
    }
}

/// Why a result is not what the operation expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The tool reported an error (`isError: true`), with its text.
    ToolError(String),
    /// Anything else.
    Unexpected(String),
}

/// Check a JSON-RPC `result` against `expect`.
pub fn check_result(result: &serde_json::Value, expect: &Expect) -> Result<(), Mismatch> {
    if result.get("isError").and_then(serde_json::Value::as_bool) == Some(true) {
        let text = first_text(result).unwrap_or("");
        return Err(Mismatch::ToolError(truncate(text, 200).to_owned()));
    }
    check_content(result, expect).map_err(Mismatch::Unexpected)
}

fn check_content(result: &serde_json::Value, expect: &Expect) -> Result<(), String> {
    match expect {
        Expect::ToolList => match result.get("tools").and_then(serde_json::Value::as_array) {
            Some(tools) if !tools.is_empty() => Ok(()),
            _ => Err("tools/list returned no tools".into()),
        },
        Expect::Text(want) => match first_text(result) {
            Some(got) if got == want => Ok(()),
            Some(got) => Err(format!(
                "expected text {want:?}, got {:?}",
                truncate(got, 80)
            )),
            None => Err("result has no text content".into()),
        },
        Expect::TextLen(want) => match first_text(result) {
            Some(got) if got.len() == *want => Ok(()),
            Some(got) => Err(format!("expected {want} bytes of text, got {}", got.len())),
            None => Err("result has no text content".into()),
        },
    }
}

fn first_text(result: &serde_json::Value) -> Option<&str> {
    result
        .get("content")?
        .as_array()?
        .iter()
        .find_map(|c| c.get("text").and_then(serde_json::Value::as_str))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_default_mix_and_counts_in_a_cycle() {
        let mix = Mix::parse("tools_list=1,small_call=8,large_call=1,progress=0,churn=0")
            .expect("valid mix");
        assert_eq!(mix.weight(Op::SmallCall), 8);
        let picks: Vec<Op> = (0..10).map(|k| mix.pick(k)).collect();
        assert_eq!(picks.iter().filter(|&&o| o == Op::SmallCall).count(), 8);
        assert_eq!(picks.iter().filter(|&&o| o == Op::ToolsList).count(), 1);
        assert_eq!(picks.iter().filter(|&&o| o == Op::LargeCall).count(), 1);
        // Cyclic.
        assert_eq!(mix.pick(3), mix.pick(13));
        assert_eq!(
            mix.spec(),
            "tools_list=1,small_call=8,large_call=1,progress=0,churn=0"
        );
    }

    #[test]
    fn smooth_interleaving() {
        let mix = Mix::parse("small_call=2,large_call=2").expect("valid mix");
        let picks: Vec<Op> = (0..4).map(|k| mix.pick(k)).collect();
        assert_eq!(
            picks,
            vec![Op::SmallCall, Op::LargeCall, Op::SmallCall, Op::LargeCall]
        );
    }

    #[test]
    fn parse_errors() {
        assert!(Mix::parse("").is_err());
        assert!(Mix::parse("small_call=0").is_err());
        assert!(Mix::parse("nope=1").is_err());
        assert!(Mix::parse("small_call").is_err());
        assert!(Mix::parse("small_call=-1").is_err());
        assert!(Mix::parse("small_call=20000").is_err());
    }

    #[test]
    fn large_request_is_valid_json_of_the_payload() {
        let r = Requests::new(1000);
        let spec = r.for_op(Op::LargeCall, 0).expect("single request");
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", spec.fields)).expect("valid JSON");
        assert_eq!(v["arguments"]["text"].as_str().map(str::len), Some(1000));
        assert_eq!(spec.tool, Some("echo"));
        assert!(r.for_op(Op::Churn, 0).is_none());
    }

    #[test]
    fn check_results() {
        let ok = json!({"content":[{"type":"text","text":"10"}],"isError":false});
        assert!(check_result(&ok, &Expect::Text("10".into())).is_ok());
        assert!(check_result(&ok, &Expect::Text("11".into())).is_err());
        assert!(check_result(&ok, &Expect::TextLen(2)).is_ok());
        let err = json!({"content":[{"type":"text","text":"boom"}],"isError":true});
        assert!(check_result(&err, &Expect::TextLen(4)).is_err());
        assert!(check_result(&json!({"tools":[{"name":"a"}]}), &Expect::ToolList).is_ok());
        assert!(check_result(&json!({"tools":[]}), &Expect::ToolList).is_err());
        let small = Requests::new(0).small(3);
        assert_eq!(small.expect, Expect::Text("10".into()));
    }
}
