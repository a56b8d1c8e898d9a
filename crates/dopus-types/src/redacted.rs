//! A wrapper that keeps secrets, message text and network addresses out of logs.

use std::fmt;

/// Holds a value that must never appear in logs or error messages.
///
/// `Debug` and `Display` print `<redacted>`; the value is reachable only through
/// [`Redacted::expose`], which makes every deliberate use visible in review. Follows str0m's
/// `Pii<T>` and libsignal's logging rules.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// Gives the value back; call sites are where a secret deliberately leaves its wrapper.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let secret = Redacted::new("hunter2 at 192.0.2.7");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret)), "Some(<redacted>)");
        assert_eq!(*secret.expose(), "hunter2 at 192.0.2.7");
    }
}
