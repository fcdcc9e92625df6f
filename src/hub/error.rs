use std::fmt;

use crate::protocol::EncodeError;

/// Why the hub did not do something: a refusal by the application's [`HubPolicy`], a
/// limit of [`HubLimits`], a unique name held by another session, or a failure of the
/// Redis backplane.
///
/// The messages never repeat what the client sent (a channel name, a unique name), so
/// that an application may pass them on to the client as they are.
///
/// [`HubPolicy`]: crate::HubPolicy
/// [`HubLimits`]: crate::HubLimits
///
/// ```
/// use estuary::HubError;
///
/// let err = HubError::TooManyChannels { max: 16 };
/// assert_eq!(err.to_string(), "at most 16 channels per connection");
/// let err = HubError::TooLong { what: "channel name", len: 300, max: 64 };
/// assert_eq!(err.to_string(), "a channel name may be at most 64 bytes long, this one is 300");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum HubError {
    /// The application's policy refused, for this reason.
    Refused(Refused),
    /// The connection is already in as many channels as the hub allows.
    TooManyChannels {
        /// The limit.
        max: usize,
    },
    /// A channel name, unique name, user id or session id is longer than allowed.
    TooLong {
        /// What was too long: "channel name", "unique name", "user id", "session id".
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The unique name is held by another session.
    NameTaken {
        /// The name.
        name: String,
    },
    /// No session matching the target is connected to this node.
    NoSuchSession,
    /// Another connection on this node has this session id (an authenticator gave the
    /// same id twice); the handshake answers 409.
    SessionIdInUse,
    /// A backplane setting is out of range, said how.
    InvalidConfig(String),
    /// A value could not be encoded (as JSON, or with the codec asked for).
    Encode(EncodeError),
    /// Redis could not be reached, or a command failed.
    Backplane {
        /// What the hub was doing, with the Redis address (password redacted).
        context: String,
        /// The Redis client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl HubError {
    #[cfg(feature = "redis")]
    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        HubError::Backplane {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Refused(refused) => write!(f, "refused: {}", refused.reason()),
            HubError::TooManyChannels { max } => write!(f, "at most {max} channels per connection"),
            HubError::TooLong { what, len, max } => {
                write!(
                    f,
                    "a {what} may be at most {max} bytes long, this one is {len}"
                )
            }
            HubError::NameTaken { .. } => f.write_str("the name is already registered"),
            HubError::NoSuchSession => f.write_str("no such session on this node"),
            HubError::SessionIdInUse => {
                f.write_str("the session id is in use by another connection")
            }
            HubError::InvalidConfig(why) => write!(f, "invalid backplane config: {why}"),
            HubError::Encode(e) => e.fmt(f),
            HubError::Backplane { context, source } => write!(f, "redis: {context}: {source}"),
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HubError::Encode(e) => Some(e),
            HubError::Backplane { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl From<EncodeError> for HubError {
    fn from(e: EncodeError) -> Self {
        HubError::Encode(e)
    }
}

impl From<Refused> for HubError {
    fn from(refused: Refused) -> Self {
        HubError::Refused(refused)
    }
}

/// A [`HubPolicy`](crate::HubPolicy)'s "no", with a reason meant for the client.
///
/// ```
/// let no = estuary::Refused::new("staff only");
/// assert_eq!(no.reason(), "staff only");
/// assert_eq!(estuary::HubError::from(no).to_string(), "refused: staff only");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    reason: std::borrow::Cow<'static, str>,
}

impl Refused {
    /// A refusal for `reason`.
    pub fn new(reason: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refused {}
