//! Filter directives: explicit, or from the `OXLOOP_LOG` variable.

use crate::LogError;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the filter directives (same syntax as `RUST_LOG`).
pub const ENV_VAR: &str = "OXLOOP_LOG";

/// The directives used when neither [`LogBuilder::filter`](crate::LogBuilder::filter)
/// nor `OXLOOP_LOG` gives any.
pub(crate) const DEFAULT_DIRECTIVES: &str = "info";

/// Parses filter directives (`RUST_LOG` syntax: `"warn"`, `"info,my_crate=debug"`,
/// `"my_crate::net[conn]=trace"`). An empty string means `"info"`.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, LogError> {
    let d = directives.trim();
    let d = if d.is_empty() { DEFAULT_DIRECTIVES } else { d };
    EnvFilter::builder().parse(d).map_err(|e| LogError::Filter {
        directives: directives.to_string(),
        reason: e.to_string(),
    })
}

/// The directives from `OXLOOP_LOG`, or the default when it is unset.
pub(crate) fn from_env() -> Result<String, LogError> {
    match std::env::var(ENV_VAR) {
        Ok(s) => Ok(s),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_DIRECTIVES.to_string()),
        Err(std::env::VarError::NotUnicode(_)) => Err(LogError::FilterNotUnicode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_directives_parse() {
        for d in [
            "",
            "info",
            "warn,oxloop=debug",
            "off",
            "a::b[span{x=1}]=trace",
            "debug,h2=off",
        ] {
            parse_filter(d).unwrap_or_else(|e| panic!("{d:?}: {e}"));
        }
    }

    #[test]
    fn bad_directives_are_an_error_naming_them() {
        for d in ["info,oxloop=loud", "=debug=", "x[=trace"] {
            let e = parse_filter(d).expect_err(d).to_string();
            assert!(e.contains(d), "{e}");
        }
    }
}
