//! Users: email (unique, case-insensitive), password hash, roles, disabled flag.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::{decode_list, encode_list, found, get_flag, new_id, now};
use super::error::Result;
use super::{Backend, Store};

/// A row of `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// As first given; comparisons and uniqueness ignore (ASCII) case.
    pub email: String,
    /// An argon2id PHC string (`$argon2id$v=19$…`); the store does not check it.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! select_users {
    ($where:literal) => {
        concat!(
            "SELECT id, email, password_hash, roles, disabled, created_at, updated_at ",
            "FROM users WHERE ",
            $where
        )
    };
}

fn from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        roles: decode_list(&row.try_get::<String, _>("roles")?, "users.roles")?,
        disabled: get_flag(row, "disabled")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates an enabled user. An email already present in any letter case gives
    /// [`StoreError::Conflict`].
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        roles: &[String],
    ) -> Result<User> {
        let user = User {
            id: new_id(),
            email: email.to_owned(),
            password_hash: password_hash.to_owned(),
            roles: roles.to_vec(),
            disabled: false,
            created_at: now(),
            updated_at: now(),
        };
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, roles, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(encode_list(&user.roles))
        .bind(user.disabled)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(user)
    }

    /// The user with this email, compared case-insensitively.
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>> {
        // Each form uses its backend's unique index: lower(email) on PostgreSQL, the NOCASE
        // column collation on SQLite.
        let sql = match self.backend {
            Backend::Postgres => select_users!("lower(email) = lower($1)"),
            Backend::Sqlite => select_users!("email = $1"),
        };
        let row = sqlx::query(sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The user with this id.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query(select_users!("id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Replaces the user's roles. [`StoreError::NotFound`] when there is no such user.
    pub async fn set_roles(&self, id: &str, roles: &[String]) -> Result<()> {
        let done = sqlx::query("UPDATE users SET roles = $1, updated_at = $2 WHERE id = $3")
            .bind(encode_list(roles))
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    /// Disables or re-enables the user. [`StoreError::NotFound`] when there is no such user.
    pub async fn set_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        found(done.rows_affected())
    }

    /// Users ordered by creation, `limit` of them from `offset`.
    pub async fn list_users(&self, limit: i64, offset: i64) -> Result<Vec<User>> {
        let rows = sqlx::query(select_users!(
            "1 = 1 ORDER BY created_at, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}
