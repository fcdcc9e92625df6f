use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Who is on the other end of a connection, as established by authentication.
///
/// An authentication layer inserts it into the request extensions; the WebSocket upgrade
/// takes the user id (and the session id, when given) for the session.
///
/// ```
/// use estuary_middleware::Identity;
///
/// #[derive(Debug)]
/// struct Role(&'static str);
///
/// let identity = Identity::new("alice").with_session_id("tab-1").with_data(Role("admin"));
/// assert_eq!(identity.user_id(), "alice");
/// assert_eq!(identity.session_id(), Some("tab-1"));
/// assert_eq!(identity.data::<Role>().map(|r| r.0), Some("admin"));
/// ```
#[derive(Clone)]
pub struct Identity {
    user_id: Arc<str>,
    session_id: Option<Arc<str>>,
    data: Option<Arc<dyn Any + Send + Sync>>,
}

impl Identity {
    /// An identity for `user_id`, with no session id and no data.
    pub fn new(user_id: impl Into<Arc<str>>) -> Self {
        Self {
            user_id: user_id.into(),
            session_id: None,
            data: None,
        }
    }

    /// Sets the session id the connection will use instead of a random one.
    pub fn with_session_id(mut self, session_id: impl Into<Arc<str>>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Attaches typed data for the handler (roles, tenant, claims...).
    pub fn with_data<T: Any + Send + Sync>(mut self, data: T) -> Self {
        self.data = Some(Arc::new(data));
        self
    }

    /// The authenticated user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The user id as a shared string, cheap to clone.
    pub fn user_id_arc(&self) -> &Arc<str> {
        &self.user_id
    }

    /// The session id chosen by the authenticator, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The data attached with [`Identity::with_data`], if it is a `T`.
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.data.as_deref()?.downcast_ref()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .field("data", &self.data.as_ref().map(|_| ".."))
            .finish()
    }
}
