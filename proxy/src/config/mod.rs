//! Configuration: the YAML file model, its validation with file/line/field errors, and the
//! runtime model the gateway runs on.

mod file;
mod locate;
pub mod model;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::*;

/// The default configuration compiled into the binary (`config/gateway.yaml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/gateway.yaml");
pub const EMBEDDED_NAME: &str = "<embedded config/gateway.yaml>";

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// Field path such as `pools.tools.spawn.count`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one file; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parse and validate configuration text. `name` is used in error messages.
pub fn parse(text: &str, name: &str) -> Result<GatewayConfig, ConfigErrors> {
    validate::parse_and_validate(text, name)
}

/// Read and validate a configuration file.
pub fn load_file(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &name),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: name,
            line: None,
            column: None,
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// The file named on the command line, or the embedded default.
pub fn load(path: Option<&Path>) -> Result<GatewayConfig, ConfigErrors> {
    match path {
        Some(p) => load_file(p),
        None => parse(EMBEDDED_DEFAULT, EMBEDDED_NAME),
    }
}
