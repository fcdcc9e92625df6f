//! What the application allows: who may join which channel and send to which target
//! ([`HubPolicy`]), and the hub's bounds on what one connection may hold ([`HubLimits`]).

use estuary_middleware::Identity;

use super::{HubError, Refused, Target};

/// The application's rules for the hub: who may join a channel, and who may send where.
///
/// The hub asks its policy before every join, whoever asks for it (`Conn::join` from a
/// handler, `Hub::join` from a REST route), and before every send a connection makes
/// through [`Conn::send_to`](crate::Conn::send_to). Sends through [`Hub::send`] come from
/// the application's own code and are not checked. Both methods allow everything unless
/// overridden; they run on the caller's task, inside the join or send, so they must be
/// quick: no I/O, no locks held for long.
///
/// [`Hub::send`]: crate::Hub::send
///
/// ```
/// use estuary::{Caller, Hub, HubPolicy, Refused, Target};
///
/// /// `staff-*` channels are for staff; only moderators speak in `announcements`.
/// struct Rules;
///
/// impl HubPolicy for Rules {
///     fn may_join(&self, who: &Caller<'_>, channel: &str) -> Result<(), Refused> {
///         if channel.starts_with("staff-") && !who.user_id.ends_with("@staff") {
///             return Err(Refused::new("staff only"));
///         }
///         Ok(())
///     }
///
///     fn may_send(&self, who: &Caller<'_>, to: &Target) -> Result<(), Refused> {
///         match to {
///             Target::Channel(c) if &**c == "announcements" && who.user_id != "mod" => {
///                 Err(Refused::new("only moderators speak here"))
///             }
///             _ => Ok(()),
///         }
///     }
/// }
///
/// let hub = Hub::builder().policy(Rules).build();
/// # let _ = hub;
/// ```
pub trait HubPolicy: Send + Sync + 'static {
    /// Whether `who` may join `channel`.
    fn may_join(&self, who: &Caller<'_>, channel: &str) -> Result<(), Refused> {
        let _ = (who, channel);
        Ok(())
    }

    /// Whether `who` may send to `to`.
    fn may_send(&self, who: &Caller<'_>, to: &Target) -> Result<(), Refused> {
        let _ = (who, to);
        Ok(())
    }
}

/// The connection a [`HubPolicy`] decides for.
///
/// ```
/// use estuary::{Caller, HubPolicy, Refused, Target};
///
/// /// Only administrators (an identity with the role) may send to a whole user.
/// struct AdminsNotify;
///
/// #[derive(Clone)]
/// struct Role(&'static str);
///
/// impl HubPolicy for AdminsNotify {
///     fn may_send(&self, who: &Caller<'_>, to: &Target) -> Result<(), Refused> {
///         let admin = who
///             .identity
///             .and_then(|identity| identity.data::<Role>())
///             .is_some_and(|role| role.0 == "admin");
///         match to {
///             Target::User(_) if !admin => Err(Refused::new("only admins notify users")),
///             _ => Ok(()),
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Caller<'a> {
    /// The connection's user id.
    pub user_id: &'a str,
    /// The connection's session id.
    pub session_id: &'a str,
    /// What authentication established, with its data (roles, tenant...); `None` for an
    /// anonymous connection.
    pub identity: Option<&'a Identity>,
}

/// Bounds on what one connection may hold in the hub, so that no client can grow the
/// server (or Redis) without limit. Refusals are [`HubError`]s that say which bound.
///
/// ```
/// use estuary::{Hub, HubLimits};
///
/// let limits = HubLimits::default().with_max_channels_per_connection(16);
/// assert_eq!(limits.max_channel_len, 256);
/// let hub = Hub::builder().limits(limits).build();
/// # let _ = hub;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubLimits {
    /// The most channels one connection may be a member of (default 100).
    pub max_channels_per_connection: usize,
    /// The longest channel name, in bytes (default 256).
    pub max_channel_len: usize,
    /// The longest unique name, in bytes (default 256).
    pub max_name_len: usize,
}

/// The longest user or session id a delivery can carry across nodes: the envelope gives
/// each target string a 16-bit length.
pub(crate) const MAX_ID_LEN: usize = u16::MAX as usize;

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            max_channels_per_connection: 100,
            max_channel_len: 256,
            max_name_len: 256,
        }
    }
}

impl HubLimits {
    /// Sets the most channels one connection may be in.
    pub fn with_max_channels_per_connection(mut self, max: usize) -> Self {
        self.max_channels_per_connection = max;
        self
    }

    /// Sets the longest channel name, in bytes (at most 65,535).
    pub fn with_max_channel_len(mut self, max: usize) -> Self {
        self.max_channel_len = max.min(MAX_ID_LEN);
        self
    }

    /// Sets the longest unique name, in bytes (at most 65,535).
    pub fn with_max_name_len(mut self, max: usize) -> Self {
        self.max_name_len = max.min(MAX_ID_LEN);
        self
    }

    pub(crate) fn check_channel(&self, channel: &str) -> Result<(), HubError> {
        check_len("channel name", channel, self.max_channel_len)
    }

    pub(crate) fn check_name(&self, name: &str) -> Result<(), HubError> {
        check_len("unique name", name, self.max_name_len)
    }

    /// A target that no session could be registered under is refused, rather than sent
    /// (and, across nodes, truncated).
    pub(crate) fn check_target(&self, target: &Target) -> Result<(), HubError> {
        match target {
            Target::Channel(channel) => self.check_channel(channel),
            Target::Name(name) => self.check_name(name),
            Target::User(user) => check_len("user id", user, MAX_ID_LEN),
            Target::Session(session) => check_len("session id", session, MAX_ID_LEN),
            Target::UserSession { user, session } => {
                check_len("user id", user, MAX_ID_LEN)?;
                check_len("session id", session, MAX_ID_LEN)
            }
        }
    }
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<(), HubError> {
    if value.len() > max {
        return Err(HubError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_longer_than_their_bound_are_refused_with_what_and_how_long() {
        let limits = HubLimits::default().with_max_channel_len(8);
        assert!(limits.check_target(&Target::channel("12345678")).is_ok());
        let err = limits
            .check_target(&Target::channel("123456789"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a channel name may be at most 8 bytes long, this one is 9"
        );
        let long = "u".repeat(MAX_ID_LEN + 1);
        assert!(limits.check_target(&Target::user(long.as_str())).is_err());
        assert!(limits
            .check_target(&Target::user_session("alice", long.as_str()))
            .is_err());
        assert!(limits
            .check_target(&Target::user(&long[..MAX_ID_LEN]))
            .is_ok());
    }
}
