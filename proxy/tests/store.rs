//! The data layer against real databases: an SQLite file in a temporary directory and the
//! PostgreSQL server at `postgres://postgres@127.0.0.1:5432/test` (override with
//! `MCP_PROXY_TEST_POSTGRES`). Each PostgreSQL test works in a schema of its own, dropped at
//! the end, so parallel runs do not collide. An unreachable PostgreSQL fails the tests.

use std::collections::{BTreeMap, BTreeSet};

mod common;

use common::db::{PgSchema, SqliteDb};
use mcp_proxy::store::{
    NewApiKey, NewAuditEvent, NewRefreshToken, NewSigningKey, OAuthClient, OAuthCode, OAuthGrant,
    Store, StoreError,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{PgPool, Row, SqlitePool};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn hash_of(seed: &str) -> String {
    // Not a real SHA-256, just 64 hex characters unique per seed, as the column expects.
    let hex: String = seed.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0>64}")
}

// ---------------------------------------------------------------------------------------------
// Databases

/// Pools for looking inside a test database directly.
async fn sqlite_inspect_pool(db: &SqliteDb) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db.url())
        .await
        .expect("open the SQLite file for inspection")
}

async fn pg_inspect_pool(pg: &PgSchema) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url())
        .await
        .expect("connect to PostgreSQL for inspection")
}

/// Runs `case` against a fresh, migrated store on each backend.
macro_rules! on_both_backends {
    ($name:ident, $case:path) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = super::SqliteDb::new("mcp-proxy-store");
                let store = mcp_proxy::store::Store::connect(&db.url(), true)
                    .await
                    .expect("connect to SQLite");
                assert_eq!(store.backend(), mcp_proxy::store::Backend::Sqlite);
                $case(store.clone()).await;
                store.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let schema = super::PgSchema::new("store_test").await;
                let store = mcp_proxy::store::Store::connect(&schema.url(), true)
                    .await
                    .expect("connect to PostgreSQL");
                assert_eq!(store.backend(), mcp_proxy::store::Backend::Postgres);
                $case(store.clone()).await;
                store.close().await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Migrations

async fn migrate_twice(url: &str) {
    let store = Store::connect(url, false).await.expect("connect");
    let first = store.migrate().await.expect("first migration run");
    assert!(!first.is_empty(), "no migration applied");
    assert!(first.iter().all(|m| m.newly_applied), "{first:?}");
    assert_eq!(first[0].version, 1);
    assert_eq!(first[0].description, "identity");

    let second = store.migrate().await.expect("second migration run");
    assert_eq!(
        second.iter().map(|m| m.version).collect::<Vec<_>>(),
        first.iter().map(|m| m.version).collect::<Vec<_>>()
    );
    assert!(second.iter().all(|m| !m.newly_applied), "{second:?}");
    store.close().await;

    // And once more through connect(.., true) on a fresh pool.
    let again = Store::connect(url, true)
        .await
        .expect("connect and migrate");
    again.close().await;
}

#[tokio::test]
async fn sqlite_migrations_apply_twice() {
    let db = SqliteDb::new("mcp-proxy-store");
    migrate_twice(&db.url()).await;
    assert!(
        db.dir.join("nested/gateway.db").is_file(),
        "database file not created"
    );
    let pool = sqlite_inspect_pool(&db).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .expect("read journal_mode");
    assert_eq!(mode, "wal");
    pool.close().await;
}

#[tokio::test]
async fn postgres_migrations_apply_twice() {
    let schema = PgSchema::new("store_test").await;
    migrate_twice(&schema.url()).await;
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let store = Store::connect("sqlite::memory:", true)
        .await
        .expect("in-memory SQLite");
    let user = store
        .create_user(
            "mem@x.io",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            &[],
        )
        .await
        .expect("create user");
    assert_eq!(store.get_user(&user.id).await.expect("get"), Some(user));
    store.close().await;
}

/// table -> column -> (coarse type class, nullable)
type Schema = BTreeMap<String, BTreeMap<String, (String, bool)>>;

fn pg_class(data_type: &str) -> String {
    match data_type {
        "text" | "character varying" => "text",
        "bigint" => "int64",
        "integer" | "smallint" => "int32-or-less",
        "boolean" => "boolean",
        "bytea" => "bytes",
        other => return format!("other:{other}"),
    }
    .to_owned()
}

/// SQLite's type affinity rules, plus: a 0/1-checked INTEGER is the boolean of the PostgreSQL
/// set.
fn sqlite_class(declared: &str, column: &str, table_sql: &str) -> String {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        if table_sql.contains(&format!("CHECK ({column} IN (0, 1))")) {
            "boolean"
        } else {
            "int64"
        }
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "text"
    } else if t.contains("BLOB") {
        "bytes"
    } else {
        return format!("other:{declared}");
    }
    .to_owned()
}

async fn sqlite_schema(pool: &SqlitePool) -> (Schema, BTreeSet<String>) {
    let tables = sqlx::query(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("list SQLite tables");
    let mut schema = Schema::new();
    for t in tables {
        let table: String = t.get("name");
        let sql: String = t.get("sql");
        let cols = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(pool)
            .await
            .expect("SQLite table_info");
        let entry = schema.entry(table).or_default();
        for c in cols {
            let name: String = c.get("name");
            let declared: String = c.get("type");
            let notnull: i64 = c.get("notnull");
            let pk: i64 = c.get("pk");
            let class = sqlite_class(&declared, &name, &sql);
            entry.insert(name, (class, notnull == 0 && pk == 0));
        }
    }
    let indexes = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .expect("list SQLite indexes");
    (schema, indexes.into_iter().collect())
}

async fn pg_schema(pool: &PgPool) -> (Schema, BTreeSet<String>) {
    let cols = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, \
         is_nullable::text AS n FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .expect("list PostgreSQL columns");
    let mut schema = Schema::new();
    for c in cols {
        let table: String = c.get("t");
        let column: String = c.get("c");
        let ty: String = c.get("ty");
        let nullable: String = c.get("n");
        schema
            .entry(table)
            .or_default()
            .insert(column, (pg_class(&ty), nullable == "YES"));
    }
    // Indexes created by name (…_idx); unique constraints are spelled differently per backend.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes \
         WHERE schemaname = current_schema() AND indexname LIKE '%\\_idx'",
    )
    .fetch_all(pool)
    .await
    .expect("list PostgreSQL indexes");
    (schema, indexes.into_iter().collect())
}

#[tokio::test]
async fn migration_sets_describe_the_same_schema() {
    let db = SqliteDb::new("mcp-proxy-store");
    Store::connect(&db.url(), true)
        .await
        .expect("migrate SQLite")
        .close()
        .await;
    let pg = PgSchema::new("store_test").await;
    Store::connect(&pg.url(), true)
        .await
        .expect("migrate PostgreSQL")
        .close()
        .await;

    let sqlite_pool = sqlite_inspect_pool(&db).await;
    let (lite, lite_indexes) = sqlite_schema(&sqlite_pool).await;
    sqlite_pool.close().await;
    let pg_pool = pg_inspect_pool(&pg).await;
    let (post, post_indexes) = pg_schema(&pg_pool).await;
    pg_pool.close().await;

    let expected_tables: BTreeSet<&str> = [
        "api_keys",
        "audit_events",
        "oauth_clients",
        "oauth_codes",
        "oauth_consents",
        "oauth_grants",
        "refresh_tokens",
        "request_logs",
        "service_credentials",
        "signing_keys",
        "token_cutoffs",
        "users",
    ]
    .into_iter()
    .collect();
    assert_eq!(
        lite.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected_tables
    );
    assert_eq!(
        post.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected_tables
    );
    for table in &expected_tables {
        let (l, p) = (&lite[*table], &post[*table]);
        assert_eq!(
            l.keys().collect::<Vec<_>>(),
            p.keys().collect::<Vec<_>>(),
            "columns of {table} differ"
        );
        for (column, l_desc) in l {
            assert_eq!(
                l_desc, &p[column],
                "{table}.{column}: SQLite (class, nullable) vs PostgreSQL"
            );
            assert!(
                !l_desc.0.starts_with("other:"),
                "{table}.{column}: {l_desc:?}"
            );
        }
    }
    assert_eq!(lite_indexes, post_indexes, "named indexes differ");
    assert!(lite_indexes.contains("api_keys_prefix_idx"));
}

// ---------------------------------------------------------------------------------------------
// Queries

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

async fn users_case(store: Store) {
    let user = store
        .create_user("Alice@Example.io", PHC, &strings(&["admin", "user"]))
        .await
        .expect("create user");
    assert_eq!(user.roles, strings(&["admin", "user"]));
    assert!(!user.disabled);
    assert_eq!(
        store.get_user(&user.id).await.expect("get"),
        Some(user.clone())
    );
    for spelling in ["alice@example.io", "ALICE@EXAMPLE.IO", "Alice@Example.io"] {
        assert_eq!(
            store.find_user_by_email(spelling).await.expect("find"),
            Some(user.clone()),
            "{spelling}"
        );
    }
    assert_eq!(
        store
            .find_user_by_email("bob@example.io")
            .await
            .expect("find"),
        None
    );
    assert_eq!(store.get_user("no-such-id").await.expect("get"), None);

    store
        .set_roles(&user.id, &strings(&["viewer"]))
        .await
        .expect("set roles");
    store.set_disabled(&user.id, true).await.expect("disable");
    let changed = store.get_user(&user.id).await.expect("get").expect("user");
    assert_eq!(changed.roles, strings(&["viewer"]));
    assert!(changed.disabled);
    assert_eq!(changed.email, "Alice@Example.io");
    assert_eq!(changed.password_hash, PHC);
    assert!(changed.updated_at >= user.updated_at);

    store.set_disabled(&user.id, false).await.expect("enable");
    store.set_roles(&user.id, &[]).await.expect("clear roles");
    let changed = store.get_user(&user.id).await.expect("get").expect("user");
    assert!(!changed.disabled);
    assert!(changed.roles.is_empty());

    assert!(matches!(
        store.set_roles("no-such-id", &[]).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_disabled("no-such-id", true).await,
        Err(StoreError::NotFound)
    ));
}
on_both_backends!(users_round_trip, super::users_case);

async fn email_case(store: Store) {
    let first = store
        .create_user("a@x.io", PHC, &[])
        .await
        .expect("create a@x.io");
    let err = store
        .create_user("A@x.io", PHC, &[])
        .await
        .expect_err("A@x.io must collide with a@x.io");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .create_user("A@X.IO", PHC, &[])
        .await
        .expect_err("A@X.IO must collide with a@x.io");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.find_user_by_email("A@X.io").await.expect("find"),
        Some(first)
    );
    store
        .create_user("b@x.io", PHC, &[])
        .await
        .expect("another address is fine");
}
on_both_backends!(email_unique_case_insensitive, super::email_case);

fn token<'a>(user_id: &'a str, token_hash: &'a str) -> NewRefreshToken<'a> {
    NewRefreshToken {
        user_id,
        token_hash,
        family_id: "fam-1",
        issued_at: 1_700_000_000,
        expires_at: 1_700_086_400,
    }
}

async fn tokens_case(store: Store) {
    let user = store.create_user("t@x.io", PHC, &[]).await.expect("user");
    let (h1, h2, h3, h4) = (hash_of("t1"), hash_of("t2"), hash_of("t3"), hash_of("t4"));
    let t1 = store
        .insert_refresh_token(&token(&user.id, &h1))
        .await
        .expect("insert t1");
    assert_eq!(
        store.find_refresh_by_hash(&h1).await.expect("find"),
        Some(t1.clone())
    );
    assert!(t1.is_usable(1_700_000_001));
    assert!(!t1.is_usable(1_700_086_400));
    assert_eq!(store.find_refresh_by_hash(&h4).await.expect("find"), None);

    let dup = store.insert_refresh_token(&token(&user.id, &h1)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let orphan = store
        .insert_refresh_token(&token("no-such-user", &h4))
        .await;
    assert!(
        matches!(orphan, Err(StoreError::MissingReference(_))),
        "{orphan:?}"
    );

    let t2 = store
        .insert_refresh_token(&token(&user.id, &h2))
        .await
        .expect("insert t2");
    assert!(store.mark_replaced(&t1.id, &t2.id).await.expect("mark"));
    assert!(!store
        .mark_replaced(&t1.id, &t2.id)
        .await
        .expect("mark again"));
    let t1_now = store
        .find_refresh_by_hash(&h1)
        .await
        .expect("find")
        .expect("t1");
    assert_eq!(t1_now.replaced_by.as_deref(), Some(t2.id.as_str()));
    assert_eq!(t1_now.revoked_at, None);
    assert!(!t1_now.is_usable(1_700_000_001));

    let t3 = store
        .rotate_refresh_token(&t2.id, &token(&user.id, &h3))
        .await
        .expect("rotate")
        .expect("t2 was current");
    assert_eq!(
        store.find_refresh_by_hash(&h3).await.expect("find"),
        Some(t3.clone())
    );
    let t2_now = store
        .find_refresh_by_hash(&h2)
        .await
        .expect("find")
        .expect("t2");
    assert_eq!(t2_now.replaced_by.as_deref(), Some(t3.id.as_str()));
    // Rotating t2 again is reuse: nothing is written.
    let reuse = store
        .rotate_refresh_token(&t2.id, &token(&user.id, &h4))
        .await
        .expect("rotate again");
    assert_eq!(reuse, None);
    assert_eq!(store.find_refresh_by_hash(&h4).await.expect("find"), None);
}
on_both_backends!(refresh_tokens_round_trip, super::tokens_case);

async fn revoke_family_case(store: Store) {
    let alice = store
        .create_user("alice@x.io", PHC, &[])
        .await
        .expect("user");
    let bob = store.create_user("bob@x.io", PHC, &[]).await.expect("user");
    let mut tokens = Vec::new();
    for (user, family, n) in [
        (&alice.id, "family-a", 3),
        (&alice.id, "family-b", 2),
        (&bob.id, "family-c", 2),
    ] {
        for i in 0..n {
            let hash = hash_of(&format!("{family}-{i}"));
            let t = store
                .insert_refresh_token(&NewRefreshToken {
                    user_id: user,
                    token_hash: &hash,
                    family_id: family,
                    issued_at: 1_700_000_000 + i,
                    expires_at: 1_800_000_000,
                })
                .await
                .expect("insert");
            tokens.push(t);
        }
    }
    assert_eq!(store.revoke_family("family-a").await.expect("revoke"), 3);
    for t in &tokens {
        let now = store
            .find_refresh_by_hash(&t.token_hash)
            .await
            .expect("find")
            .expect("token");
        if t.family_id == "family-a" {
            assert!(now.revoked_at.is_some(), "{now:?} should be revoked");
            assert!(!now.is_usable(1_700_000_100));
        } else {
            assert_eq!(now.revoked_at, None, "{now:?} should be untouched");
        }
    }
    // Already revoked: nothing left to revoke; an unknown family revokes nothing.
    assert_eq!(store.revoke_family("family-a").await.expect("revoke"), 0);
    assert_eq!(store.revoke_family("family-z").await.expect("revoke"), 0);
}
on_both_backends!(
    revoke_family_revokes_only_that_family,
    super::revoke_family_case
);

async fn oauth_case(store: Store) {
    let user = store.create_user("o@x.io", PHC, &[]).await.expect("user");
    let client = OAuthClient {
        client_id: "mcpc_test".into(),
        client_name: "Test".into(),
        redirect_uris: strings(&["http://127.0.0.1:1/cb"]),
        client_uri: None,
        created_at: 1_700_000_000,
    };
    store.insert_oauth_client(&client).await.expect("client");
    assert_eq!(
        store.get_oauth_client("mcpc_test").await.expect("get"),
        Some(client.clone())
    );
    assert!(matches!(
        store.insert_oauth_client(&client).await,
        Err(StoreError::Conflict(_))
    ));

    // A pending consent becomes a code once; the code is used once.
    let far = 4_000_000_000;
    let pending = OAuthCode {
        code_hash: hash_of("ticket"),
        client_id: client.client_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: "http://127.0.0.1:1/cb".into(),
        code_challenge: "c".repeat(43),
        resource: "http://gw/mcp".into(),
        scope: "user".into(),
        state: Some("s".into()),
        approved: false,
        created_at: 1_700_000_000,
        expires_at: far,
        used_at: None,
        family_id: None,
    };
    store.insert_oauth_code(&pending).await.expect("pending");
    assert!(!store
        .use_oauth_code(&hash_of("ticket"), "f")
        .await
        .expect("use"));
    let code = store
        .approve_oauth_code(&hash_of("ticket"), &hash_of("code"), far)
        .await
        .expect("approve")
        .expect("approved");
    assert!(code.approved);
    assert_eq!(code.state.as_deref(), Some("s"));
    assert!(store
        .approve_oauth_code(&hash_of("ticket"), &hash_of("code2"), far)
        .await
        .expect("approve again")
        .is_none());
    assert!(store
        .take_pending_oauth_code(&hash_of("code"))
        .await
        .expect("take")
        .is_none());
    assert!(store
        .use_oauth_code(&hash_of("code"), "family-1")
        .await
        .expect("use"));
    assert!(!store
        .use_oauth_code(&hash_of("code"), "family-2")
        .await
        .expect("reuse"));
    let used = store
        .get_oauth_code(&hash_of("code"))
        .await
        .expect("get")
        .expect("code");
    assert_eq!(used.family_id.as_deref(), Some("family-1"));
    assert!(used.used_at.is_some());

    // A denied consent is taken once.
    let mut denied = pending.clone();
    denied.code_hash = hash_of("ticket-2");
    store.insert_oauth_code(&denied).await.expect("pending");
    assert!(store
        .take_pending_oauth_code(&hash_of("ticket-2"))
        .await
        .expect("take")
        .is_some());
    assert!(store
        .take_pending_oauth_code(&hash_of("ticket-2"))
        .await
        .expect("take")
        .is_none());

    // Revoking the consent revokes the refresh tokens of the client's grants only.
    store
        .put_oauth_consent(&user.id, "mcpc_test", "user")
        .await
        .expect("consent");
    store
        .put_oauth_consent(&user.id, "mcpc_test", "user admin")
        .await
        .expect("widen");
    let consents = store.list_oauth_consents(&user.id).await.expect("list");
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0].scope, "user admin");
    for (family, client_id) in [("family-1", "mcpc_test"), ("family-9", "mcpc_other")] {
        store
            .insert_oauth_grant(&OAuthGrant {
                family_id: family.into(),
                user_id: user.id.clone(),
                client_id: client_id.into(),
                resource: "http://gw/mcp".into(),
                scope: String::new(),
                created_at: 1_700_000_000,
            })
            .await
            .expect("grant");
        store
            .insert_refresh_token(&NewRefreshToken {
                user_id: &user.id,
                token_hash: &hash_of(family),
                family_id: family,
                issued_at: 1_700_000_000,
                expires_at: far,
            })
            .await
            .expect("token");
    }
    assert_eq!(
        store
            .get_oauth_grant("family-1")
            .await
            .expect("grant")
            .map(|g| g.client_id),
        Some("mcpc_test".to_owned())
    );
    assert_eq!(
        store
            .revoke_oauth_consent(&user.id, "mcpc_test")
            .await
            .expect("revoke"),
        Some(1)
    );
    assert_eq!(
        store
            .revoke_oauth_consent(&user.id, "mcpc_test")
            .await
            .expect("again"),
        None
    );
    let one = store
        .find_refresh_by_hash(&hash_of("family-1"))
        .await
        .expect("find")
        .expect("t");
    let nine = store
        .find_refresh_by_hash(&hash_of("family-9"))
        .await
        .expect("find")
        .expect("t");
    assert!(one.revoked_at.is_some());
    assert!(nine.revoked_at.is_none());
}
on_both_backends!(oauth_round_trip, super::oauth_case);

async fn api_keys_case(store: Store) {
    let user = store.create_user("k@x.io", PHC, &[]).await.expect("user");
    let other = store.create_user("o@x.io", PHC, &[]).await.expect("user");
    let scopes = strings(&["tools:call", "tools:list"]);
    let (h1, h2) = (hash_of("key-1"), hash_of("key-2"));
    let k1 = store
        .insert_api_key(&NewApiKey {
            user_id: &user.id,
            name: "laptop",
            prefix: "mcp_ab12",
            key_hash: &h1,
            scopes: &scopes,
            expires_at: None,
        })
        .await
        .expect("insert k1");
    let k2 = store
        .insert_api_key(&NewApiKey {
            user_id: &user.id,
            name: "ci",
            prefix: "mcp_cd34",
            key_hash: &h2,
            scopes: &[],
            expires_at: Some(1_900_000_000),
        })
        .await
        .expect("insert k2");
    assert_eq!(
        store.find_api_key_by_hash(&h1).await.expect("find"),
        Some(k1.clone())
    );
    assert_eq!(
        store
            .find_api_key_by_hash(&hash_of("none"))
            .await
            .expect("find"),
        None
    );
    assert!(k1.is_usable(2_000_000_000));
    assert!(!k2.is_usable(1_900_000_000));

    let mut listed = store.list_api_keys(&user.id).await.expect("list");
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![k2.clone(), k1.clone()]);
    assert!(store
        .list_api_keys(&other.id)
        .await
        .expect("list")
        .is_empty());

    let dup = store
        .insert_api_key(&NewApiKey {
            user_id: &other.id,
            name: "dup",
            prefix: "mcp_ab12",
            key_hash: &h1,
            scopes: &[],
            expires_at: None,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    assert!(!store
        .revoke_api_key(&other.id, &k1.id)
        .await
        .expect("revoke"));
    assert!(store
        .revoke_api_key(&user.id, &k1.id)
        .await
        .expect("revoke"));
    assert!(!store
        .revoke_api_key(&user.id, &k1.id)
        .await
        .expect("revoke again"));
    let k1_now = store
        .find_api_key_by_hash(&h1)
        .await
        .expect("find")
        .expect("k1");
    assert!(k1_now.revoked_at.is_some());
    assert!(!k1_now.is_usable(1_000));

    store.touch_api_key(&k2.id).await.expect("touch");
    let k2_now = store
        .find_api_key_by_hash(&h2)
        .await
        .expect("find")
        .expect("k2");
    assert!(k2_now.last_used_at.is_some());
    assert_eq!(k2_now.scopes, Vec::<String>::new());
}
on_both_backends!(api_keys_round_trip, super::api_keys_case);

async fn credentials_case(store: Store) {
    let user = store.create_user("c@x.io", PHC, &[]).await.expect("user");
    let sealed: Vec<u8> = vec![0x00, 0xff, 0x80, b's', 0x00, 0x7f];
    let nonce: Vec<u8> = (0u8..12).collect();
    store
        .put_credential(&user.id, "github", &sealed, &nonce, "enc-1")
        .await
        .expect("put");
    let got = store
        .get_credential(&user.id, "github")
        .await
        .expect("get")
        .expect("credential");
    assert_eq!(
        (
            got.ciphertext.as_slice(),
            got.nonce.as_slice(),
            got.key_id.as_str()
        ),
        (sealed.as_slice(), nonce.as_slice(), "enc-1")
    );
    assert_eq!(
        (got.user_id.as_str(), got.service.as_str()),
        (user.id.as_str(), "github")
    );

    store
        .put_credential(&user.id, "github", b"resealed", &[9; 12], "enc-2")
        .await
        .expect("replace");
    let replaced = store
        .get_credential(&user.id, "github")
        .await
        .expect("get")
        .expect("credential");
    assert_eq!(replaced.ciphertext, b"resealed");
    assert_eq!(replaced.nonce, vec![9; 12]);
    assert_eq!(replaced.key_id, "enc-2");
    assert_eq!(replaced.created_at, got.created_at);

    assert_eq!(
        store.get_credential(&user.id, "gitlab").await.expect("get"),
        None
    );
    let orphan = store
        .put_credential("no-such-user", "github", b"x", b"n", "enc-1")
        .await;
    assert!(
        matches!(orphan, Err(StoreError::MissingReference(_))),
        "{orphan:?}"
    );

    assert!(store
        .delete_credential(&user.id, "github")
        .await
        .expect("delete"));
    assert!(!store
        .delete_credential(&user.id, "github")
        .await
        .expect("delete again"));
    assert_eq!(
        store.get_credential(&user.id, "github").await.expect("get"),
        None
    );
}
on_both_backends!(credentials_round_trip, super::credentials_case);

async fn signing_keys_case(store: Store) {
    let jwk = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    let k1 = store
        .insert_signing_key(&NewSigningKey {
            kid: "kid-1",
            algorithm: "EdDSA",
            private_key: &[0x30, 0x2e, 0x02, 0x01, 0x00],
            nonce: &[1; 12],
            key_id: "enc-1",
            public_jwk: jwk,
            not_after: None,
        })
        .await
        .expect("insert kid-1");
    let k2 = store
        .insert_signing_key(&NewSigningKey {
            kid: "kid-2",
            algorithm: "ES256",
            private_key: &[0xde, 0xad],
            nonce: &[2; 12],
            key_id: "enc-1",
            public_jwk: "{}",
            not_after: Some(1_900_000_000),
        })
        .await
        .expect("insert kid-2");
    let mut listed = store.list_signing_keys().await.expect("list");
    listed.sort_by(|a, b| a.kid.cmp(&b.kid));
    assert_eq!(listed, vec![k1.clone(), k2.clone()]);

    let dup = store
        .insert_signing_key(&NewSigningKey {
            kid: "kid-1",
            algorithm: "EdDSA",
            private_key: &[],
            nonce: &[],
            key_id: "enc-1",
            public_jwk: "{}",
            not_after: None,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    store.retire_signing_key("kid-1").await.expect("retire");
    let retired_at = store
        .list_signing_keys()
        .await
        .expect("list")
        .into_iter()
        .find(|k| k.kid == "kid-1")
        .and_then(|k| k.retired_at);
    assert!(retired_at.is_some());
    assert!(matches!(
        store.retire_signing_key("kid-9").await,
        Err(StoreError::NotFound)
    ));
}
on_both_backends!(signing_keys_round_trip, super::signing_keys_case);

async fn audit_case(store: Store) {
    let user = store.create_user("a@x.io", PHC, &[]).await.expect("user");
    let detail = serde_json::json!({"reason": "bad password", "attempt": 3, "ok": false});
    let e1 = store
        .insert_audit_event(&NewAuditEvent {
            kind: "login.failed",
            user_id: Some(&user.id),
            subject: Some("a@x.io"),
            ip: Some("203.0.113.7"),
            detail: &detail,
        })
        .await
        .expect("insert e1");
    let e2 = store
        .insert_audit_event(&NewAuditEvent {
            kind: "login.unknown_user",
            user_id: None,
            subject: Some("nobody@x.io"),
            ip: None,
            detail: &serde_json::json!({}),
        })
        .await
        .expect("insert e2");
    let mut all = store.list_audit_events(None, 10).await.expect("list");
    all.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(all, vec![e1.clone(), e2.clone()]);
    assert_eq!(
        store
            .list_audit_events(Some(&user.id), 10)
            .await
            .expect("list"),
        vec![e1]
    );
    assert_eq!(
        store.list_audit_events(None, 1).await.expect("list").len(),
        1
    );
}
on_both_backends!(audit_round_trip, super::audit_case);

// ---------------------------------------------------------------------------------------------
// CLI

#[test]
fn migrate_command_applies_then_reports() {
    let db = SqliteDb::new("mcp-proxy-store");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
            .args(["migrate", "--database", &db.url()])
            .output()
            .expect("run mcp-proxy migrate")
    };
    let first = run();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        "0001 identity (applied)\n0002 token cutoffs (applied)\n0003 request logs (applied)\n0004 oauth (applied)\n0005 token cutoff index (applied)\n"
    );
    let second = run();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "0001 identity (already applied)\n0002 token cutoffs (already applied)\n\
         0003 request logs (already applied)\n0004 oauth (already applied)\n\
         0005 token cutoff index (already applied)\n"
    );

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["migrate", "--database", "mysql://u:pw@h/db"])
        .output()
        .expect("run mcp-proxy migrate");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unsupported"), "{stderr}");
    assert!(!stderr.contains("pw"), "password leaked: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// Request log batches

/// A batch longer than one INSERT statement (several statements in one transaction, the
/// last one short) lands row for row, every column in its place, on both backends; written
/// again (a replay after a lost acknowledgement) it adds nothing.
async fn request_log_batch_case(url: &str) {
    use mcp_proxy::logship::db::{self, LogDb, LogQuery};
    use mcp_proxy::logship::{Entry, Parts, RequestRecord};
    let user = format!("batch-{}", uuid::Uuid::new_v4().simple());
    let records: Vec<RequestRecord> = (0..150i64)
        .map(|i| RequestRecord {
            request_id: format!("{user}-{i:03}"),
            at: 1_700_000_000_000 + i,
            user_id: Some(user.clone()),
            api_key_id: (i % 3 == 0).then(|| format!("key{i}")),
            client_ip: Some(format!("10.0.0.{}", i % 250)),
            user_agent: (i % 2 == 0).then(|| "agent/1".to_string()),
            route: Some("/mcp".into()),
            pool: Some(format!("pool{}", i % 4)),
            worker: Some(format!("w{}", i % 5)),
            http_method: if i % 7 == 0 { "GET" } else { "POST" }.into(),
            rpc_method: Some("tools/call".into()),
            tool: Some(format!("tool{i}")),
            session_hash: Some(format!("{i:016x}")),
            protocol_version: Some("2025-06-18".into()),
            status: 200 + (i % 3) as u16,
            rpc_error: (i % 11 == 0).then_some(-32000 - i),
            latency_us: 1000 + i,
            upstream_us: (i % 4 != 0).then_some(500 + i),
            bytes_in: 10 * i,
            bytes_out: 20 * i,
            rate_limit: (i % 5 == 0).then(|| "allowed".into()),
            auth: "ok".into(),
            error: (i % 13 == 0).then(|| "upstream".into()),
            request_body: (i % 17 == 0).then(|| format!("{{\"n\":{i}}}")),
            response_body: (i % 19 == 0).then(|| "done".to_string()),
        })
        .collect();
    let entries: Vec<Entry> = records
        .iter()
        .map(|r| Entry::Request(Box::new(r.clone())))
        .collect();
    let mut log = LogDb::new(url, true);
    log.write(&Parts::of(&entries))
        .await
        .expect("write the batch");
    log.write(&Parts::of(&entries))
        .await
        .expect("write it again");
    let pool = log.pool().await.expect("pool");
    let q = LogQuery {
        user: Some(user.clone()),
        limit: 1000,
        ..LogQuery::default()
    };
    let mut back = db::query(&pool, &q).await.expect("read back");
    back.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    assert_eq!(back.len(), records.len(), "one row per record, none twice");
    for (got, want) in back.iter().zip(&records) {
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn request_log_batch_sqlite() {
    let db = SqliteDb::new("mcp-proxy-logbatch");
    request_log_batch_case(&db.url()).await;
}

/// The log pipeline's own pool sets SQLite up as the store does (WAL without a sync per
/// commit) and keeps statement journals in memory; before, it kept SQLite's defaults and
/// every batch waited for the disk.
#[tokio::test]
async fn request_log_pool_connections_are_set_up_for_batches() {
    use mcp_proxy::logship::db::LogDb;
    use sqlx::Row;
    let db = SqliteDb::new("mcp-proxy-logpragmas");
    let mut log = LogDb::new(&db.url(), true);
    let pool = log.pool().await.expect("pool");
    // More than one connection: each must have been set up, not just the first.
    let mut conns = Vec::new();
    for _ in 0..2 {
        conns.push(pool.acquire().await.expect("connection"));
    }
    for conn in &mut conns {
        let journal: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .expect("journal_mode")
            .get(0);
        assert_eq!(journal.to_ascii_lowercase(), "wal");
        // synchronous = NORMAL (1), temp_store = MEMORY (2).
        for (pragma, want) in [("synchronous", 1i64), ("temp_store", 2)] {
            let got: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&mut **conn)
                .await
                .expect(pragma)
                .get(0);
            assert_eq!(got, want, "PRAGMA {pragma}");
        }
    }
}

#[tokio::test]
async fn request_log_batch_postgres() {
    let pg = PgSchema::new("logbatch").await;
    request_log_batch_case(&pg.url()).await;
}
