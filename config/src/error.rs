//! Errors and warnings.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be used.
///
/// Every variant that comes from a file names the file, and the line when the parser knew it, so
/// an operator can go straight to the mistake. Values of secret keys are never echoed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// v0.3.13 says exactly this, and scripts grep for it.
    #[error("config file not found: {}", .path.display())]
    NotFound { path: PathBuf },

    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not YAML (or not UTF-8, or not a mapping at the top).
    #[error("{}: {}{message}", .path.display(), LinePrefix(*.line))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    /// Valid YAML with a value walship cannot use.
    #[error("{}: {}{key}: {message}", .path.display(), LinePrefix(*.line))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },

    /// A replica URL given on the command line (no file involved). `url` is already redacted.
    #[error("{url}: {message}")]
    Url { url: String, message: String },

    /// A replica option read after loading (e.g. by a backend through `get_bool`). The file is
    /// not known at that point; the line is, when the replica came from a file.
    #[error("{}{key}: {message}", LinePrefix(*.line))]
    Option {
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// Something in the file that v0.3.13 silently ignores; walship says so instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", LinePrefix(self.line), self.message)
    }
}

/// Formats `line N: ` or nothing, so messages read the same with and without a known line.
struct LinePrefix(Option<usize>);

impl fmt::Display for LinePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "line {line}: "),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_line_and_key() {
        let e = ConfigError::Invalid {
            path: "/etc/litestream.yml".into(),
            line: Some(7),
            key: "sync-interval".into(),
            message: "invalid duration \"10x\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "/etc/litestream.yml: line 7: sync-interval: invalid duration \"10x\""
        );
        let e = ConfigError::Syntax {
            path: "/a.yml".into(),
            line: None,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "/a.yml: bad");
        let e = ConfigError::NotFound {
            path: "/nope.yml".into(),
        };
        assert_eq!(e.to_string(), "config file not found: /nope.yml");
    }

    #[test]
    fn warning_display() {
        let w = Warning {
            line: Some(3),
            message: "unknown key \"foo\" ignored".into(),
        };
        assert_eq!(w.to_string(), "line 3: unknown key \"foo\" ignored");
        let w = Warning {
            line: None,
            message: "x".into(),
        };
        assert_eq!(w.to_string(), "x");
    }
}
