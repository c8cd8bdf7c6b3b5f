//! How Rust values are represented in columns: ids, instants, string lists, booleans.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyRow, AnyTypeInfoKind};
use sqlx::{Row, ValueRef};

use super::error::{Result, StoreError};

/// The current time as unix seconds, the representation of every instant in the store.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh id: a random (v4) UUID, lowercase and hyphenated, the form every id column holds.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Encodes a list of strings (roles, scopes) as a JSON array.
pub(crate) fn encode_list(items: &[String]) -> String {
    // Serialising a slice of strings cannot fail; fall back to an empty list regardless.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

/// Decodes a JSON array of strings read from `column`.
pub(crate) fn decode_list(text: &str, column: &'static str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        column,
        reason: e.to_string(),
    })
}

/// Reads a boolean column: a native BOOLEAN on PostgreSQL, a 0/1 INTEGER on SQLite.
pub(crate) fn get_flag(row: &AnyRow, column: &str) -> Result<bool> {
    let kind = row.try_get_raw(column)?.type_info().kind();
    if kind == AnyTypeInfoKind::Bool {
        Ok(row.try_get::<bool, _>(column)?)
    } else {
        Ok(row.try_get::<i64, _>(column)? != 0)
    }
}

/// Turns an UPDATE's affected-row count into [`StoreError::NotFound`] when it touched nothing.
pub(crate) fn found(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}
