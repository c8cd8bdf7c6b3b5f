//! Per-tool rules by role: denied calls never reach a worker, denied tools never appear in
//! tools/list, whether the worker answers in SSE or in JSON.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISS: &str = "https://issuer.test";
const SECRET: &str = "tool-rules-test-secret-0123456789abcdef";

fn token(sub: &str, roles: &[&str]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({"iss": ISS, "aud": "mcp", "sub": sub, "exp": now + 600, "roles": roles});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn start(worker_flags: &str) -> Gateway {
    std::env::set_var("TOOL_RULES_SECRET", SECRET);
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        r#"auth:
  issuers:
    - name: test
      issuer: {ISS}
      audiences: [mcp]
      algorithms: [HS256]
      secret_env: TOOL_RULES_SECRET
"#
    );
    let config = spawn_pool_config(port, admin, 1, &extra)
        .replace(
            "    upstream_path: /mcp\n",
            "    upstream_path: /mcp\n    tools:\n      - roles: [admin]\n        allow: [\"*\"]\n      - roles: [\"*\"]\n        allow: [\"*\"]\n        deny: [whoami, \"large_*\"]\n",
        )
        .replace("--id, \"{id}\"]", &format!("--id, \"{{id}}\"{worker_flags}]"));
    Gateway::start_with(&config, port, admin).await
}

fn client(tok: &str) -> reqwest::Client {
    bearer_client(tok)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    sid: Option<&str>,
    body: Value,
) -> (u16, String, String) {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(s) = sid {
        req = req.header("mcp-session-id", s);
    }
    let r = req
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{body}: {e:?}"));
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, r.text().await.unwrap_or_default())
}

fn tool_names(body: &str, id: i64) -> Vec<String> {
    let v = find_response(body, id).unwrap_or_else(|| panic!("no answer {id} in {body}"));
    v["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn denied_tools_are_refused_and_hidden_in_sse_answers() {
    let gw = start("").await;
    let user = client(&token("u1", &["user"]));
    let sid = raw_session(&user, &gw.url()).await;

    let (status, ctype, body) = post(
        &user,
        &gw.url(),
        Some(&sid),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let names = tool_names(&body, 2);
    assert!(names.contains(&"add".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "whoami" || n == "large_result"),
        "{names:?}"
    );

    let call = |id: i64, name: &str| json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{}}});
    let (status, _, body) = post(&user, &gw.url(), Some(&sid), call(3, "whoami")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -32005);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("whoami"),
        "{v}"
    );

    // Hiding a denied call in a batch does not help.
    let batch = json!([call(4, "add"), call(5, "large_result")]);
    let (_, _, body) = post(&user, &gw.url(), Some(&sid), batch).await;
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["error"]["code"], -32005, "{body}");

    // Allowed calls pass.
    let (status, _, body) = post(&user, &gw.url(), Some(&sid), json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}})).await;
    assert_eq!(status, 200);
    assert_eq!(
        result_text(&find_response(&body, 6).unwrap_or_default()),
        "3"
    );

    // Admins see and call everything.
    let admin = client(&token("root", &["admin"]));
    let asid = raw_session(&admin, &gw.url()).await;
    let (_, _, body) = post(
        &admin,
        &gw.url(),
        Some(&asid),
        json!({"jsonrpc":"2.0","id":7,"method":"tools/list"}),
    )
    .await;
    let names = tool_names(&body, 7);
    assert!(
        names.iter().any(|n| n == "whoami") && names.iter().any(|n| n == "large_result"),
        "{names:?}"
    );
    let (status, _, body) = post(&admin, &gw.url(), Some(&asid), call(8, "whoami")).await;
    assert_eq!(status, 200);
    assert!(
        find_response(&body, 8).is_some_and(|v| v.get("result").is_some()),
        "{body}"
    );

    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_refusals_total{reason=\"tool_denied\"} 2"),
        "{m}"
    );
}

#[tokio::test]
async fn denied_tools_are_hidden_in_json_answers() {
    let gw = start(", --stateless, --json-response").await;
    let user = client(&token("u2", &["user"]));
    let (status, ctype, body) = post(
        &user,
        &gw.url(),
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let (status, ctype, body) = post(
        &user,
        &gw.url(),
        None,
        json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        ctype.starts_with("application/json"),
        "JSON answer expected, got {ctype}"
    );
    let names = tool_names(&body, 2);
    assert!(names.contains(&"echo".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n == "whoami" || n.starts_with("large_")),
        "{names:?}"
    );
}
